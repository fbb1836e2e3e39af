"""Reading back what a TID 1500 SR of the node points at."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
from pydicom import Dataset

__all__ = ["measured_values", "referenced_segmentations"]


def referenced_segmentations(path: str | Path) -> set[tuple[str, str]]:
    """(SOP Class UID, SOP Instance UID) of every SEG the SR's volumetric groups refer to.

    Parameters
    ----------
    path:
        A TID 1500 Measurement Report with TID 1411 groups (a segmentation's SR).
    """
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)
    references = [g.referenced_segment for g in report.get_volumetric_roi_measurement_groups()]
    return {(r.referenced_sop_class_uid, r.referenced_sop_instance_uid) for r in references}


def measured_values(report: Dataset) -> list[tuple[str, float]]:
    """(concept name, value) of every NUM item of an SR, in document order."""
    values: list[tuple[str, float]] = []

    def walk(item: Dataset) -> None:
        for child in item.get("ContentSequence", []):
            if child.ValueType == "NUM" and child.get("MeasuredValueSequence"):
                name = str(child.ConceptNameCodeSequence[0].CodeMeaning)
                values.append((name, float(child.MeasuredValueSequence[0].NumericValue)))
            walk(child)

    walk(report)
    return values
