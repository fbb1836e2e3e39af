"""Which pipelines exist, found from ``pipelines/<name>/spec.py`` without importing them.

A spec names a pipeline, its version and queue and where its code lives; the
heavy entry point (numpy, torch, a model) is imported only when a worker
first runs the pipeline, and the instance is kept for the process's life.
Adding a modality = adding one folder with a ``spec.py`` and its code.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from core.errors import ConfigurationError

if TYPE_CHECKING:
    from pipelines.base import Pipeline


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
    """

    name: str
    version: str
    description: str
    queue: str
    modalities: frozenset[str]
    entrypoint: str


@cache
def available_specs() -> dict[str, PipelineSpec]:
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


def get_spec(name: str) -> PipelineSpec:
    """The spec of pipeline ``name``, or a ConfigurationError naming the known ones."""
    specs = available_specs()
    if name not in specs:
        raise ConfigurationError(f"unknown pipeline {name!r}; known: {sorted(specs)}")
    return specs[name]


@cache
def load_pipeline(name: str) -> Pipeline:
    """The process-wide instance of pipeline ``name`` (imported and built once)."""
    module_name, _, class_name = get_spec(name).entrypoint.partition(":")
    pipeline_class = getattr(importlib.import_module(module_name), class_name)
    return pipeline_class()
