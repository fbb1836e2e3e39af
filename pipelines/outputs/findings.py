"""TID 1500 reports of classification and detection results (no SEG).

Classification
--------------
One TID 1501 measurement group per class: finding type = the class's coded
finding, a qualitative evaluation naming that finding with the decision at
the pipeline's threshold (SCT Present / Absent), and the probability as a
numeric measurement ``(DCM Probability)`` in UCUM ``1`` (no units).  A
single source image is referenced from every group.  For a series of
projection images (a PA and a lateral) there is one group per class *and
image*, referencing that image, its tracking identifier naming the image.

Detection
---------
One TID 1410 planar ROI group per finding: its location is a closed
rectangle (SCOORD POLYLINE, image pixel coordinates) on the source image
through the finding's centre, which the region references (the frame of
a multi-frame image; for a tilted or variably spaced stack, the nearest
source slice, the box moved onto its pixels); its size
(SCT Diameter, mm; SCT Volume, mL for volumes) and its score
(SCT Score, no units).  A finding kind with no detection gets a TID 1501
group whose qualitative evaluation says it is absent, so "nothing found"
is stated rather than implied.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from core.uids import derived_uid
from pipelines.base import (
    ClassFinding,
    ClassificationResult,
    DetectedFinding,
    DetectionResult,
    PipelineInput,
)
from pipelines.outputs.report import (
    ReportHeader,
    algorithm_id,
    domain_evaluations,
    measurement_report_document,
)
from pipelines.outputs.sr import MILLILITER, NO_UNITS
from pipelines.stack import SourceFrames

__all__ = ["NO_UNITS", "build_classification_report", "build_detection_report", "source_image"]

MILLIMETER = Code("mm", "UCUM", "millimeter")


def _tracking(sop_instance_uid: str, identifier: str) -> hd.sr.TrackingIdentifier:
    """Tracking identifier with a UID derived from the report and the identifier."""
    return hd.sr.TrackingIdentifier(
        uid=derived_uid(sop_instance_uid, "tracking", identifier), identifier=identifier[:64]
    )


def _image_name(image: Dataset, data: PipelineInput) -> str:
    """How a tracking identifier names one image of a projection series."""
    number = image.get("InstanceNumber")
    if number in (None, ""):
        number = [ds.SOPInstanceUID for ds in data.datasets].index(image.SOPInstanceUID) + 1
    view = str(image.get("ViewPosition") or "").strip()
    return f"image {number}" + (f" {view}" if view else "")


def source_image(data: PipelineInput, slice_index: int) -> Dataset:
    """The source instance of slice ``slice_index`` of the input volume.

    A projection image is its only dataset; for a resampled (tilted or
    variably spaced) stack, the source frame nearest to that grid slice; for
    a series, the instance whose ImagePositionPatient is the position of that
    slice's first voxel.
    """
    if len(data.datasets) == 1:
        return data.datasets[0]
    if data.frames is not None:
        return data.frames.datasets[_nearest_frame(data.frames, slice_index)]
    position = np.asarray(data.volume.affine, float) @ np.array([slice_index, 0.0, 0.0, 1.0])
    distances = [
        np.linalg.norm(np.asarray(ds.ImagePositionPatient, float) - position[:3])
        for ds in data.datasets
    ]
    return data.datasets[int(np.argmin(distances))]


def _decision(finding: Code, present: bool) -> hd.sr.QualitativeEvaluation:
    """The qualitative evaluation *finding = Present / Absent*."""
    return hd.sr.QualitativeEvaluation(
        name=finding, value=codes.SCT.Present if present else codes.SCT.Absent
    )


def build_classification_report(
    data: PipelineInput,
    result: ClassificationResult,
    header: ReportHeader,
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 report with one qualitative finding and probability per class.

    Parameters
    ----------
    data:
        The classified input (evidence; its single image is referenced).
    result:
        Probabilities and decisions.
    header:
        Identity of the new SR, provenance (its algorithm parameters include
        the threshold), procedure reported, and whether to add the "outside
        validated input domain" evaluation to every group.

    Raises
    ------
    ValueError
        If the result has no classes.
    """
    if not result.findings:
        raise ValueError("a classification report needs at least one class")
    algorithm = algorithm_id(header.provenance)
    groups = [
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(
                header.sop_instance_uid,
                finding.label
                if finding.image is None
                else f"{finding.label} {_image_name(finding.image, data)}",
            ),
            finding_type=finding.finding,
            finding_category=finding.category,
            algorithm_id=algorithm,
            source_images=_classified_images(data, finding),
            measurements=[
                hd.sr.Measurement(
                    name=codes.DCM.Probability, value=finding.probability, unit=NO_UNITS
                )
            ],
            qualitative_evaluations=[
                _decision(finding.finding, finding.present),
                *domain_evaluations(header.outside_domain),
            ],
        )
        for finding in result.findings
    ]
    return measurement_report_document(groups, data.datasets, header)


def _classified_images(
    data: PipelineInput, finding: ClassFinding
) -> list[hd.sr.SourceImageForMeasurementGroup] | None:
    """The image a class decision is about: its own, or the input's only one."""
    image = finding.image or (data.datasets[0] if len(data.datasets) == 1 else None)
    if image is None:
        return None
    return [hd.sr.SourceImageForMeasurementGroup.from_source_image(image)]


def _nearest_frame(frames: SourceFrames, slice_index: int) -> int:
    """Index of the source frame nearest to grid slice ``slice_index`` of a resampled stack."""
    return int(np.argmin(np.abs(frames.grid_index[:, 0] - slice_index)))


def _frame_number(data: PipelineInput, image: Dataset, slice_index: int) -> int | None:
    """The 1-based frame of a multi-frame ``image`` that holds volume slice ``slice_index``.

    The frame whose Plane Position (Patient) is nearest to the slice's first
    voxel; None for a single-frame image (the region references all of it).
    """
    frames = image.get("PerFrameFunctionalGroupsSequence")
    if not frames or int(image.get("NumberOfFrames", 1) or 1) <= 1:
        return None
    position = np.asarray(data.volume.affine, float) @ np.array([slice_index, 0.0, 0.0, 1.0])
    positions = np.array(
        [item.PlanePositionSequence[0].ImagePositionPatient for item in frames], float
    )
    return int(np.argmin(np.linalg.norm(positions - position[:3], axis=1))) + 1


def _located(
    data: PipelineInput, finding: DetectedFinding
) -> tuple[Dataset, tuple[int, ...], int | None]:
    """The finding's source image, its box in that image's pixels and its frame (multi-frame)."""
    if finding.image is not None:
        return finding.image, finding.box, None
    image = source_image(data, finding.slice_index)
    if data.frames is None:
        return image, finding.box, _frame_number(data, image, finding.slice_index)
    _, row_offset, column_offset = data.frames.grid_index[
        _nearest_frame(data.frames, finding.slice_index)
    ]
    dr, dc = round(float(row_offset)), round(float(column_offset))
    row_min, column_min, row_max, column_max = finding.box
    return image, (row_min - dr, column_min - dc, row_max - dr, column_max - dc), None


def _box_region(box: tuple[int, ...], image: Dataset, frame: int | None) -> hd.sr.ImageRegion:
    """Closed rectangle around the finding's pixels; SCOORD (column, row), pixel edges."""
    row_min, column_min, row_max, column_max = box
    corners = np.array(
        [
            [column_min, row_min],
            [column_max + 1, row_min],
            [column_max + 1, row_max + 1],
            [column_min, row_max + 1],
            [column_min, row_min],
        ],
        dtype=float,
    )
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=corners,
        source_image=hd.sr.SourceImageForRegion.from_source_image(
            image, referenced_frame_numbers=None if frame is None else [frame]
        ),
    )


def _finding_group(
    finding: DetectedFinding,
    number: int,
    data: PipelineInput,
    header: ReportHeader,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 group of one finding: region on its source image, size, score."""
    image, box, frame = _located(data, finding)
    measurements = [
        hd.sr.Measurement(name=codes.SCT.Diameter, value=finding.diameter_mm, unit=MILLIMETER)
    ]
    if finding.volume_ml is not None:
        measurements.append(
            hd.sr.Measurement(name=codes.SCT.Volume, value=finding.volume_ml, unit=MILLILITER)
        )
    measurements.append(hd.sr.Measurement(name=codes.SCT.Score, value=finding.score, unit=NO_UNITS))
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(header.sop_instance_uid, f"{finding.label} {number}"),
        referenced_region=_box_region(box, image, frame),
        finding_type=finding.finding,
        finding_category=finding.category,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=domain_evaluations(header.outside_domain) or None,
    )


def build_detection_report(
    data: PipelineInput,
    result: DetectionResult,
    header: ReportHeader,
) -> hd.sr.Comprehensive3DSR:
    """TID 1500 report with one planar ROI group per detected finding.

    Parameters
    ----------
    data:
        The analysed input; findings reference its images.
    result:
        The detections, best first; kinds without a detection are reported
        absent.
    header:
        As for :func:`build_classification_report`.
    """
    algorithm = algorithm_id(header.provenance)
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = [
        _finding_group(finding, number, data, header, algorithm)
        for number, finding in enumerate(result.findings, 1)
    ]
    found = {finding.label for finding in result.findings}
    for label, finding_code, category in result.kinds:
        if label in found:
            continue
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(header.sop_instance_uid, f"{label} absent"),
                finding_type=finding_code,
                finding_category=category,
                algorithm_id=algorithm,
                qualitative_evaluations=[
                    _decision(finding_code, False),
                    *domain_evaluations(header.outside_domain),
                ],
            )
        )
    return measurement_report_document(groups, data.datasets, header)
