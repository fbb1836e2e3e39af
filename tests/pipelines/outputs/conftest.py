"""Fixtures for the SEG/SR builders: a small phantom CT, masks and provenance."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipelines.base import PipelineInput, SegmentationResult, SegmentDefinition
from pipelines.io import load_series
from pipelines.outputs.provenance import ResultProvenance
from pipelines.phantom import PhantomStudy, generate_ct_phantom


def make_phantom(**kwargs: object) -> PhantomStudy:
    """A small, shuffled phantom (64 x 64 x 20, 5 mm voxels) covering lungs and liver."""
    options: dict = dict(
        slices=20, rows=64, columns=64, pixel_spacing=5.0, slice_thickness=5.0, shuffle=True
    )
    return generate_ct_phantom(**{**options, **kwargs})


@pytest.fixture(scope="session")
def phantom() -> PhantomStudy:
    """Source CT slices (in random order) and their ground-truth labels."""
    return make_phantom()


@pytest.fixture(scope="session")
def ct_input(phantom: PhantomStudy) -> PipelineInput:
    """The pipeline input built from the phantom series, as the worker does."""
    return load_series(phantom.datasets)


def _segment(label: str, code: Code, tracking_id: str) -> SegmentDefinition:
    return SegmentDefinition(
        label=label,
        category=codes.SCT.AnatomicalStructure,
        property_type=code,
        tracking_id=tracking_id,
    )


SEGMENTS = {
    1: _segment("Body", codes.SCT.EntireBody, "body"),
    2: _segment("Left lung", Code("44029006", "SCT", "Left lung"), "left-lung"),
    3: _segment("Right lung", Code("3341006", "SCT", "Right lung"), "right-lung"),
    4: _segment("Spine", codes.SCT.Spine, "spine"),
    5: _segment("Liver", codes.SCT.Liver, "liver"),
}


def masks_from_labels(labels: np.ndarray) -> SegmentationResult:
    """Overlapping masks: body = everything inside the body outline, organs inside it."""
    masks = [labels > 0] + [labels == value for value in (2, 3, 4, 5)]
    return SegmentationResult(segments=list(SEGMENTS.values()), masks=masks)


@pytest.fixture(scope="session")
def seg_result(phantom: PhantomStudy) -> SegmentationResult:
    """All five phantom structures, every one non-empty."""
    result = masks_from_labels(phantom.labels)
    assert all(mask.any() for mask in result.masks)
    return result


@pytest.fixture(scope="session")
def empty_result(phantom: PhantomStudy) -> SegmentationResult:
    """Two segments, the second one empty."""
    labels = phantom.labels
    return SegmentationResult(
        segments=[SEGMENTS[2], SEGMENTS[5]],
        masks=[labels == 2, np.zeros(labels.shape, bool)],
    )


@pytest.fixture(scope="session")
def provenance() -> ResultProvenance:
    """Provenance of a made-up classical pipeline."""
    return ResultProvenance(
        node_version="0.1.0",
        pipeline_name="ct-lungs",
        pipeline_version="1.0.0",
        device_serial_number="AINODE",
        parameters={"threshold_hu": "-400"},
        algorithm_family=codes.cid7162.HistogramAnalysis,
    )


@pytest.fixture(scope="session")
def make_case() -> Callable[..., tuple[PipelineInput, SegmentationResult]]:
    """Factory: phantom options -> (pipeline input, masks of all five structures)."""

    def make(**kwargs: object) -> tuple[PipelineInput, SegmentationResult]:
        study = make_phantom(**kwargs)
        return load_series(study.datasets), masks_from_labels(study.labels)

    return make
