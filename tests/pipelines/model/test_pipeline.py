"""Model pipelines on TEST FIXTURE networks: each result kind from real inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import PipelineError
from pipelines.base import ClassificationResult, DetectionResult
from pipelines.io import load_projection
from pipelines.model.pipeline import ModelPipeline
from pipelines.registry import get_spec
from tests.pipelines.conftest import PhantomFactory
from tests.support.model_fixtures import MeanIntensityClassifierFixture, write_model_folder
from tests.support.radiograph import make_radiograph


def test_detector_finds_the_spine_as_one_bright_region(
    models_dir: Path, phantom_factory: PhantomFactory
) -> None:
    study, data = phantom_factory(slices=40, rows=96, columns=96, pixel_spacing=3.0)
    pipeline = ModelPipeline.create(get_spec("fixture-bone-detect", models_dir), models_dir, "cpu")
    result = pipeline.run(data)
    assert isinstance(result, DetectionResult)
    (finding,) = result.findings
    spine = study.labels == 4
    rows, columns = np.nonzero(spine[finding.slice_index])
    row_min, column_min, row_max, column_max = finding.box
    assert abs(row_min - rows.min()) <= 1 and abs(row_max - rows.max()) <= 1
    assert abs(column_min - columns.min()) <= 1 and abs(column_max - columns.max()) <= 1
    assert finding.volume_ml == pytest.approx(spine.sum() * data.voxel_volume_ml, rel=0.15)
    assert finding.diameter_mm == pytest.approx(40 * 2.5, rel=0.05)  # spans every slice
    assert 0.5 <= finding.score <= 1.0
    assert pipeline.device == "cpu" and pipeline.parameters["roi_size"] == "32x64x64"


def test_classifier_decides_at_threshold(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_model_folder(
        models / "cxr-classify", MeanIntensityClassifierFixture([0.1, 0.3, 0.9, 0.95])
    )
    pipeline = ModelPipeline.create(get_spec("cxr-classify", models), models, "auto")
    data = load_projection([make_radiograph(brightness=0.5)])
    assert data.volume.spatial_shape == (1, 256, 256)
    result = pipeline.run(data)
    assert isinstance(result, ClassificationResult)
    decisions = {finding.label: finding.present for finding in result.findings}
    assert decisions == {
        "Pneumothorax": True,
        "Pleural effusion": False,
        "Consolidation": False,
        "Cardiomegaly": False,
    }
    probabilities = [finding.probability for finding in result.findings]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probabilities)


def test_classifier_rejects_a_volume(tmp_path: Path, phantom_factory: PhantomFactory) -> None:
    models = tmp_path / "models"
    write_model_folder(models / "cxr-classify", MeanIntensityClassifierFixture([0.1] * 4))
    pipeline = ModelPipeline.create(get_spec("cxr-classify", models), models, "cpu")
    with pytest.raises(PipelineError, match="single images"):
        pipeline.run(phantom_factory(slices=8, rows=32, columns=32)[1])


def test_monochrome1_radiograph_is_inverted() -> None:
    dataset = make_radiograph(brightness=0.8)
    dataset.PhotometricInterpretation = "MONOCHROME1"
    inverted = load_projection([dataset]).volume.array
    assert inverted[0, 128, 128] < inverted[0, 2, 2]


def test_device_falls_back_to_the_cpu_without_cuda() -> None:
    import torch

    from pipelines.model.inference import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda:1" if torch.cuda.is_available() else "cpu"
    assert resolve_device("cuda:1") == torch.device(expected)
