"""Writing a SEG and its TID 1500 SR for tests, and reading back what the SR points at."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pipelines.base import PipelineInput, SegmentationResult, SegmentMeasurement, measure_segments
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.report import ReportHeader
from pipelines.outputs.seg import build_segmentation
from pipelines.outputs.sources import result_sources
from pipelines.outputs.sr import build_measurement_report

__all__ = [
    "HU",
    "assert_frames_on_source_slices",
    "measured_values",
    "new_measurement_report",
    "new_segmentation",
    "referenced_segmentations",
    "write_pair",
]

HU = Code("[hnsf'U]", "UCUM", "Hounsfield unit")


def _new_object(series_number: int, provenance: ResultProvenance) -> dict[str, Any]:
    """A result object's fresh series and instance UIDs, its series number and provenance."""
    return {
        "series_instance_uid": generate_uid(),
        "sop_instance_uid": generate_uid(),
        "series_number": series_number,
        "provenance": provenance,
    }


def new_segmentation(
    data: PipelineInput,
    result: SegmentationResult,
    provenance: ResultProvenance,
    *,
    series_number: int = 901,
) -> hd.seg.Segmentation:
    """The SEG of ``result`` built as the worker does (sources repaired first), with fresh UIDs."""
    data = replace(data, datasets=result_sources(data.datasets).datasets)
    return build_segmentation(data, result, **_new_object(series_number, provenance))


def new_measurement_report(
    data: PipelineInput,
    measurements: Sequence[SegmentMeasurement],
    seg: hd.seg.Segmentation,
    provenance: ResultProvenance,
    *,
    series_number: int = 902,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 SR of ``measurements`` on ``seg`` (intensities in HU), with fresh UIDs."""
    data = replace(data, datasets=result_sources(data.datasets).datasets)
    header = ReportHeader(**_new_object(series_number, provenance))
    return build_measurement_report(data, measurements, seg, header, intensity_unit=HU)


def write_pair(
    data: PipelineInput,
    result: SegmentationResult,
    provenance: ResultProvenance,
    directory: Path,
) -> tuple[Path, Path, list[SegmentMeasurement]]:
    """Build the SEG and SR of ``result`` as the worker does, save both in ``directory``.

    Returns
    -------
    tuple
        ``seg.dcm``, ``sr.dcm`` and the measurements the SR reports.
    """
    seg = new_segmentation(data, result, provenance)
    measurements = measure_segments(data, result)
    sr = new_measurement_report(data, measurements, seg, provenance)
    seg.save_as(directory / "seg.dcm")
    sr.save_as(directory / "sr.dcm")
    return directory / "seg.dcm", directory / "sr.dcm", measurements


def assert_frames_on_source_slices(
    seg: hd.seg.Segmentation, sources: Sequence[Dataset]
) -> list[str]:
    """Assert that each SEG frame lies where the source slice it derives from lies.

    Returns the sources' SOP Instance UIDs, in their order (to read the SEG's
    pixels slice by slice with ``get_pixels_by_source_instance``).
    """
    positions = {ds.SOPInstanceUID: ds.ImagePositionPatient for ds in sources}
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(
            item.PlanePositionSequence[0].ImagePositionPatient, positions[uid]
        )
    return list(positions)


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
