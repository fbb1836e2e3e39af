"""What the node knows of a pipeline before running it: its spec, and the series it needs.

Plain data, importing nothing heavy: the registry builds specs from manifests
and plugins, the scheduler routes with them, and a pipeline instance carries
the one it was built from.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError


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
