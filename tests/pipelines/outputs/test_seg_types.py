"""SEG types and the label-volume path: same objects, bounded memory, LABELMAP round trip."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from pipelines.base import PipelineInput, SegmentationResult, SegmentDefinition
from pipelines.outputs import seg as seg_module
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.seg import build_segmentation


def _disjoint(data: PipelineInput, count: int) -> SegmentationResult:
    """``count`` disjoint blocks (one per band of columns), the last segment empty."""
    shape = data.volume.spatial_shape
    masks = []
    width = shape[2] // count
    for index in range(count):
        mask = np.zeros(shape, dtype=bool)
        if index < count - 1:
            mask[1 : shape[0] - 1, 2 : shape[1] - 2, index * width : (index + 1) * width] = True
        masks.append(mask)
    segments = [
        SegmentDefinition(
            label=f"structure {n}",
            category=codes.SCT.AnatomicalStructure,
            property_type=codes.SCT.Organ,
            tracking_id=f"structure-{n}",
        )
        for n in range(1, count + 1)
    ]
    return SegmentationResult(segments=segments, masks=masks)


def _build(data, result, provenance, **kwargs) -> hd.seg.Segmentation:
    return build_segmentation(
        data,
        result,
        series_instance_uid="1.2.826.0.1.3680043.8.498.1",
        sop_instance_uid="1.2.826.0.1.3680043.8.498.2",
        series_number=901,
        provenance=provenance,
        **kwargs,
    )


def test_label_volume_path_gives_the_same_binary_seg(
    ct_input: PipelineInput, provenance: ResultProvenance, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _disjoint(ct_input, 10)  # > 8 disjoint segments: built from a label volume
    via_labels = _build(ct_input, result, provenance)
    monkeypatch.setattr(seg_module, "_label_map", lambda data, result: None)
    via_channels = _build(ct_input, result, provenance)
    assert via_labels.SegmentationType == via_channels.SegmentationType == "BINARY"
    assert via_labels.NumberOfFrames == via_channels.NumberOfFrames
    assert bytes(via_labels.PixelData) == bytes(via_channels.PixelData)
    assert len(via_labels.SegmentSequence) == 10


def test_labelmap_round_trip(
    ct_input: PipelineInput, provenance: ResultProvenance, tmp_path: Path
) -> None:
    result = _disjoint(ct_input, 4)
    path = tmp_path / "labelmap.dcm"
    _build(ct_input, result, provenance, segmentation_type="labelmap").save_as(path)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "LABELMAP"
    assert list(seg.segment_numbers) == [1, 2, 3, 4]  # (highdicom adds background 0)
    volume = seg.get_volume(combine_segments=True).match_geometry(ct_input.volume)
    expected = np.zeros(ct_input.volume.spatial_shape, dtype=np.uint8)
    for number, mask in enumerate(result.masks, 1):
        expected[mask] = number
    assert np.array_equal(volume.array, expected)


def test_labelmap_refuses_overlapping_segments(
    ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance
) -> None:
    with pytest.raises(ValueError, match="non-overlapping"):
        _build(ct_input, seg_result, provenance, segmentation_type="labelmap")


def test_unknown_segmentation_type_is_refused(
    ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance
) -> None:
    with pytest.raises(ValueError, match="binary or labelmap"):
        _build(ct_input, seg_result, provenance, segmentation_type="fractional")
