"""SEG types and the label-volume path: same objects, bounded memory, LABELMAP round trip.

Debian's dciodvfy (dicom3tools 2022) predates Label Map Segmentation Storage
(DICOM 2024, Supplement 243): it reports "Information Object Not found" for
the SOP class and flags the segment references of an SR pointing at one.  A
LABELMAP SEG is therefore validated as a copy declared Segmentation Storage
(the same IOD), less the differences Supplement 243 allows, and by reading it
back with highdicom (:func:`tests.support.dciodvfy.labelmap_dciodvfy_errors`).
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom.sr.codedict import codes

from pipelines.base import PipelineInput, SegmentationResult, SegmentDefinition, measure_segments
from pipelines.outputs import ReportHeader, build_measurement_report
from pipelines.outputs import seg as seg_module
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.seg import OverlappingSegmentsError, build_segmentation
from tests.support.dciodvfy import dciodvfy_available, labelmap_dciodvfy_errors
from tests.support.sr import referenced_segmentations

LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"


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
    with pytest.raises(OverlappingSegmentsError, match="non-overlapping"):
        _build(ct_input, seg_result, provenance, segmentation_type="labelmap")


def test_unknown_segmentation_type_is_refused(
    ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance
) -> None:
    with pytest.raises(ValueError, match="binary or labelmap"):
        _build(ct_input, seg_result, provenance, segmentation_type="fractional")


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy not installed")
def test_labelmap_seg_and_its_sr_are_valid_as_far_as_dciodvfy_knows(
    ct_input: PipelineInput, provenance: ResultProvenance, tmp_path: Path
) -> None:
    result = _disjoint(ct_input, 4)
    seg = _build(ct_input, result, provenance, segmentation_type="labelmap")
    sr = build_measurement_report(
        ct_input,
        measure_segments(ct_input, result),
        seg,
        ReportHeader(
            series_instance_uid="1.2.826.0.1.3680043.8.498.3",
            sop_instance_uid="1.2.826.0.1.3680043.8.498.4",
            series_number=902,
            provenance=provenance,
        ),
        intensity_unit=codes.UCUM.HounsfieldUnit,
    )
    seg.save_as(tmp_path / "seg.dcm")
    sr.save_as(tmp_path / "sr.dcm")

    assert seg.SOPClassUID == LABEL_MAP_SEGMENTATION_STORAGE
    assert referenced_segmentations(tmp_path / "sr.dcm") == {(seg.SOPClassUID, seg.SOPInstanceUID)}
    assert labelmap_dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert labelmap_dciodvfy_errors(tmp_path / "sr.dcm") == []

    # The check is not vacuous: a missing Type 1 attribute is still reported.
    seg.FrameOfReferenceUID = None
    seg.save_as(tmp_path / "broken.dcm")
    assert any(
        "FrameOfReferenceUID" in e for e in labelmap_dciodvfy_errors(tmp_path / "broken.dcm")
    )
