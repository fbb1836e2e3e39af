"""DICOM SEG builder: validity, round trip of the masks, identity, determinism."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipelines.base import PipelineInput, SegmentationResult
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.seg import build_segmentation, segment_tracking_uid
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors

needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy not installed")


def _build(
    data: PipelineInput,
    result: SegmentationResult,
    provenance: ResultProvenance,
    sop_instance_uid: str | None = None,
) -> hd.seg.Segmentation:
    return build_segmentation(
        data,
        result,
        series_instance_uid=generate_uid(),
        sop_instance_uid=sop_instance_uid or generate_uid(),
        series_number=901,
        provenance=provenance,
    )


@pytest.fixture(scope="module")
def seg_file(
    ct_input: PipelineInput,
    seg_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    path = tmp_path_factory.mktemp("seg") / "seg.dcm"
    _build(ct_input, seg_result, provenance).save_as(path)
    return path


def _expected(result: SegmentationResult) -> np.ndarray:
    return np.stack([np.asarray(mask, bool) for mask in result.masks], axis=-1)


@needs_dciodvfy
def test_seg_is_valid_for_dciodvfy(seg_file: Path) -> None:
    assert dciodvfy_errors(seg_file) == []


def test_segments_are_described(seg_file: Path, seg_result: SegmentationResult) -> None:
    seg = hd.seg.segread(seg_file)
    assert seg.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert seg.SegmentationType == "BINARY"
    assert seg.number_of_segments == len(seg_result.segments)
    for number, segment in enumerate(seg_result.segments, 1):
        description = seg.get_segment_description(number)
        assert description.segment_label == segment.label
        assert description.segmented_property_category == segment.category
        assert description.segmented_property_type == segment.property_type
        assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
        assert description.tracking_id == segment.tracking_id
        algorithm = description.algorithm_identification[0]
        assert algorithm.AlgorithmName == "ct-lungs"
        assert algorithm.AlgorithmVersion == "1.0.0"


def test_masks_round_trip_through_volume(
    seg_file: Path, ct_input: PipelineInput, seg_result: SegmentationResult
) -> None:
    seg = hd.seg.segread(seg_file)
    volume = seg.get_volume(combine_segments=False).match_geometry(ct_input.volume)
    assert volume.spatial_shape == ct_input.volume.spatial_shape
    np.testing.assert_array_equal(volume.array.astype(bool), _expected(seg_result))


def test_masks_round_trip_through_source_instances(
    seg_file: Path, ct_input: PipelineInput, seg_result: SegmentationResult
) -> None:
    """The per-frame source references point at the right CT slice."""
    seg = hd.seg.segread(seg_file)
    by_slice = {}
    for ds in ct_input.datasets:
        index = ct_input.volume.map_reference_to_indices(np.array([ds.ImagePositionPatient]))
        by_slice[int(index[0, 0])] = ds.SOPInstanceUID
    uids = [by_slice[i] for i in range(ct_input.volume.spatial_shape[0])]
    pixels = seg.get_pixels_by_source_instance(uids, assert_missing_frames_are_empty=True)
    np.testing.assert_array_equal(pixels.astype(bool), _expected(seg_result))


def test_identity_and_references(seg_file: Path, ct_input: PipelineInput) -> None:
    seg = hd.seg.segread(seg_file)
    source = ct_input.datasets[0]
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.PatientID == source.PatientID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.Modality == "SEG"
    assert seg.SeriesNumber == 901
    (series_ref,) = seg.ReferencedSeriesSequence
    assert series_ref.SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for item in series_ref.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in ct_input.datasets}


def test_equipment_from_provenance(seg_file: Path, provenance: ResultProvenance) -> None:
    seg = hd.seg.segread(seg_file)
    assert seg.Manufacturer == "pacs-ai-node"
    assert seg.ManufacturerModelName == "ct-lungs"
    assert list(seg.SoftwareVersions) == ["pacs-ai-node 0.1.0", "ct-lungs 1.0.0"]
    assert seg.DeviceSerialNumber == provenance.device_serial_number
    assert seg.SeriesDescription == "AI SEG ct-lungs 1.0.0"


def test_tracking_uids_are_deterministic(
    ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance
) -> None:
    sop_uid = generate_uid()
    first = _build(ct_input, seg_result, provenance, sop_uid)
    second = _build(ct_input, seg_result, provenance, sop_uid)
    other = _build(ct_input, seg_result, provenance)

    def uids(seg: hd.seg.Segmentation) -> list[str]:
        return [item.TrackingUID for item in seg.SegmentSequence]

    assert uids(first) == uids(second)
    assert len(set(uids(first))) == len(seg_result.segments)
    assert set(uids(first)).isdisjoint(uids(other))
    assert uids(first)[0] == segment_tracking_uid(sop_uid, seg_result.segments[0].tracking_id)


def test_empty_segment_is_kept_without_frames(
    ct_input: PipelineInput,
    empty_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path: Path,
) -> None:
    path = tmp_path / "seg.dcm"
    _build(ct_input, empty_result, provenance).save_as(path)
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.number_of_segments == 2
    frame_segments = {
        item.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    assert frame_segments == {1}
    volume = seg.get_volume(combine_segments=False).match_geometry(ct_input.volume)
    np.testing.assert_array_equal(volume.array.astype(bool), _expected(empty_result))


def test_mask_shape_mismatch_is_rejected(
    ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance
) -> None:
    bad = SegmentationResult(segments=seg_result.segments[:1], masks=[np.zeros((2, 2, 2), bool)])
    with pytest.raises(ValueError, match="shape"):
        _build(ct_input, bad, provenance)


@pytest.mark.parametrize(
    "orientation",
    [
        (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
        (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    ],
    ids=["axial-flipped", "coronal", "sagittal"],
)
def test_masks_round_trip_in_any_orientation(
    orientation: tuple[float, ...],
    make_case: Callable[..., tuple[PipelineInput, SegmentationResult]],
    provenance: ResultProvenance,
    tmp_path: Path,
) -> None:
    data, result = make_case(image_orientation=orientation, slices=16)
    path = tmp_path / "seg.dcm"
    _build(data, result, provenance).save_as(path)
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []
    volume = hd.seg.segread(path).get_volume().match_geometry(data.volume)
    np.testing.assert_array_equal(volume.array.astype(bool), _expected(result))
