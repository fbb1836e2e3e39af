"""TID 1500 Measurement Report (Comprehensive 3D SR) for a segmentation.

One TID 1411 volumetric measurement group per segment, each pointing at its
segment in the SEG built by :func:`pipelines.outputs.seg.build_segmentation`
and carrying the segment's volume and mean intensity.

Coding of the measurements
--------------------------
* Volume: ``(118565006, SCT, "Volume")`` in ``(ml, UCUM, "milliliter")``.
* Mean intensity: the quantity (CT: ``(112031, DCM, "Attenuation
  Coefficient")``) with derivation ``(373098007, SCT, "Mean")``, the form
  dcmqi and OHIF read.  For a unit other than HU without an explicit
  ``intensity_quantity`` the concept name is ``(373098007, SCT, "Mean")``
  itself.  An empty segment has no mean (a NUM item cannot hold NaN), so
  its group carries the volume (0 mL) only.
* Second opinion (where a second model ran): the Dice agreement
  ``(AGREEMENT-DICE, 99PACSAI)`` in ``(1, UCUM, "no units")``, the second
  model's volume (method: the model), and the qualitative evaluation
  *Review status* = *Requires review* / *Models agree*, which a worklist can
  sort on (private scheme: DICOM has no code for them).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipelines.base import PipelineInput, SegmentMeasurement
from pipelines.outputs.report import (
    ReportHeader,
    algorithm_id,
    domain_evaluations,
    measurement_report_document,
)
from pipelines.outputs.seg import segment_tracking_uid

__all__ = [
    "AGREEMENT",
    "MILLILITER",
    "MODELS_AGREE",
    "NO_UNITS",
    "REQUIRES_REVIEW",
    "REVIEW_STATUS",
    "build_measurement_report",
]

MILLILITER = Code("ml", "UCUM", "milliliter")
#: Agreement (Dice) of the segment with a second model's mask.
AGREEMENT = Code("AGREEMENT-DICE", "99PACSAI", "Dice agreement with second model")
#: Review status and its two values.
REVIEW_STATUS = Code("REVIEW-STATUS", "99PACSAI", "Review status")
REQUIRES_REVIEW = Code("REQUIRES-REVIEW", "99PACSAI", "Requires review")
MODELS_AGREE = Code("MODELS-AGREE", "99PACSAI", "Models agree")
NO_UNITS = Code("1", "UCUM", "no units")
_HOUNSFIELD = "[hnsf'U]"


def _referenced_segment(segmentation: Dataset, segment_number: int) -> hd.sr.ReferencedSegment:
    """Reference to one segment of the SEG plus the series it was derived from.

    The source *series* is referenced rather than every source image (what
    ``ReferencedSegment.from_segmentation`` lists): the SEG already maps each
    frame to its CT slice, a group stays small for 500-slice series, and an
    empty segment (no frames, so no per-frame references) is handled alike.
    """
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID,
        sop_instance_uid=segmentation.SOPInstanceUID,
        segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(
            segmentation.ReferencedSeriesSequence[0].SeriesInstanceUID
        ),
    )


def _intensity_measurement(
    measurement: SegmentMeasurement, unit: Code, quantity: Code | None
) -> hd.sr.Measurement:
    if quantity is None and unit.value == _HOUNSFIELD:
        quantity = codes.DCM.AttenuationCoefficient
    if quantity is None:
        return hd.sr.Measurement(name=codes.SCT.Mean, value=measurement.mean_intensity, unit=unit)
    return hd.sr.Measurement(
        name=quantity, value=measurement.mean_intensity, unit=unit, derivation=codes.SCT.Mean
    )


def _second_opinion(
    measurement: SegmentMeasurement,
) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """The agreement, the second model's volume and the review status of one segment."""
    opinion = measurement.second_opinion
    if opinion is None:
        return [], []
    model = Code(re.sub(r"[^A-Z0-9]+", "-", opinion.model.upper())[:16], "99PACSAI", opinion.model)
    values = [
        hd.sr.Measurement(name=AGREEMENT, value=opinion.dice, unit=NO_UNITS),
        hd.sr.Measurement(
            name=codes.SCT.Volume, value=opinion.volume_ml, unit=MILLILITER, method=model
        ),
    ]
    status = REQUIRES_REVIEW if opinion.requires_review else MODELS_AGREE
    return values, [hd.sr.QualitativeEvaluation(name=REVIEW_STATUS, value=status)]


def build_measurement_report(
    data: PipelineInput,
    measurements: Sequence[SegmentMeasurement],
    segmentation: hd.seg.Segmentation,
    header: ReportHeader,
    *,
    intensity_unit: Code,
    intensity_quantity: Code | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build a TID 1500 Measurement Report of the segments of ``segmentation``.

    Each measurement becomes a TID 1411 group: the referenced segment
    (SEG SOP instance + segment number, with its source images), tracking
    identifier and tracking UID (the UID stored in the SEG for that
    segment, so SEG and SR share it), finding type/category (the segment's
    property type/category), the pipeline's algorithm identification, the
    volume in mL and the mean intensity.  The observer is the node as a
    device; evidence lists the source series and the SEG.

    Parameters
    ----------
    data:
        The pipeline input; its datasets are recorded as evidence and give
        patient and study.
    measurements:
        One per segment, e.g. from :func:`pipelines.base.measure_segments`;
        ``segment_number`` must name a segment of ``segmentation`` with the
        same tracking id.
    segmentation:
        The SEG the groups refer to (as built, or read back).
    header:
        Identity of the new SR, provenance, procedure reported and whether
        the input was outside the validated domain (every group then
        carries that qualitative evaluation).
    intensity_unit:
        UCUM unit of the mean intensity (HU for CT).
    intensity_quantity:
        Concept name of the mean intensity measurement; by default chosen
        from the unit (see module docstring).

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The report, COMPLETE, PRELIMINARY and UNVERIFIED (no human review).

    Raises
    ------
    ValueError
        If there are no measurements or one does not match a SEG segment.
    """
    if not measurements:
        raise ValueError("a measurement report needs at least one measurement")
    described = {int(item.SegmentNumber): item for item in segmentation.SegmentSequence}
    algorithm = algorithm_id(header.provenance)
    groups = []
    for measurement in measurements:
        item = described.get(measurement.segment_number)
        tracking_id = measurement.segment.tracking_id
        if item is None or item.get("TrackingID", tracking_id) != tracking_id:
            raise ValueError(
                f"segment {measurement.segment_number} ({tracking_id!r}) is not in the SEG"
            )
        tracking_uid = item.get("TrackingUID") or segment_tracking_uid(
            segmentation.SOPInstanceUID, tracking_id
        )
        values = [
            hd.sr.Measurement(name=codes.SCT.Volume, value=measurement.volume_ml, unit=MILLILITER)
        ]
        if measurement.voxel_count > 0:
            values.append(_intensity_measurement(measurement, intensity_unit, intensity_quantity))
        opinion_values, evaluations = _second_opinion(measurement)
        values += opinion_values
        evaluations += domain_evaluations(header.outside_domain)
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=tracking_uid, identifier=tracking_id
                ),
                referenced_segment=_referenced_segment(segmentation, measurement.segment_number),
                finding_type=measurement.segment.property_type,
                finding_category=measurement.segment.category,
                algorithm_id=algorithm,
                measurements=values,
                qualitative_evaluations=evaluations or None,
            )
        )
    return measurement_report_document(groups, [*data.datasets, segmentation], header)
