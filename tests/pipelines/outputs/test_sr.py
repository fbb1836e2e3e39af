"""TID 1500 SR builder: validity and the measurement groups read back."""

from __future__ import annotations

import math
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes

from pipelines.base import PipelineInput, SegmentationResult, SegmentMeasurement
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.sr import MILLILITER
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.sr import HU, new_measurement_report, new_segmentation, write_pair


@pytest.fixture(scope="module")
def pair(
    ct_input: PipelineInput,
    seg_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, list[SegmentMeasurement]]:
    return write_pair(ct_input, seg_result, provenance, tmp_path_factory.mktemp("sr"))


def _groups(sr_path: Path) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    sr = hd.sr.srread(sr_path)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    return report.get_volumetric_roi_measurement_groups()


def _by_name(group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations) -> dict:
    return {m.name: m for m in group.get_measurements()}


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy not installed")
def test_sr_is_valid_for_dciodvfy(pair: tuple[Path, Path, list]) -> None:
    assert dciodvfy_errors(pair[1]) == []


def test_groups_reference_seg_and_carry_measurements(pair: tuple[Path, Path, list]) -> None:
    seg_path, sr_path, measurements = pair
    seg = hd.seg.segread(seg_path)
    groups = _groups(sr_path)
    assert len(groups) == len(measurements)
    for group, measurement in zip(groups, measurements, strict=True):
        reference = group.referenced_segment
        assert reference[0].referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference[0].referenced_segment_numbers == [measurement.segment_number]
        description = seg.get_segment_description(measurement.segment_number)
        assert group.tracking_uid == description.tracking_uid
        assert group.finding_type == measurement.segment.property_type
        assert group.finding_category == measurement.segment.category
        values = _by_name(group)
        volume = values[codes.SCT.Volume]
        assert volume.unit == MILLILITER
        assert volume.value == pytest.approx(measurement.volume_ml)
        mean = values[codes.DCM.AttenuationCoefficient]
        assert mean.derivation == codes.SCT.Mean
        assert mean.unit == HU
        assert mean.value == pytest.approx(measurement.mean_intensity)


def test_report_identity_and_evidence(
    pair: tuple[Path, Path, list], ct_input: PipelineInput
) -> None:
    seg_path, sr_path, _ = pair
    sr = hd.sr.srread(sr_path)
    seg = hd.seg.segread(seg_path)
    source = ct_input.datasets[0]
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == source.PatientID
    assert sr.SeriesInstanceUID not in {source.SeriesInstanceUID, seg.SeriesInstanceUID}
    assert sr.SeriesDescription == "AI SR ct-lungs 1.0.0"
    assert sr.ManufacturerModelName == "ct-lungs"
    assert list(sr.SoftwareVersions) == ["pacs-ai-node 0.1.0", "ct-lungs 1.0.0"]
    evidence = {(series, instance) for _, series, instance, _ in sr.get_evidence()}
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) in evidence
    assert {(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in ct_input.datasets} <= evidence


def test_empty_segment_has_volume_but_no_mean(
    ct_input: PipelineInput,
    empty_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path: Path,
) -> None:
    _, sr_path, measurements = write_pair(ct_input, empty_result, provenance, tmp_path)
    assert math.isnan(measurements[1].mean_intensity)
    if dciodvfy_available():
        assert dciodvfy_errors(sr_path) == []
    full, empty = _groups(sr_path)
    assert set(_by_name(full)) == {codes.SCT.Volume, codes.DCM.AttenuationCoefficient}
    assert set(_by_name(empty)) == {codes.SCT.Volume}
    assert _by_name(empty)[codes.SCT.Volume].value == 0
    assert empty.referenced_segment[0].referenced_segment_numbers == [2]


def test_measurement_of_unknown_segment_is_rejected(
    ct_input: PipelineInput,
    seg_result: SegmentationResult,
    provenance: ResultProvenance,
) -> None:
    seg = new_segmentation(ct_input, seg_result, provenance)
    wrong = [
        SegmentMeasurement(
            segment=seg_result.segments[0],
            segment_number=2,
            volume_ml=1.0,
            mean_intensity=0.0,
            voxel_count=1,
        )
    ]
    with pytest.raises(ValueError, match="not in the SEG"):
        new_measurement_report(ct_input, wrong, seg, provenance)
