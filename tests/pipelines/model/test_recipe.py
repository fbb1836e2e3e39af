"""The declarative recipe: its validation, and deepbet written as a ``pipeline.json``.

deepbet's cascade (RAS axes, quantiles on a 128³ sample, z-score, bounding-box
network, 10 % margin, 256³ nearest-exact resize, largest component, holes
filled) declared without code must give the mask of the ``mr-brain`` code
pipeline on a real T1 series.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import ConfigurationError
from pipelines.inventory import inventory
from pipelines.io import load_series
from pipelines.model.config import load_model_config
from pipelines.model.pipeline import ModelPipeline
from pipelines.outputs.agreement import dice
from pipelines.registry import model_spec
from tests.support.real_data import real_images

DEEPBET_RECIPE: dict[str, Any] = {
    "name": "deepbet-declarative",
    "version": "1.0.2",
    "description": "deepbet's cascade declared in pipeline.json",
    "kind": "segmentation",
    "queue": "cpu",
    "modalities": ["MR"],
    "model": "model.pt",
    "input": {
        "channels": 1,
        "window": None,
        "axes": "RAS",
        "normalise": {
            "percentiles": [0.5, 99.5],
            "sample_size": [128, 128, 128],
            "zscore": True,
            "mean": 0.449,
            "std": 0.226,
        },
        "resize": {"size": [256, 256, 256], "interpolation": "nearest-exact"},
        "crop": {
            "stage": "model",
            "model": "bbox_model.pt",
            "size": [128, 128, 128],
            "channel": 1,
            "threshold": 0.5,
            "margin": 0.1,
        },
    },
    "activation": "none",
    "threshold": 0.5,
    "labels": [{"values": [1], "label": "Brain", "code": ["12738006", "SCT", "Brain"]}],
    "postprocess": {"largest_component": True, "fill_holes": True},
}


def _config(tmp_path: Path, change: dict[str, Any] | None = None) -> Path:
    config = copy.deepcopy(DEEPBET_RECIPE)
    for dotted, value in (change or {}).items():
        *parents, key = dotted.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[key] = value
    folder = tmp_path / "models" / "deepbet"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipeline.json").write_text(json.dumps(config))
    return folder / "pipeline.json"


def test_the_deepbet_recipe_validates(tmp_path: Path) -> None:
    config = load_model_config(_config(tmp_path))
    assert config.input.axes == "RAS" and config.input.crop is not None
    assert config.postprocess.fill_holes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input.window": [0, 100]}, "window and normalise exclude each other"),
        ({"input.spacing": [1, 1, 1]}, "resize excludes spacing and roi_size"),
        ({"input.crop.model": None}, "crop stage 'model' needs 'model'"),
        ({"input.normalise.percentiles": [99, 1]}, "percentiles must satisfy"),
        ({"input.resize.size": [256, 256]}, "resize.size must have 3 positive values"),
        ({"input.axes": "RSA"}, "input.axes"),
        ({"input.resize.interpolation": "cubic"}, "input.resize.interpolation"),
        ({"kind": "detection"}, "input.crop applies to segmentation, not detection"),
        ({"postprocess.holes": True}, "postprocess.holes"),
    ],
)
def test_invalid_steps_are_named(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_model_config(_config(tmp_path, change))
    (entry,) = [e for e in inventory(tmp_path / "models") if e.source.endswith("pipeline.json")]
    assert entry.error is not None and message.split("'")[0] in entry.error


def test_a_missing_crop_network_is_a_missing_file(tmp_path: Path) -> None:
    pytest.importorskip("deepbet", reason="deepbet comes with the [brain] extra")
    from pipelines.mr_brain.weights import deepbet_weights

    path = _config(tmp_path)
    (path.parent / "model.pt").symlink_to(deepbet_weights()["model.pt"])
    with pytest.raises(ConfigurationError, match="missing file: crop model"):
        ModelPipeline.create(model_spec(path, path.parent), None, "cpu")


def test_deepbet_declared_in_pipeline_json_reproduces_the_code_pipeline(tmp_path: Path) -> None:
    pytest.importorskip("deepbet", reason="deepbet comes with the [brain] extra")
    from pipelines.mr_brain.pipeline import MrBrainPipeline
    from pipelines.mr_brain.weights import deepbet_weights

    weights = deepbet_weights()
    path = _config(tmp_path)
    for name, source in weights.items():
        (path.parent / name).symlink_to(source)
    declarative = ModelPipeline.create(model_spec(path, path.parent), None, "cpu")
    data = load_series(real_images("mr-t1-2d-sag-supine"))
    (declared,) = declarative.run(data).masks
    (coded,) = MrBrainPipeline(weights, "cpu").run(data).masks
    assert dice(np.asarray(declared), np.asarray(coded)) >= 0.99
    assert declarative.parameters["crop_weights_sha256"] == (
        "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa"
    )
