"""The ct-lungs pipeline against the phantom's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import PipelineError
from pipelines.base import Pipeline, PipelineInput, SegmentationResult, measure_segments
from pipelines.ct_lungs.pipeline import CtLungsPipeline
from pipelines.ct_lungs.segments import BODY, LEFT_LUNG, RIGHT_LUNG, SEGMENTS
from pipelines.phantom import PhantomStudy
from pipelines.registry import builtin_specs, load_pipeline

LEFT, RIGHT = 2, 3


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _patient_x(data: PipelineInput, mask: np.ndarray) -> float:
    index = np.argwhere(mask).mean(axis=0)
    return float(data.volume.affine[0] @ np.append(index, 1.0))


def _with_array(data: PipelineInput, array: np.ndarray) -> PipelineInput:
    return PipelineInput(volume=data.volume.with_array(array), datasets=data.datasets)


def test_identity_is_the_registered_spec() -> None:
    spec = builtin_specs()["ct-lungs"]
    assert issubclass(CtLungsPipeline, Pipeline)
    assert (spec.name, spec.version, spec.queue) == ("ct-lungs", "1.0.0", "cpu")
    assert spec.modalities == frozenset({"CT"})
    assert spec.entrypoint == f"{CtLungsPipeline.__module__}:{CtLungsPipeline.__name__}"
    assert load_pipeline("ct-lungs").spec is spec


def test_segment_codes() -> None:
    assert SEGMENTS == (BODY, LEFT_LUNG, RIGHT_LUNG)
    assert [s.tracking_id for s in SEGMENTS] == ["body", "left-lung", "right-lung"]
    assert {(s.category.value, s.category.scheme_designator) for s in SEGMENTS} == {
        ("91723000", "SCT")
    }
    assert [s.property_type.value for s in SEGMENTS] == ["38266002", "44029006", "3341006"]
    assert all(s.property_type.scheme_designator == "SCT" for s in SEGMENTS)


@pytest.fixture(scope="module")
def default_result(phantom_input: PipelineInput) -> SegmentationResult:
    return CtLungsPipeline().run(phantom_input)


def test_masks_match_volume(default_result: SegmentationResult, phantom: PhantomStudy) -> None:
    assert list(default_result.segments) == list(SEGMENTS)
    for mask in default_result.masks:
        assert mask.dtype == bool
        assert mask.shape == phantom.labels.shape
    body, left, right = default_result.masks
    assert not np.any(left & right)
    assert not np.any((left | right) & ~body)


CASES = {
    "default": {"shuffle": True},
    "seed-1": {"seed": 1},
    "z-reversed": {"image_orientation": (1, 0, 0, 0, -1, 0), "seed": 2},
    "mirrored-x": {"image_orientation": (-1, 0, 0, 0, 1, 0)},
    "lungs-cut-by-range": {"slices": 36, "slice_thickness": 3.0, "seed": 3},
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_accuracy(phantom_factory, case: str) -> None:
    study, data = phantom_factory(**CASES[case])
    result = CtLungsPipeline().run(data)
    labels = study.labels
    truth = [labels > 0, labels == LEFT, labels == RIGHT]
    measurements = measure_segments(data, result)
    for mask, expected, measured in zip(result.masks, truth, measurements, strict=True):
        assert _dice(mask, expected) >= 0.95, measured.segment.label
        true_ml = np.count_nonzero(expected) * data.voxel_volume_ml
        assert measured.volume_ml == pytest.approx(true_ml, rel=0.03), measured.segment.label
    body, left, right = measurements
    assert -900 < left.mean_intensity < -700
    assert -900 < right.mean_intensity < -700
    assert -300 < body.mean_intensity < 100
    # sides by patient coordinates, not by array direction
    assert _patient_x(data, result.masks[1]) > _patient_x(data, result.masks[2])


def test_lungs_touching_are_split_at_midline(phantom_factory) -> None:
    study, data = phantom_factory(shuffle=True)
    labels = study.labels
    lungs = (labels == LEFT) | (labels == RIGHT)
    # an air bridge across the mediastinum (|x| < 40 mm) through the middle of the lungs
    k, r, _ = np.argwhere(lungs).mean(axis=0).round().astype(int)
    columns = np.arange(labels.shape[2])
    x = data.volume.affine[0] @ np.stack(
        [np.full_like(columns, k), np.full_like(columns, r), columns, np.ones_like(columns)]
    )
    bridge = np.zeros(labels.shape, bool)
    bridge[k - 8 : k + 8, r - 4 : r + 4, np.abs(x) < 40] = True
    bridge &= labels == 1
    array = data.volume.array.copy()
    array[bridge] = -850.0
    result = CtLungsPipeline().run(_with_array(data, array))
    assert "split" in result.notes
    _, left, right = result.masks
    assert _dice(left, labels == LEFT) > 0.9
    assert _dice(right, labels == RIGHT) > 0.9
    assert _patient_x(data, left) > _patient_x(data, right)


def test_gas_pocket_is_not_a_lung(phantom_factory) -> None:
    study, data = phantom_factory(shuffle=True)
    labels = study.labels
    # a small gas pocket in the liver region, far from the lungs
    liver = np.argwhere(labels == 5)
    k, r, c = liver[len(liver) // 2]
    array = data.volume.array.copy()
    array[k - 2 : k + 2, r - 3 : r + 3, c - 3 : c + 3] = -1000.0
    result = CtLungsPipeline().run(_with_array(data, array))
    _, left, right = result.masks
    assert not (left | right)[k, r, c]
    assert _dice(right, labels == RIGHT) >= 0.95


def test_no_lungs_is_an_error(phantom: PhantomStudy, phantom_input: PipelineInput) -> None:
    array = phantom_input.volume.array.copy()
    array[(phantom.labels == LEFT) | (phantom.labels == RIGHT)] = 40.0
    with pytest.raises(PipelineError, match="no lungs found"):
        CtLungsPipeline().run(_with_array(phantom_input, array))


def test_no_body_is_an_error(phantom_input: PipelineInput) -> None:
    array = np.full(phantom_input.volume.array.shape, -1000.0, np.float32)
    with pytest.raises(PipelineError, match="no body found"):
        CtLungsPipeline().run(_with_array(phantom_input, array))
