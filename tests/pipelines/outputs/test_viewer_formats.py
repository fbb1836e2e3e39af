"""Secondary Captures with burned-in overlays and a Key Object Selection: valid, pointing right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from pipelines.base import PipelineInput, SegmentationResult, measure_segments
from pipelines.outputs.key_objects import build_key_object_selection
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.secondary_capture import (
    MIN_WIDTH,
    PALETTE,
    build_secondary_captures,
    key_images,
)
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.sr import new_segmentation

needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy not installed")


def _captures(
    ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance
) -> list:
    return build_secondary_captures(
        ct_input,
        seg_result,
        measure_segments(ct_input, seg_result),
        intensity_unit="HU",
        series_instance_uid=generate_uid(),
        sop_instance_uids=[generate_uid() for _ in range(8)],
        series_number=9903,
        provenance=provenance,
    )


def test_one_key_image_per_segment_where_it_is_largest(
    ct_input: PipelineInput, seg_result: SegmentationResult
) -> None:
    keys = key_images(ct_input, seg_result)

    assert 1 <= len(keys) <= len(seg_result.segments)
    assert [key.index for key in keys] == sorted({key.index for key in keys})
    uids = {ds.SOPInstanceUID for ds in ct_input.datasets}
    assert all(key.source.SOPInstanceUID in uids for key in keys)


@needs_dciodvfy
def test_captures_show_the_overlay_and_legend_and_pass_dciodvfy(
    ct_input: PipelineInput,
    seg_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path: Path,
) -> None:
    captures = _captures(ct_input, seg_result, provenance)
    study_uid = ct_input.datasets[0].StudyInstanceUID

    for number, capture in enumerate(captures, 1):
        path = tmp_path / f"sc-{number}.dcm"
        capture.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        read = dcmread(path)
        assert read.StudyInstanceUID == study_uid and read.Modality == "OT"
        pixels = read.pixel_array
        assert pixels.shape[1] >= MIN_WIDTH and pixels.shape[2] == 3
        # the legend's first swatch is drawn in the first segment's colour
        assert np.any(np.all(pixels == PALETTE[0], axis=2))
        # the overlay tints the image: some pixels are neither gray nor legend black
        assert np.any(pixels[..., 0].astype(int) - pixels[..., 2] > 30)
    assert len({c.SeriesInstanceUID for c in captures}) == 1


@needs_dciodvfy
def test_key_object_selection_references_key_images_seg_and_sr(
    ct_input: PipelineInput,
    seg_result: SegmentationResult,
    provenance: ResultProvenance,
    tmp_path: Path,
) -> None:
    seg = new_segmentation(ct_input, seg_result, provenance, series_number=9901)
    keys = [key.source for key in key_images(ct_input, seg_result)]
    kos = build_key_object_selection(
        keys,
        [seg],
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=9904,
        provenance=provenance,
    )
    path = tmp_path / "kos.dcm"
    kos.save_as(path, enforce_file_format=True)

    assert dciodvfy_errors(path) == []
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in dcmread(path).CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {ds.SOPInstanceUID for ds in keys} | {seg.SOPInstanceUID}
