"""Classification and detection reports: valid TID 1500, read back with highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pipelines.base import (
    ClassFinding,
    ClassificationResult,
    DetectedFinding,
    DetectionResult,
    PipelineInput,
)
from pipelines.io import load_projection
from pipelines.outputs.findings import (
    NO_UNITS,
    build_classification_report,
    build_detection_report,
    source_image,
)
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.report import INPUT_DOMAIN, OUTSIDE_DOMAIN, ReportHeader
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.radiograph import make_radiograph

FINDING = Code("404684003", "SCT", "Clinical finding")
PNEUMOTHORAX = Code("36118008", "SCT", "Pneumothorax")
EFFUSION = Code("60046008", "SCT", "Pleural effusion")
NODULE = Code("27925004", "SCT", "Nodule")
MASS = Code("4147007", "SCT", "Mass")


def _identity(provenance: ResultProvenance, outside_domain: bool = False) -> ReportHeader:
    return ReportHeader(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=9902,
        provenance=provenance,
        procedure_reported=codes.cid100.XRUnspecifiedBodyRegion,
        outside_domain=outside_domain,
    )


def _report(path: Path) -> hd.sr.MeasurementReport:
    return hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)


def _valid(path: Path) -> None:
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []


@pytest.fixture(scope="module")
def radiograph() -> PipelineInput:
    return load_projection([make_radiograph(seed=3)])


def test_classification_report(
    radiograph: PipelineInput, provenance: ResultProvenance, tmp_path: Path
) -> None:
    result = ClassificationResult(
        findings=[
            ClassFinding("Pneumothorax", PNEUMOTHORAX, FINDING, 0.91, True),
            ClassFinding("Pleural effusion", EFFUSION, FINDING, 0.12, False),
        ],
        threshold=0.5,
    )
    sr = build_classification_report(radiograph, result, _identity(provenance, outside_domain=True))
    sr.save_as(tmp_path / "sr.dcm")
    _valid(tmp_path / "sr.dcm")
    groups = _report(tmp_path / "sr.dcm").get_image_measurement_groups()
    assert [group.finding_type for group in groups] == [PNEUMOTHORAX, EFFUSION]
    for group, finding in zip(groups, result.findings, strict=True):
        (probability,) = group.get_measurements()
        assert probability.name == codes.DCM.Probability and probability.unit == NO_UNITS
        assert probability.value == pytest.approx(finding.probability)
        evaluations = [(item.name, item.value) for item in group.get_qualitative_evaluations()]
        expected = codes.SCT.Present if finding.present else codes.SCT.Absent
        assert (finding.finding, expected) in evaluations
        assert (INPUT_DOMAIN, OUTSIDE_DOMAIN) in evaluations
        assert group.tracking_identifier == finding.label


def test_detection_report_on_a_ct_series(
    ct_input: PipelineInput, provenance: ResultProvenance, tmp_path: Path
) -> None:
    findings = [
        DetectedFinding("Nodule", NODULE, FINDING, 0.8, 10, (20, 30, 25, 36), 12.5, 0.6),
        DetectedFinding("Nodule", NODULE, FINDING, 0.6, 3, (5, 5, 6, 6), 5.0, 0.1),
    ]
    kinds = [("Nodule", NODULE, FINDING), ("Mass", MASS, FINDING)]
    result = DetectionResult(findings=findings, threshold=0.5, kinds=kinds)
    sr = build_detection_report(ct_input, result, _identity(provenance))
    sr.save_as(tmp_path / "sr.dcm")
    _valid(tmp_path / "sr.dcm")
    report = _report(tmp_path / "sr.dcm")
    planar = report.get_planar_roi_measurement_groups()
    assert len(planar) == 2
    first = planar[0]
    region = first.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    assert region.value.tolist() == [[30, 20], [37, 20], [37, 26], [30, 26], [30, 20]]
    referenced = source_image(ct_input, 10)
    image = region.ContentSequence[0].ReferencedSOPSequence[0]
    assert image.ReferencedSOPInstanceUID == referenced.SOPInstanceUID
    values = {item.name: item for item in first.get_measurements()}
    assert values[codes.SCT.Diameter].value == pytest.approx(12.5)
    assert values[codes.SCT.Volume].value == pytest.approx(0.6)
    assert values[codes.SCT.Score].value == pytest.approx(0.8)
    (absent,) = report.get_image_measurement_groups()
    assert absent.finding_type == MASS
    evaluations = [(item.name, item.value) for item in absent.get_qualitative_evaluations()]
    assert (MASS, codes.SCT.Absent) in evaluations


def test_source_image_follows_the_volume_geometry(ct_input: PipelineInput) -> None:
    for index in (0, 7, ct_input.volume.spatial_shape[0] - 1):
        expected = ct_input.volume.affine @ [index, 0, 0, 1]
        found = source_image(ct_input, index)
        assert list(found.ImagePositionPatient) == pytest.approx(list(expected[:3]), abs=1e-3)


def test_detection_report_on_a_radiograph_without_findings(
    radiograph: PipelineInput, provenance: ResultProvenance, tmp_path: Path
) -> None:
    result = DetectionResult(findings=[], threshold=0.5, kinds=[("Nodule", NODULE, FINDING)])
    sr = build_detection_report(radiograph, result, _identity(provenance))
    sr.save_as(tmp_path / "sr.dcm")
    _valid(tmp_path / "sr.dcm")
    assert len(_report(tmp_path / "sr.dcm").get_image_measurement_groups()) == 1
