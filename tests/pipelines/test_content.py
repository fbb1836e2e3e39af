"""Image content checks: chests, heads and radiographs told apart by pixels and mm, not tags."""

from __future__ import annotations

from typing import get_args

import highdicom as hd
import numpy as np
import pytest

from pipelines.base import PipelineInput
from pipelines.content import (
    CHECKS,
    ContentCheckName,
    body_extent,
    check_content,
    chest_ct_findings,
    head_findings,
    projection_findings,
)
from pipelines.io import load_input, load_projection, load_series
from pipelines.model.config import load_model_config
from pipelines.registry import builtin_specs, load_pipeline
from tests.support.mr import BRAIN_SERIES, mr_series
from tests.support.radiograph import make_radiograph
from tests.support.real_data import real_images

HEAD_CT = "ct-head-phantom-axial-5mm"


def _ct_head(sinus_ml: float = 20.0) -> hd.Volume:
    """A synthetic head CT (HU): 150 x 190 x 160 mm skull and brain, paranasal air at the front."""
    spacing = 1.0
    grid = np.mgrid[-40:40, -110:110, -90:90].astype(np.float32) * np.array(
        [4.0, spacing, spacing]
    ).reshape(3, 1, 1, 1)
    z, y, x = grid
    head = (x / 75) ** 2 + (y / 95) ** 2 + (z / 80) ** 2 <= 1.0
    hu = np.where(head, 35.0, -1000.0).astype(np.float32)
    radius = (3 * sinus_ml * 1000 / (4 * np.pi)) ** (1 / 3)
    hu[(x**2 + (y + 60) ** 2 + (z + 20) ** 2) <= radius**2] = -1000.0
    affine = np.array(
        [[0, 0, spacing, -90], [0, spacing, 0, -110], [-4.0, 0, 0, 160], [0, 0, 0, 1]], float
    )
    return hd.Volume(hu, affine, coordinate_system="PATIENT")


def test_every_named_check_is_implemented() -> None:
    assert set(CHECKS) == set(get_args(ContentCheckName))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"slices": 12, "rows": 48, "columns": 48, "pixel_spacing": 8.0, "slice_thickness": 8.0},
        {"slices": 36, "slice_thickness": 3.0, "seed": 3},
        {"image_orientation": (1, 0, 0, 0, -1, 0), "seed": 2},
    ],
    ids=["default", "small-coarse", "lungs-cut-by-range", "z-reversed"],
)
def test_chest_phantoms_show_a_chest(phantom_factory, options: dict) -> None:
    _, data = phantom_factory(**options)
    assert chest_ct_findings(data.volume) == []
    assert head_findings(data.volume, threshold=-500)[0].startswith(
        "no head-sized object: the largest object is"
    )


def test_synthetic_head_ct_has_neither_chest_nor_lungs_but_is_a_head() -> None:
    volume = _ct_head()
    reasons = chest_ct_findings(volume)
    assert len(reasons) == 2
    assert reasons[0].startswith("no chest-sized body: the body is 150 mm wide")
    assert reasons[1].startswith("no lungs:") and "inside the body" in reasons[1]
    assert head_findings(volume, threshold=-500) == []
    extent = body_extent(volume, -500)
    assert extent is not None and extent.depth_mm == pytest.approx(190, abs=3)


@pytest.mark.parametrize("case", [HEAD_CT, "ct-head-phantom-gantry-tilt"])
def test_real_head_ct_is_no_chest_but_a_head(case: str) -> None:
    data = load_series(real_images(case))
    reasons = chest_ct_findings(data.volume)
    # a hollow phantom: air fills the skull, so the body's size is what tells
    assert len(reasons) == 1 and reasons[0].startswith("no chest-sized body")
    assert head_findings(data.volume, threshold=-500) == []
    assert check_content(("chest-ct",), data.volume, "CT") == reasons


@pytest.mark.parametrize("case", ["mr-t1w-3d-studyforrest", "mr-t1-2d-sag-supine"])
def test_real_head_mr_series_are_heads(case: str) -> None:
    data = load_series(real_images(case))
    assert head_findings(data.volume) == []
    assert check_content(("head",), data.volume, "MR") == []


def test_brain_fixture_series_pass_the_head_check() -> None:
    for _role, description, seed, spacing, slices in BRAIN_SERIES:
        data = load_series(mr_series(description, seed, spacing, slices).datasets)
        assert head_findings(data.volume) == []


def test_a_chest_ct_is_not_a_chest_for_the_mr_check_on_the_wrong_modality(phantom_input) -> None:
    assert check_content(("chest-ct",), phantom_input.volume, "MR") == [
        "a chest CT check needs CT, got MR"
    ]


def test_an_empty_volume_holds_no_body_and_no_head() -> None:
    volume = hd.Volume(np.full((8, 32, 32), -1000.0, np.float32), np.eye(4), "PATIENT")
    assert chest_ct_findings(volume) == ["no body in the field of view (no voxel above -500 HU)"]
    assert head_findings(volume, threshold=-500) == ["no head: the image holds no object"]


def test_real_chest_radiograph_is_a_projection_radiograph() -> None:
    data = load_input(real_images("cr-chest-nema-rg1"))  # JPEG 2000, no pixel size
    assert check_content(("projection-radiograph",), data.volume, "CR") == []


def test_radiograph_checks() -> None:
    data = load_projection([make_radiograph()])
    assert projection_findings(data.volume) == []
    blank = data.volume.with_array(np.zeros_like(data.volume.array))
    assert projection_findings(blank) == ["no image content: 98% of the pixels have one value"]
    tiny = load_projection([make_radiograph(size=64)]).volume
    assert projection_findings(tiny)[0].startswith("not a radiograph: 64 x 64 pixels")
    stack = hd.Volume(np.zeros((3, 256, 256), np.float32), np.eye(4), "PATIENT")
    assert projection_findings(stack) == ["not a projection image: 3 image planes"]


def test_each_builtin_pipeline_declares_the_content_it_relies_on() -> None:
    declared = {
        name: load_model_config(spec.config_path).content
        if spec.config_path
        else load_pipeline(name).content
        for name, spec in builtin_specs().items()
    }
    expected = {
        "ct-lungs": ("chest-ct",),
        "ct-nodule-detect": ("chest-ct",),
        "ct-organs-demo": ("chest-ct",),
        "cxr-classify": ("projection-radiograph",),
        "mr-brain-seg": ("head",),
    }
    assert {name: declared[name] for name in expected} == expected


def test_ct_lungs_skips_by_content_what_its_tags_allow(phantom_input: PipelineInput) -> None:
    pipeline = load_pipeline("ct-lungs")
    assert pipeline.missing_content(phantom_input) == []
    head = load_series(real_images(HEAD_CT))
    for dataset in head.datasets:
        del dataset.BodyPartExamined  # a missing tag leaves it to the content
    assert pipeline.domain.violations(head.datasets) == []
    assert pipeline.missing_content(head)[0].startswith("no chest-sized body")
