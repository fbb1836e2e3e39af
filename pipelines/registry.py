"""Which pipelines exist: built-in ``pipelines/<name>/spec.py`` plus the models directory.

A spec names a pipeline, its version and queue and where its code lives; the
heavy entry point (numpy, torch, a model) is imported only when a worker
first runs the pipeline, and the instance is kept for the process's life.
Adding a modality = adding one folder with a ``spec.py`` and its code, or
(without code) a folder under the models directory with a ``pipeline.json``
and the weights (see :mod:`pipelines.model.config`), or installing a package
that registers a spec in the entry-point group ``pacs_ai_node.pipelines``
(a code pipeline with its own pre- and post-processing: a plugin).  All are
read without importing torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from core.errors import ConfigurationError

if TYPE_CHECKING:
    from pipelines.base import Pipeline

log = logging.getLogger(__name__)

#: Entry point of every configuration-only (bring-your-own) model pipeline.
MODEL_PIPELINE = "pipelines.model.pipeline:ModelPipeline"
#: Entry-point group where installed packages register their pipelines' specs.
PLUGIN_GROUP = "pacs_ai_node.pipelines"

Key = TypeVar("Key")


@dataclass(frozen=True)
class SeriesRole:
    """One of the series a multi-series pipeline needs from a study (e.g. T2 or FLAIR).

    Parameters
    ----------
    role:
        Name of the input (channel order follows the spec's ``inputs``).
    series_description:
        Regular expression searched (case-insensitive) in the SeriesDescription.
    modalities:
        Accepted modalities; None accepts any.
    """

    role: str
    series_description: str | None = None
    modalities: frozenset[str] | None = None

    def matches(self, modality: str | None, description: str | None) -> bool:
        """Whether a series with this modality and description can fill the role."""
        if self.modalities is not None and (modality or "").upper() not in self.modalities:
            return False
        pattern = self.series_description
        return pattern is None or re.search(pattern, description or "", re.IGNORECASE) is not None


@dataclass(frozen=True)
class PipelineSpec:
    """What the node must know about a pipeline before running it.

    Parameters
    ----------
    name, version:
        Identity recorded on jobs and written into result objects.
    description:
        One line for ``ainode pipelines`` and the SeriesDescription.
    queue:
        Celery queue its jobs go to (``cpu`` or ``gpu``).
    modalities:
        Modalities it can analyse (routing rules naming it must agree).
    entrypoint:
        ``module:Class`` of the :class:`~pipelines.base.Pipeline` subclass.
    kind:
        Result kind: ``segmentation``, ``classification`` or ``detection``.
    config_path:
        ``pipeline.json`` of a model pipeline (None for code-only pipelines).
    weights_dir:
        Folder of the weights; None for a built-in model pipeline whose
        weights the operator supplies in ``<models dir>/<name>/``.
    inputs:
        For a multi-series pipeline, the series it needs from a study, in
        channel order; empty for a single-series pipeline.
    weights:
        ``module:function`` of a code pipeline returning its weight files
        (name to path, the main network first), imported without torch so
        ``ainode pipelines`` can hash them; it raises ConfigurationError when
        they are missing.  None for weight-free and model pipelines.
    distribution:
        ``(name, version)`` of the installed package a plugin came from;
        set by the registry, None for built-in and model pipelines.
    """

    name: str
    version: str
    description: str
    queue: str
    modalities: frozenset[str]
    entrypoint: str
    kind: str = "segmentation"
    config_path: Path | None = None
    weights_dir: Path | None = None
    inputs: tuple[SeriesRole, ...] = ()
    weights: str | None = None
    distribution: tuple[str, str] | None = None

    def weight_files(self) -> Mapping[str, Path]:
        """A code pipeline's weight files by name (empty without ``weights``).

        Raises
        ------
        ConfigurationError
            The locator cannot be imported, or the files are missing.
        """
        if self.weights is None:
            return {}
        module_name, _, function = self.weights.partition(":")
        try:
            locate = getattr(importlib.import_module(module_name), function)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(f"{self.name}: weights locator {self.weights}: {exc}") from exc
        return locate()

    def weights_folder(self, models_dir: Path | None) -> Path | None:
        """Where this pipeline's weights live (None: it has none)."""
        if self.weights_dir is not None:
            return self.weights_dir
        if self.config_path is None or models_dir is None:
            return None
        return models_dir / self.name


@cache
def builtin_specs() -> dict[str, PipelineSpec]:
    """Every pipeline spec shipped in the ``pipelines`` package, by name."""
    import pipelines

    specs: dict[str, PipelineSpec] = {}
    for module in pkgutil.iter_modules(pipelines.__path__):
        if not module.ispkg:
            continue
        try:
            spec_module = importlib.import_module(f"pipelines.{module.name}.spec")
        except ModuleNotFoundError:
            continue
        spec: PipelineSpec = spec_module.SPEC
        specs[spec.name] = spec
    return specs


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
    return pipeline_class.create(spec, models_dir, device)
