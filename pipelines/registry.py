"""Which pipelines exist: the built-in folders, installed plugins and the models directory.

A spec names a pipeline, its version and queue and where its code lives; the
heavy entry point (numpy, torch, a model) is imported only when a worker
first runs the pipeline, and the instance is kept for the process's life.
Every built-in is a folder of ``pipelines/`` with a ``pipeline.json``, read
as the models directory is: a code pipeline's manifest (its identity and the
``module:Class`` it runs) beside its module, or a model pipeline's
configuration (see :mod:`pipelines.model.config`).  Adding a modality = one
such folder, or (without code) a folder under the models directory with a
``pipeline.json`` and the weights, or installing a package that registers a
spec in the entry-point group ``pacs_ai_node.pipelines`` (a code pipeline
with its own pre- and post-processing: a plugin).  All are read without
importing torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from functools import cache, partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from core.errors import ConfigurationError
from pipelines.spec import PipelineSpec, SeriesRole

if TYPE_CHECKING:
    from pipelines.base import Pipeline

log = logging.getLogger(__name__)

#: Entry point of every configuration-only (bring-your-own) model pipeline.
MODEL_PIPELINE = "pipelines.model.pipeline:ModelPipeline"
#: Entry-point group where installed packages register their pipelines' specs.
PLUGIN_GROUP = "pacs_ai_node.pipelines"
#: The folder of the built-in pipelines (this package).
BUILTIN_DIR = Path(__file__).parent

Key = TypeVar("Key")


class CodeManifest(BaseModel):
    """A code pipeline's ``pipeline.json``: its identity and the class that runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    version: str = Field(min_length=1, max_length=16)
    description: str = Field(min_length=1, max_length=200)
    kind: Literal["segmentation", "classification", "detection"] = "segmentation"
    queue: Literal["gpu", "cpu"]
    #: DICOM Modality values, upper case as the tag holds them.
    modalities: frozenset[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,16}$")]]
    entrypoint: str = Field(pattern=r"^[\w.]+:\w+$")
    weights: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")


def code_spec(manifest: Path) -> PipelineSpec:
    """The spec of the code pipeline whose ``pipeline.json`` is ``manifest``.

    Raises
    ------
    ConfigurationError
        Unreadable JSON or a value that fails validation.
    """
    try:
        raw = json.loads(manifest.read_text())
        fields = CodeManifest.model_validate(raw)
    except (OSError, ValueError) as exc:  # ValidationError is a ValueError
        raise ConfigurationError(f"{manifest}: {exc}") from exc
    return PipelineSpec(**fields.model_dump())


def builtin_spec(manifest: Path) -> PipelineSpec:
    """The spec of a built-in pipeline from its ``pipeline.json``.

    A manifest naming an ``entrypoint`` is a code pipeline's; any other is a
    model pipeline's, whose weights lie beside it in a ``model/`` folder (as
    in the models directory) or else are the operator's, under the models
    directory.
    """
    try:
        is_code = "entrypoint" in json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{manifest}: not readable JSON: {exc}") from exc
    if is_code:
        return code_spec(manifest)
    shipped = manifest.parent.name == "model"
    return model_spec(manifest, weights_dir=manifest.parent if shipped else None)


@cache
def builtin_specs() -> dict[str, PipelineSpec]:
    """Every pipeline shipped in the ``pipelines`` package, by name.

    Each is a folder with its ``pipeline.json``: ``pipelines/<folder>/`` or,
    for a model whose weights ship with the code, ``pipelines/<folder>/model/``.
    """
    from pipelines.model.config import CONFIG_FILE

    manifests = [*BUILTIN_DIR.glob(f"*/{CONFIG_FILE}"), *BUILTIN_DIR.glob(f"*/model/{CONFIG_FILE}")]
    specs = (builtin_spec(manifest) for manifest in sorted(manifests))
    return {spec.name: spec for spec in specs}


def _collect(
    candidates: Iterable[tuple[Key, Callable[[], PipelineSpec]]],
    taken: Mapping[str, PipelineSpec],
) -> tuple[dict[str, PipelineSpec], dict[Key, str]]:
    """The specs ``candidates`` load, by name, and why each other one is refused, by its key.

    A candidate is refused when loading it raises ConfigurationError or its
    name is in ``taken`` or already loaded.
    """
    specs: dict[str, PipelineSpec] = {}
    errors: dict[Key, str] = {}
    for key, load in candidates:
        try:
            spec = load()
        except ConfigurationError as exc:
            errors[key] = str(exc)
            continue
        if spec.name in taken or spec.name in specs:
            errors[key] = f"{key}: pipeline name {spec.name!r} is already taken"
            continue
        specs[spec.name] = spec
    return specs, errors


def _plugin_spec(entry_point: metadata.EntryPoint) -> PipelineSpec:
    """The spec an entry point names, tagged with its distribution.

    Raises
    ------
    ConfigurationError
        The entry point cannot be loaded or is not a PipelineSpec.
    """
    try:
        spec = entry_point.load()
    except Exception as exc:  # a plugin's import may fail in any way; reported, not fatal
        raise ConfigurationError(
            f"plugin {entry_point.value}: cannot be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(spec, PipelineSpec):
        raise ConfigurationError(
            f"plugin {entry_point.value}: is a {type(spec).__name__}, not a PipelineSpec"
        )
    dist = entry_point.dist
    origin = (dist.name, dist.version) if dist is not None else ("?", "?")
    return dataclasses.replace(spec, distribution=origin)


@cache
def plugin_specs() -> tuple[dict[str, PipelineSpec], dict[str, str]]:
    """Pipelines registered by installed packages (entry-point group ``pacs_ai_node.pipelines``).

    Returns
    -------
    tuple
        Specs by name, and ``{entry point: reason}`` for those that do not
        load, are not specs or clash with another pipeline's name.
    """
    points = sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda e: e.name)
    return _collect(
        ((f"{e.name} = {e.value}", partial(_plugin_spec, e)) for e in points),
        builtin_specs(),
    )


def model_spec(config_path: Path, weights_dir: Path | None) -> PipelineSpec:
    """The spec of the model pipeline configured by ``config_path``.

    Parameters
    ----------
    config_path:
        Its ``pipeline.json``.
    weights_dir:
        Folder of its weights; None for a built-in pipeline whose weights
        the operator supplies in ``<models dir>/<name>/``.

    Raises
    ------
    ConfigurationError
        If the configuration does not validate.
    """
    from pipelines.model.config import load_model_config

    config = load_model_config(config_path)
    return PipelineSpec(
        name=config.name,
        version=config.version,
        description=config.description,
        queue=config.queue,
        modalities=config.modalities,
        entrypoint=MODEL_PIPELINE,
        kind=config.kind,
        config_path=config_path,
        weights_dir=weights_dir,
        inputs=tuple(
            SeriesRole(
                role=item.role,
                series_description=item.series_description,
                modalities=item.modalities,
            )
            for item in config.inputs
        ),
    )


def discover_models(models_dir: Path | None) -> tuple[dict[str, PipelineSpec], dict[Path, str]]:
    """Model pipelines configured under ``models_dir``, and the folders that are invalid.

    Each sub-folder holding a ``pipeline.json`` is one pipeline.  A folder
    without one may hold the weights of a built-in pipeline of that name.

    Returns
    -------
    tuple
        Specs by name, and ``{config path: reason}`` for configurations that
        do not validate or clash with another pipeline's name.
    """
    from pipelines.model.config import CONFIG_FILE

    if models_dir is None or not models_dir.is_dir():
        return {}, {}
    return _collect(
        (
            (path, partial(model_spec, path, path.parent))
            for path in sorted(models_dir.glob(f"*/{CONFIG_FILE}"))
        ),
        {**builtin_specs(), **plugin_specs()[0]},
    )


@cache
def available_specs(models_dir: Path | None = None) -> dict[str, PipelineSpec]:
    """Built-in, plugin and the valid model pipelines under ``models_dir``, by name.

    Cached per folder for the life of the process: a model added while the
    node runs is picked up at the next restart.
    """
    models, errors = discover_models(models_dir)
    for reason in errors.values():
        log.error("ignoring model configuration: %s", reason)
    plugins, plugin_errors = plugin_specs()
    for reason in plugin_errors.values():
        log.error("ignoring pipeline plugin: %s", reason)
    return {**builtin_specs(), **plugins, **models}


def get_spec(name: str, models_dir: Path | None = None) -> PipelineSpec:
    """The spec of pipeline ``name``, or a ConfigurationError naming the known ones."""
    specs = available_specs(models_dir)
    if name not in specs:
        raise ConfigurationError(f"unknown pipeline {name!r}; known: {sorted(specs)}")
    return specs[name]


@cache
def load_pipeline(name: str, models_dir: Path | None = None, device: str = "auto") -> Pipeline:
    """The process-wide instance of pipeline ``name`` (imported and built once: one model load).

    Parameters
    ----------
    name:
        Registered pipeline name.
    models_dir:
        The node's models directory (``Settings.models_path``).
    device:
        Preferred inference device (``Settings.inference_device``).
    """
    spec = get_spec(name, models_dir)
    module_name, _, class_name = spec.entrypoint.partition(":")
    pipeline_class: type[Pipeline] = getattr(importlib.import_module(module_name), class_name)
    pipeline = pipeline_class.create(spec, models_dir, device)
    pipeline.spec = spec
    return pipeline
