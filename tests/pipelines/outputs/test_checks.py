"""Output checks: what a viewer would reject or a reader misread never leaves the node."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
from pydicom.uid import generate_uid

from pipelines.base import PipelineInput, SegmentationResult, measure_segments
from pipelines.outputs.checks import (
    OutputCheckFailed,
    check_references,
    check_segmentation_geometry,
    check_segments,
)
from pipelines.outputs.provenance import ResultProvenance
from tests.support.sr import new_measurement_report, new_segmentation


@pytest.fixture(scope="module")
def seg(ct_input: PipelineInput, seg_result: SegmentationResult, provenance: ResultProvenance):
    return new_segmentation(ct_input, seg_result, provenance, series_number=9901)


def test_objects_built_from_the_input_pass(
    ct_input: PipelineInput, seg_result: SegmentationResult, seg, provenance: ResultProvenance
) -> None:
    measurements = measure_segments(ct_input, seg_result)
    sr = new_measurement_report(ct_input, measurements, seg, provenance, series_number=9902)

    check_references(ct_input.datasets, [seg, sr])
    check_segmentation_geometry(ct_input.datasets, seg)
    check_segments(seg, measurements, {"left-lung": (1.0, 6000.0)})


def test_a_reference_to_an_instance_that_is_not_an_input_fails(
    ct_input: PipelineInput, seg
) -> None:
    other = copy.deepcopy(seg)
    other.ReferencedSeriesSequence[0].ReferencedInstanceSequence[
        0
    ].ReferencedSOPInstanceUID = generate_uid()
    with pytest.raises(OutputCheckFailed, match="not an input"):
        check_references(ct_input.datasets, [other])
    moved = copy.deepcopy(seg)
    moved.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()
    with pytest.raises(OutputCheckFailed, match="wrong series"):
        check_references(ct_input.datasets, [moved])


def test_frames_off_the_source_grid_fail(ct_input: PipelineInput, seg) -> None:
    shifted = copy.deepcopy(seg)
    position = shifted.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 2.5 for v in position.ImagePositionPatient]
    with pytest.raises(OutputCheckFailed, match="frame 1 lies on no source slice"):
        check_segmentation_geometry(ct_input.datasets, shifted)
    resized = copy.deepcopy(seg)
    resized.Rows = int(seg.Rows) // 2
    with pytest.raises(OutputCheckFailed, match="frames are"):
        check_segmentation_geometry(ct_input.datasets, resized)


def test_an_empty_segment_must_be_reported_absent_and_volumes_plausible(
    ct_input: PipelineInput, seg_result: SegmentationResult, seg
) -> None:
    measurements = measure_segments(ct_input, seg_result)
    lung = next(m for m in measurements if m.segment.tracking_id == "left-lung")
    said_absent = [
        replace(m, voxel_count=0, volume_ml=0.0) if m is lung else m for m in measurements
    ]

    with pytest.raises(OutputCheckFailed, match="disagree on whether it is present"):
        check_segments(seg, said_absent, {})
    with pytest.raises(OutputCheckFailed, match="outside the plausible 1000-6000 mL"):
        check_segments(seg, measurements, {"left-lung": (1000.0, 6000.0)})
