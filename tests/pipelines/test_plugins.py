"""A pipeline plugin installed into the venv (``pip install -e``) is registered, listed and runs.

The example package under ``tests/pipelines/plugin_example`` registers
``example-bone`` in the entry-point group ``pacs_ai_node.pipelines``.  It is
installed from a copy (the build leaves nothing in the repository) and
uninstalled afterwards.  Entry points are read when an interpreter starts, so
the checks run in fresh ``ainode`` / Python processes.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from pipelines import registry
from pipelines.spec import PipelineSpec

EXAMPLE = Path(__file__).with_name("plugin_example")
DISTRIBUTION = "ainode-example-pipeline"
#: A plugin's spec that takes a built-in pipeline's name.
CLASH = PipelineSpec(
    name="ct-lungs",
    version="9.9.9",
    description="a plugin under a built-in's name",
    queue="cpu",
    modalities=frozenset({"CT"}),
    entrypoint="pipelines.ct_lungs.pipeline:CtLungsPipeline",
)

RUN_EXAMPLE = """
from pipelines.io import load_series
from pipelines.phantom import generate_ct_phantom
from pipelines.registry import get_spec, load_pipeline

spec = get_spec("example-bone")
assert spec.distribution == ("ainode-example-pipeline", "0.1.0"), spec.distribution
pipeline = load_pipeline("example-bone")
data = load_series(generate_ct_phantom(slices=24, rows=64, columns=64, seed=3).datasets)
(mask,) = pipeline.run(data).masks
assert mask.shape == data.volume.array.shape and mask.any()
assert (data.volume.array[mask] > 300).all()
print("bone voxels", int(mask.sum()))
"""


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin installed editable from a temporary copy; uninstalled afterwards."""
    source = tmp_path_factory.mktemp("plugin") / "plugin_example"
    shutil.copytree(EXAMPLE, source)
    result = _pip("install", "--quiet", "--no-deps", "--no-build-isolation", "-e", str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    yield source
    _pip("uninstall", "--quiet", "--yes", DISTRIBUTION)


def _ainode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_installed_plugin_is_listed_with_distribution_and_weights(installed_plugin: Path) -> None:
    weights = installed_plugin / "ainode_example_pipeline" / "weights.json"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    listing = _ainode("pipelines", "--check")
    assert (
        f"example-bone 0.1.0 segmentation [cpu] sha256:{digest} "
        f"(plugin {DISTRIBUTION} 0.1.0)" in listing.stdout
    ), listing.stdout + listing.stderr


def test_installed_plugin_runs_through_the_registry(installed_plugin: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", RUN_EXAMPLE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bone voxels" in result.stdout


def test_broken_and_clashing_plugins_are_reported_not_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = [
        metadata.EntryPoint("not-a-spec", "os:sep", registry.PLUGIN_GROUP),
        metadata.EntryPoint("missing", "no_such_module_here:SPEC", registry.PLUGIN_GROUP),
        metadata.EntryPoint("clash", "tests.pipelines.test_plugins:CLASH", registry.PLUGIN_GROUP),
    ]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: points)
    registry.plugin_specs.cache_clear()
    try:
        specs, errors = registry.plugin_specs()
    finally:
        monkeypatch.undo()
        registry.plugin_specs.cache_clear()
    assert specs == {}
    assert "is a str, not a PipelineSpec" in errors["not-a-spec = os:sep"]
    assert "cannot be loaded: ModuleNotFoundError" in errors["missing = no_such_module_here:SPEC"]
    assert "'ct-lungs' is already taken" in errors["clash = tests.pipelines.test_plugins:CLASH"]
