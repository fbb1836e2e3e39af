"""SEG and SR from real-world geometry: near-equal orientations, tilted stacks, multi-frame."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipelines.base import PipelineInput, SegmentationResult, SegmentDefinition
from pipelines.io import load_input, load_series
from pipelines.outputs.provenance import ResultProvenance
from pipelines.phantom import generate_ct_phantom
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.real_data import real_images
from tests.support.sr import write_pair
from tests.support.stacks import enhanced_ct, jitter_orientation, sphere_series

SEGMENT = SegmentDefinition(
    label="Dense",
    category=codes.SCT.AnatomicalStructure,
    property_type=codes.SCT.Bone,
    tracking_id="dense",
)
TILTED = (1.0, 0.0, 0.0, 0.0, 0.9483237, -0.3173047)  # the real tilted head CT's orientation


def _write(
    data: PipelineInput, mask: np.ndarray, provenance: ResultProvenance, folder: Path
) -> tuple[Path, Path]:
    """SEG and SR of one mask, saved; dciodvfy-checked where installed."""
    result = SegmentationResult(segments=[SEGMENT], masks=[mask])
    seg_path, sr_path, _ = write_pair(data, result, provenance, folder)
    if dciodvfy_available():
        assert dciodvfy_errors(seg_path) == []
        assert dciodvfy_errors(sr_path) == []
    return seg_path, sr_path


def test_near_equal_orientations_reach_the_seg_and_sr(
    provenance: ResultProvenance, tmp_path: Path
) -> None:
    """The GE 3D T1 case: what the loader accepts, the writers accept, frames map back exactly."""
    datasets = jitter_orientation(
        generate_ct_phantom(slices=40, rows=48, columns=48, pixel_spacing=5.0).datasets
    )
    with pytest.raises(ValueError, match="shared orientation"):  # what highdicom does with them
        hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=np.ones((40, 48, 48), bool),
            segmentation_type="BINARY",
            segment_descriptions=[
                hd.seg.SegmentDescription(
                    segment_number=1,
                    segment_label="x",
                    segmented_property_category=codes.SCT.AnatomicalStructure,
                    segmented_property_type=codes.SCT.Bone,
                    algorithm_type="MANUAL",
                )
            ],
            series_instance_uid=generate_uid(),
            series_number=1,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="x",
            manufacturer_model_name="x",
            software_versions="x",
            device_serial_number="x",
        )
    data = load_series(datasets)
    mask = data.volume.array > -200
    seg_path, _ = _write(data, mask, provenance, tmp_path)
    seg = hd.seg.segread(seg_path)
    by_slice = {
        int(data.volume.map_reference_to_indices(np.array([ds.ImagePositionPatient]))[0, 0]): (
            ds.SOPInstanceUID
        )
        for ds in data.datasets
    }
    uids = [by_slice[k] for k in range(40)]
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), mask)


def test_tilted_seg_frames_lie_on_their_source_images(
    provenance: ResultProvenance, tmp_path: Path
) -> None:
    positions = np.array([[-48.0, -48.0, -50.0 + 2.5 * k] for k in range(30)])
    data = load_series(sphere_series(positions, TILTED))
    assert data.frames is not None
    seg_path, _ = _write(data, data.volume.array > 0, provenance, tmp_path)
    seg = hd.seg.segread(seg_path)
    sources = {ds.SOPInstanceUID: ds for ds in data.frames.datasets}
    for item in seg.PerFrameFunctionalGroupsSequence:
        uid = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = item.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, sources[uid].ImagePositionPatient)
    np.testing.assert_allclose(
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
        data.frames.datasets[0].ImageOrientationPatient,
    )
    uids = [ds.SOPInstanceUID for ds in data.frames.datasets]
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    expected = data.frames.from_grid(data.volume.array > 0)
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), expected)


def test_real_tilted_head_ct_seg_maps_back_exactly(
    provenance: ResultProvenance, tmp_path: Path
) -> None:
    data = load_input(real_images("ct-head-phantom-gantry-tilt"))
    assert data.frames is not None
    bone = data.volume.array > 300
    seg_path, _ = _write(data, bone, provenance, tmp_path)
    uids = [ds.SOPInstanceUID for ds in data.frames.datasets]
    pixels = hd.seg.segread(seg_path).get_pixels_by_source_instance(
        uids, assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), data.frames.from_grid(bone))


def test_enhanced_multiframe_ct_seg_references_its_frames(
    provenance: ResultProvenance, tmp_path: Path
) -> None:
    slices = generate_ct_phantom(slices=12, rows=32, columns=32, pixel_spacing=6.0).datasets
    path = tmp_path / "enhanced.dcm"
    enhanced_ct(slices).save_as(path)
    data = load_input([path])
    mask = data.volume.array > -200
    seg_path, _ = _write(data, mask, provenance, tmp_path)
    seg = hd.seg.segread(seg_path)
    (source,) = data.datasets
    frames = [
        item.DerivationImageSequence[0].SourceImageSequence[0]
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    assert {ref.ReferencedSOPInstanceUID for ref in frames} == {source.SOPInstanceUID}
    numbers = sorted(int(ref.ReferencedFrameNumber) for ref in frames)
    assert len(numbers) == len(set(numbers)) and set(numbers) <= set(range(1, 13))
    volume = seg.get_volume(combine_segments=False).match_geometry(data.volume)
    np.testing.assert_array_equal(volume.array[..., 0].astype(bool), mask)
