"""Checks of a job's result objects before any of them leaves the node.

What viewers and PACS reject, or what would mislead a reader, is caught here
and fails the job with a reason instead of reaching a PACS half-valid:

* references: every source instance a SEG, SR or KOS references is one of
  the job's inputs (or one of its own results), in the input's study and
  series; a Secondary Capture is in the input's study;
* geometry: a SEG has the source's rows, columns and pixel spacing, and
  every frame lies on a source slice;
* empty segments: a segment without frames in the SEG is one the SR reports
  absent (volume 0 mL), and a segment with frames has a volume;
* plausibility: each volume lies in the range the pipeline declares for its
  label (:attr:`pipelines.base.Pipeline.plausible_volume_ml`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from pydicom import Dataset

from pipelines.base import SegmentMeasurement

#: Largest distance (mm) between a SEG frame's position and its source slice's.
POSITION_TOLERANCE_MM = 0.01


class OutputCheckFailed(ValueError):
    """A result object would mislead or be rejected; the message says which and why (no PHI)."""


def _referenced_instances(dataset: Dataset) -> Iterator[tuple[str, str, str]]:
    """(study, series, SOP instance) of every instance ``dataset`` references."""
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in dataset.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                for item in series.get("ReferencedSOPSequence", []):
                    yield (
                        str(study.StudyInstanceUID),
                        str(series.SeriesInstanceUID),
                        str(item.ReferencedSOPInstanceUID),
                    )
    for series in dataset.get("ReferencedSeriesSequence", []):
        for item in series.get("ReferencedInstanceSequence", []):
            yield (
                str(dataset.StudyInstanceUID),
                str(series.SeriesInstanceUID),
                str(item.ReferencedSOPInstanceUID),
            )


def check_references(sources: Sequence[Dataset], results: Sequence[Dataset]) -> None:
    """Every reference of ``results`` resolves to a source (same study and series) or a result."""
    known = {
        str(ds.SOPInstanceUID): (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
        for ds in [*sources, *results]
    }
    study = str(sources[0].StudyInstanceUID)
    for result in results:
        what = f"{result.Modality} {result.SOPInstanceUID}"
        if str(result.StudyInstanceUID) != study:
            raise OutputCheckFailed(f"{what} is not in the source study")
        for study_uid, series_uid, instance_uid in _referenced_instances(result):
            if instance_uid not in known:
                raise OutputCheckFailed(f"{what} references {instance_uid}, not an input")
            if known[instance_uid] != (study_uid, series_uid):
                raise OutputCheckFailed(f"{what} references {instance_uid} in the wrong series")


def _positions(datasets: Sequence[Dataset]) -> np.ndarray:
    return np.array(
        [ds.ImagePositionPatient for ds in datasets if "ImagePositionPatient" in ds], float
    ).reshape(-1, 3)


def check_segmentation_geometry(sources: Sequence[Dataset], seg: Dataset) -> None:
    """The SEG's frames have the sources' size and spacing and lie on source slices."""
    first = sources[0]
    if (int(seg.Rows), int(seg.Columns)) != (int(first.Rows), int(first.Columns)):
        raise OutputCheckFailed(
            f"SEG frames are {seg.Rows}x{seg.Columns}, the source {first.Rows}x{first.Columns}"
        )
    shared = seg.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    measures = shared.get("PixelMeasuresSequence", [Dataset()])[0]
    spacings = [
        np.asarray(ds.PixelSpacing, float) for ds in (measures, first) if "PixelSpacing" in ds
    ]
    if len(spacings) == 2 and not np.allclose(*spacings):
        raise OutputCheckFailed("SEG pixel spacing differs from the source's")
    source_positions = _positions(sources)
    if len(source_positions) == 0:
        return  # projection images: no patient positions to compare
    for number, frame in enumerate(seg.get("PerFrameFunctionalGroupsSequence", []), 1):
        plane = frame.get("PlanePositionSequence")
        if not plane:
            continue
        position = np.asarray(plane[0].ImagePositionPatient, float)
        distance = np.min(np.linalg.norm(source_positions - position, axis=1))
        if distance > POSITION_TOLERANCE_MM:
            raise OutputCheckFailed(f"SEG frame {number} lies on no source slice")


def _segments_with_frames(seg: Dataset) -> set[int]:
    numbers = set()
    for frame in seg.get("PerFrameFunctionalGroupsSequence", []):
        for item in frame.get("SegmentIdentificationSequence", []):
            numbers.add(int(item.ReferencedSegmentNumber))
    return numbers


def check_segments(
    seg: Dataset,
    measurements: Sequence[SegmentMeasurement],
    plausible_volume_ml: Mapping[str, tuple[float, float]],
) -> None:
    """No empty segment the SR does not report absent; volumes within the declared ranges."""
    labelmap = str(seg.get("SegmentationType", "")) == "LABELMAP"
    framed = _segments_with_frames(seg)
    for measurement in measurements:
        label = measurement.segment.tracking_id
        present = measurement.voxel_count > 0
        if not labelmap and framed and (measurement.segment_number in framed) != present:
            raise OutputCheckFailed(
                f"segment {label!r}: the SEG and the SR disagree on whether it is present"
            )
        if present != (measurement.volume_ml > 0):
            raise OutputCheckFailed(f"segment {label!r}: a volume of 0 mL with voxels")
        low, high = plausible_volume_ml.get(label, (0.0, float("inf")))
        if present and not low <= measurement.volume_ml <= high:
            raise OutputCheckFailed(
                f"segment {label!r}: volume {measurement.volume_ml:.1f} mL outside the "
                f"plausible {low:g}-{high:g} mL"
            )
