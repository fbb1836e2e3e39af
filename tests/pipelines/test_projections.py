"""Projection images: one by one, spacing unknown (RG1), a PA and a lateral in one series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from core.errors import PipelineError
from pipelines.base import (
    ClassFinding,
    ClassificationResult,
    Pipeline,
    PipelineInput,
    PipelineResult,
    SegmentationResult,
)
from pipelines.io import load_input
from pipelines.model.config import load_model_config
from pipelines.projections import run_pipeline
from pipelines.registry import get_spec
from tests.support.radiograph import two_view_series
from tests.support.real_data import real_images

CXR_SPEC = get_spec("cxr-classify")
CXR_DOMAIN = load_model_config(CXR_SPEC.config_path).domain  # type: ignore[arg-type]


def _write(datasets: list[pydicom.Dataset], folder: Path) -> list[Path]:
    paths = []
    for index, ds in enumerate(datasets):
        paths.append(folder / f"{index}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


class _Brightness(Pipeline):
    """Classifies each image by its mean value (records the shapes it saw)."""

    seen: list[tuple[int, ...]]

    def __init__(self, kind: str = "classification") -> None:
        self.spec = CXR_SPEC
        self.kind = kind
        self.seen = []

    def run(self, data: PipelineInput) -> PipelineResult:
        self.seen.append(data.volume.spatial_shape)
        if self.kind != "classification":
            return SegmentationResult(segments=[], masks=[])
        value = float(data.volume.array.mean()) / 4095
        finding = ClassFinding(
            label="Bright",
            finding=pydicom.sr.coding.Code("1", "99TEST", "Bright"),
            category=pydicom.sr.coding.Code("2", "99TEST", "Test"),
            probability=value,
            present=value > 0.2,
        )
        return ClassificationResult(findings=[finding], threshold=0.2)


def test_real_radiograph_with_zero_pixel_spacing_is_loaded() -> None:
    """NEMA RG1: PixelSpacing 0.000\\0.000 and no other spacing."""
    data = load_input(real_images("cr-chest-nema-rg1"))
    assert data.volume.spatial_shape == (1, 1955, 1841)
    np.testing.assert_allclose(data.volume.spacing, (1.0, 1.0, 1.0))  # placeholder, flagged:
    assert data.unknown_spacing is not None
    assert "PixelSpacing 0.000\\0.000 and no ImagerPixelSpacing" in data.unknown_spacing
    # a classifier needs no mm: inside cxr-classify's domain; a measuring pipeline is not
    assert CXR_DOMAIN.violations(data.datasets, spacing_needed=False) == []
    assert CXR_DOMAIN.violations(data.datasets) == ["pixel spacing unknown (validated 0.1-0.5)"]


def test_two_views_are_loaded_one_by_one(tmp_path: Path) -> None:
    data = load_input(_write(two_view_series(), tmp_path))
    assert [image.volume.spatial_shape for image in data.images] == [(1, 256, 256), (1, 200, 200)]
    assert [ds.ViewPosition for ds in data.datasets] == ["PA", "LL"]
    assert data.unknown_spacing is None


def test_each_view_is_classified_and_named(tmp_path: Path) -> None:
    data = load_input(_write(two_view_series(), tmp_path))
    pipeline = _Brightness()
    result = run_pipeline(pipeline, data)
    assert pipeline.seen == [(1, 256, 256), (1, 200, 200)]
    assert isinstance(result, ClassificationResult)
    assert [finding.image.ViewPosition for finding in result.findings] == ["PA", "LL"]


def test_segmenting_several_views_is_refused_with_the_reason(tmp_path: Path) -> None:
    data = load_input(_write(two_view_series(), tmp_path))
    with pytest.raises(PipelineError) as raised:
        run_pipeline(_Brightness(kind="segmentation"), data)
    assert str(raised.value) == (
        "series holds 2 projection images; cxr-classify segments, "
        "and a segmentation is written for one image only"
    )
