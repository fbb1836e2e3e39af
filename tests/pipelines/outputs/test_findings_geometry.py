"""Detection regions on real-world geometry: frames of a multi-frame image, tilted slices."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipelines.base import DetectedFinding, DetectionResult, PipelineInput
from pipelines.io import load_input, load_series
from pipelines.outputs.findings import build_detection_report
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.report import ReportHeader
from pipelines.phantom import generate_ct_phantom
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.stacks import enhanced_ct, sphere_series

TILTED = (1.0, 0.0, 0.0, 0.0, 0.9483237, -0.3173047)


def _finding(mask: np.ndarray, slice_index: int) -> DetectedFinding:
    rows = np.flatnonzero(mask[slice_index].any(axis=1))
    columns = np.flatnonzero(mask[slice_index].any(axis=0))
    return DetectedFinding(
        label="Dense",
        finding=codes.SCT.Bone,
        category=codes.SCT.AnatomicalStructure,
        score=0.9,
        slice_index=slice_index,
        box=(int(rows[0]), int(columns[0]), int(rows[-1]), int(columns[-1])),
        diameter_mm=10.0,
        volume_ml=1.0,
    )


def _region(
    data: PipelineInput, finding: DetectedFinding, provenance: ResultProvenance, path: Path
) -> hd.sr.ImageRegion:
    """The finding's region as read back from its saved, dciodvfy-checked report."""
    build_detection_report(
        data,
        DetectionResult(findings=[finding], threshold=0.5),
        ReportHeader(
            series_instance_uid=generate_uid(),
            sop_instance_uid=generate_uid(),
            series_number=902,
            provenance=provenance,
            procedure_reported=codes.cid100.CTUnspecifiedBodyRegion,
        ),
    ).save_as(path)
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)
    (group,) = report.get_planar_roi_measurement_groups()
    return group.roi


def test_region_on_a_multiframe_image_names_its_frame(
    provenance: ResultProvenance, tmp_path: Path
) -> None:
    slices = generate_ct_phantom(slices=12, rows=32, columns=32, pixel_spacing=6.0).datasets
    enhanced_ct(slices).save_as(tmp_path / "enhanced.dcm")
    data = load_input([tmp_path / "enhanced.dcm"])
    region = _region(data, _finding(data.volume.array > 0, 5), provenance, tmp_path / "sr.dcm")
    frame = region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedFrameNumber
    # that frame is the slice's plane
    per_frame = data.datasets[0].PerFrameFunctionalGroupsSequence[int(frame) - 1]
    position = data.volume.affine @ np.array([5, 0, 0, 1.0])
    np.testing.assert_allclose(
        per_frame.PlanePositionSequence[0].ImagePositionPatient, position[:3], atol=1e-4
    )


def test_region_on_a_tilted_stack_lies_on_its_source_slice(
    provenance: ResultProvenance, tmp_path: Path
) -> None:
    positions = np.array([[-48.0, -48.0, -50.0 + 2.5 * k] for k in range(30)])
    data = load_series(sphere_series(positions, TILTED))
    assert data.frames is not None
    finding = _finding(data.volume.array > 0, 15)
    region = _region(data, finding, provenance, tmp_path / "sr.dcm")
    k = int(np.argmin(np.abs(data.frames.grid_index[:, 0] - 15)))
    source = data.frames.datasets[k]
    assert (
        region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == source.SOPInstanceUID
    )
    on_source = data.frames.array[k] > 0
    rows = np.flatnonzero(on_source.any(axis=1))
    columns = np.flatnonzero(on_source.any(axis=0))
    corners = np.asarray(region.GraphicData, float).reshape(-1, 2)
    np.testing.assert_allclose(corners[0], [columns[0], rows[0]], atol=1)
    np.testing.assert_allclose(corners[2], [columns[-1] + 1, rows[-1] + 1], atol=1)
