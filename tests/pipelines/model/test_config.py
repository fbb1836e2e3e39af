"""Model configuration: validation errors an operator sees, discovery and ``ainode pipelines``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from app.cli import main
from core.errors import ConfigurationError
from pipelines.inventory import inventory
from pipelines.model.config import load_model_config
from pipelines.model.pipeline import ModelPipeline
from pipelines.registry import discover_models, get_spec
from tests.pipelines.model.conftest import detector_config
from tests.support.model_fixtures import MeanIntensityClassifierFixture, write_model_folder


def _write(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.json"
    path.write_text(json.dumps(config))
    return path


def test_valid_config_is_discovered_with_its_identity(models_dir: Path) -> None:
    specs, errors = discover_models(models_dir)
    assert errors == {}
    spec = specs["fixture-bone-detect"]
    assert (spec.kind, spec.queue, spec.version) == ("detection", "cpu", "0.0.1")
    assert spec.weights_folder(None) == models_dir / "bone"
    assert get_spec("fixture-bone-detect", models_dir) == spec


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"labels": [{"values": [0], "label": "X", "code": ["12ab", "SCT", "X"]}]},
            "unknown label code",
        ),
        (
            {"labels": [{"values": [0], "label": "X", "code": ["1234", "LOCAL", "X"]}]},
            "unknown code scheme",
        ),
        ({"kind": "regression"}, "kind"),
        ({"input": {"window": [500, -1000]}}, "window low must be below high"),
        ({"input": {"window": [0, 1], "roi_size": [64, 64]}}, "roi_size must have 3"),
        ({"labels": []}, "labels"),
        ({"inputs": [{"role": "t1"}, {"role": "t2"}]}, "2 input series but input.channels is 1"),
        ({"inputs": [{"role": "t1", "series_description": "("}]}, "invalid series_description"),
        ({"content": ["lungs"]}, "content"),
    ],
)
def test_invalid_config_names_file_and_field(tmp_path: Path, change: dict, message: str) -> None:
    path = _write(tmp_path / "m", detector_config(**change))
    with pytest.raises(ConfigurationError, match=message) as raised:
        load_model_config(path)
    assert str(path) in str(raised.value)


def test_unreadable_json_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "pipeline.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not readable JSON"):
        load_model_config(tmp_path / "pipeline.json")
    with pytest.raises(ConfigurationError, match="missing file"):
        load_model_config(tmp_path / "absent" / "pipeline.json")


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    _write(tmp_path / "models" / "m", detector_config())
    spec = get_spec("fixture-bone-detect", tmp_path / "models")
    with pytest.raises(ConfigurationError, match=r"missing file: no weights model\.ts"):
        ModelPipeline.create(spec, tmp_path / "models")


def test_network_with_wrong_output_shape_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "m"
    write_model_folder(folder, MeanIntensityClassifierFixture([0.5, 0.5]), detector_config())
    spec = get_spec("fixture-bone-detect", tmp_path / "models")
    with pytest.raises(ConfigurationError, match="wrong shape"):
        ModelPipeline.create(spec, tmp_path / "models")


def test_state_dict_for_a_monai_architecture_loads(tmp_path: Path) -> None:
    from monai.networks.nets import DenseNet121

    folder = tmp_path / "models" / "cxr-classify"
    folder.mkdir(parents=True)
    network = DenseNet121(spatial_dims=2, in_channels=1, out_channels=4, init_features=8)
    torch.save(network.state_dict(), folder / "model.pt")
    spec = get_spec("cxr-classify", tmp_path / "models")
    with pytest.raises(ConfigurationError, match=r"cannot load model\.pt"):
        ModelPipeline.create(spec, tmp_path / "models")
    torch.save(
        DenseNet121(spatial_dims=2, in_channels=1, out_channels=4).state_dict(),
        folder / "model.pt",
    )
    pipeline = ModelPipeline.create(spec, tmp_path / "models")
    assert pipeline.spec.kind == "classification" and len(pipeline.weights_sha256 or "") == 64


def test_name_clash_and_invalid_config_are_reported_not_loaded(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _write(models / "clash", detector_config(name="ct-lungs"))
    _write(models / "broken", detector_config(version=""))
    specs, errors = discover_models(models)
    assert specs == {}
    assert "already taken" in errors[models / "clash" / "pipeline.json"]
    assert "version" in errors[models / "broken" / "pipeline.json"]


def test_inventory_lists_weights_sha_and_errors(models_dir: Path) -> None:
    entries = {entry.name: entry for entry in inventory(models_dir, check=True)}
    bone = entries["fixture-bone-detect"]
    assert bone.error is None and bone.weights == models_dir / "bone" / "model.ts"
    assert len(bone.weights_sha256 or "") == 64
    assert entries["ct-lungs"].error is None and entries["ct-lungs"].weights is None
    assert entries["cxr-classify"].error is None
    assert entries["cxr-classify"].note == (
        f"not installed: the operator's weights go in {models_dir / 'cxr-classify'}"
    )
    (models_dir / "cxr-classify").mkdir()
    entries = {entry.name: entry for entry in inventory(models_dir)}
    assert "missing file" in (entries["cxr-classify"].error or "")


def test_ainode_pipelines_command(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINODE_MODELS_DIR", str(models_dir))
    result = CliRunner().invoke(main, ["pipelines", "--check"])
    assert result.exit_code == 0, result.output
    assert "fixture-bone-detect 0.0.1 detection [cpu] sha256:" in result.output
    assert "cxr-classify 1.0.0 classification [gpu] sha256:- (built-in)" in result.output
    assert "not installed" in result.output and "ERROR" not in result.output

    rules = '[{"name": "xr", "pipeline": "cxr-classify", "modality": ["DX"]}]'
    monkeypatch.setenv("AINODE_ROUTING_RULES", rules)
    result = CliRunner().invoke(main, ["pipelines"])
    assert result.exit_code == 1
    assert "ERROR: routing rules send series to cxr-classify, which is not installed" in (
        result.output
    )

    (models_dir / "broken").mkdir()
    (models_dir / "broken" / "pipeline.json").write_text("{}")
    monkeypatch.delenv("AINODE_ROUTING_RULES")
    result = CliRunner().invoke(main, ["pipelines"])
    assert result.exit_code == 1 and "ERROR:" in result.output and "broken" in result.output


def test_monai_bundle_folder_supplies_version_and_weights(tmp_path: Path) -> None:
    from tests.support.model_fixtures import BrightRegionDetectorFixture

    bundle = tmp_path / "models" / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text(
        json.dumps({"version": "2.3.1", "name": "Bone detector bundle"})
    )
    (bundle / "configs" / "inference.json").write_text("{}")
    write_model_folder(bundle / "models", BrightRegionDetectorFixture(level=0.9))
    config = detector_config()
    del config["version"], config["description"]
    _write(bundle, config)
    spec = get_spec("fixture-bone-detect", tmp_path / "models")
    assert (spec.version, spec.description) == ("2.3.1", "Bone detector bundle")
    pipeline = ModelPipeline.create(spec, tmp_path / "models", "cpu")
    assert pipeline.weights_sha256 is not None
