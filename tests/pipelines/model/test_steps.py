"""One test per pre-/post-processing step of :mod:`pipelines.model.steps`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.model.pipeline import ModelPipeline
from pipelines.model.steps import (
    bbox_with_margin,
    fill_holes,
    is_torchscript,
    largest_component,
    percentile_range,
    reorientation,
    resize,
    scale_and_standardise,
)
from pipelines.registry import get_spec
from tests.support.model_fixtures import BrightRegionDetectorFixture, write_model_folder

from .conftest import detector_config


def _oblique_affine(rng: np.random.Generator) -> np.ndarray:
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = rotation * rng.uniform(0.5, 2.0, 3)
    affine[:3, 3] = rng.normal(size=3) * 50
    return affine


def test_reorientation_matches_nibabel_canonical_and_inverts_exactly() -> None:
    nibabel = pytest.importorskip("nibabel", reason="nibabel comes with the [brain] extra")
    rng = np.random.default_rng(7)
    for _ in range(50):
        affine = _oblique_affine(rng)
        array = rng.normal(size=(4, 5, 6))
        axes = reorientation(affine, "RAS")
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        expected = nibabel.as_closest_canonical(nibabel.Nifti1Image(array, ras)).get_fdata()
        assert np.array_equal(axes.apply(array), expected)
        assert np.array_equal(axes.invert(axes.apply(array)), array)


def test_reorientation_conventions() -> None:
    axial = np.diag([0.5, 0.8, 0.8, 1.0])[[2, 1, 0, 3]]  # slice axis along +z (superior)
    array = np.arange(24).reshape(2, 3, 4)
    assert np.array_equal(reorientation(axial, "acquisition").apply(array), array)
    lps = reorientation(axial, "LPS")
    assert lps.apply(array).shape == (4, 3, 2)  # x (columns), y (rows), z (slices)
    ras = reorientation(axial, "RAS")
    assert np.array_equal(ras.apply(array), lps.apply(array)[::-1, ::-1])
    assert lps.spacing((0.5, 0.8, 0.9)) == (0.9, 0.8, 0.5)


def test_percentile_range_on_the_volume_or_a_nearest_exact_sample() -> None:
    x = torch.arange(1000, dtype=torch.float32).reshape(10, 10, 10)
    low, high = percentile_range(x, (0.005, 0.995))
    assert (float(low), float(high)) == pytest.approx((4.995, 994.005))
    sample = resize(x, (5, 5, 5), "nearest-exact")
    assert [float(v) for v in percentile_range(x, (0.0, 1.0), (5, 5, 5))] == [
        float(sample.min()),
        float(sample.max()),
    ]


def test_scale_and_standardise_clips_then_maps_to_mean_and_spread() -> None:
    x = torch.linspace(-100, 300, 1000)
    clipped = scale_and_standardise(x, 0.0, 200.0, zscore=False)
    assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0
    standard = scale_and_standardise(x, 0.0, 200.0, mean=0.449, std=0.226)
    assert float(standard.mean()) == pytest.approx(0.449, abs=1e-5)
    assert float(standard.std()) == pytest.approx(0.226, abs=1e-5)


def test_resize_to_a_fixed_matrix_keeps_labels_with_nearest_exact() -> None:
    labels = torch.randint(0, 3, (7, 9, 11)).float()
    out = resize(labels, (16, 16, 16), "nearest-exact")
    assert out.shape == (16, 16, 16) and set(out.unique().tolist()) <= {0.0, 1.0, 2.0}
    assert resize(labels, (4, 4, 4), "trilinear").shape == (4, 4, 4)


def test_bbox_with_margin_scales_and_grows_the_foreground_box() -> None:
    foreground = torch.zeros(8, 8, 8)
    foreground[2:6, 2:6, 3:5] = 1
    box = bbox_with_margin(foreground, (16, 16, 16), margin=0.25)
    assert box == (slice(2, 14, 1), slice(2, 14, 1), slice(5, 11, 1))
    with pytest.raises(ValueError, match="not enough foreground"):
        bbox_with_margin(torch.zeros(8, 8, 8), (16, 16, 16), margin=0.1)


def test_largest_component_is_26_connected() -> None:
    mask = np.zeros((6, 6, 6), bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal chain: one component
    mask[4:6, 4:6, 4] = True  # four voxels, separate
    kept = largest_component(mask)
    assert kept.sum() == 4 and kept[4, 4, 4]
    mask[3, 3, 3] = True
    assert largest_component(mask).sum() == 8
    assert not largest_component(np.zeros((3, 3, 3), bool)).any()


def test_fill_holes_fills_enclosed_cavities_only() -> None:
    shell = np.zeros((7, 7, 7), bool)
    shell[1:6, 1:6, 1:6] = True
    shell[2:5, 2:5, 2:5] = False
    open_cup = shell.copy()
    open_cup[2:5, 2:5, 5] = False  # opened to the outside
    assert fill_holes(shell)[3, 3, 3]
    assert not fill_holes(open_cup)[3, 3, 3]


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:DeprecationWarning")
def test_torchscript_is_recognised_by_content_whatever_the_suffix(tmp_path: Path) -> None:
    network = torch.nn.Conv3d(1, 2, 1)
    scripted = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(network), scripted)
    state = tmp_path / "weights.ts"
    torch.save(network.state_dict(), state)
    junk = tmp_path / "model.bin"
    junk.write_bytes(b"not a model")
    assert is_torchscript(scripted)
    assert not is_torchscript(state) and not is_torchscript(junk)


def test_a_model_pipeline_loads_torchscript_named_pt(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "bone"
    scripted = write_model_folder(
        folder, BrightRegionDetectorFixture(level=0.95), detector_config(model="model.pt")
    )
    scripted.rename(folder / "model.pt")
    pipeline = ModelPipeline.create(get_spec("fixture-bone-detect", tmp_path / "models"), None)
    assert pipeline.weights_sha256 is not None
