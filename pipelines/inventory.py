"""What is installed, for ``ainode pipelines``: every pipeline, its weights and its problems.

Without ``check`` nothing heavy is imported: configurations are validated and
weights located and hashed.  With ``check`` each model is also loaded and
run once on a zero input of its configured shape, which catches weights
that do not fit their configuration (wrong number of outputs or inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import ConfigurationError
from pipelines.registry import builtin_specs, discover_models, plugin_specs
from pipelines.spec import PipelineSpec

__all__ = ["InstalledPipeline", "inventory"]


@dataclass(frozen=True)
class InstalledPipeline:
    """One line of ``ainode pipelines``.

    Attributes
    ----------
    name, version, kind, queue:
        Identity (``?`` where the configuration could not be read).
    source:
        ``built-in``, the configuration file, or ``plugin <distribution>
        <version>`` for a pipeline an installed package registers.
    weights, weights_sha256:
        The (main) weights file and its SHA-256 (None for weight-free
        pipelines or when missing).
    more_weights:
        Further weight files of a code pipeline (e.g. a cascade's first
        network) and their SHA-256, by name.
    error:
        Why the pipeline cannot run; None when it can.
    note:
        A remark that is not an error, e.g. that a built-in model pipeline
        is not installed (the operator has not supplied its weights).
    """

    name: str
    version: str
    kind: str
    queue: str
    source: str
    weights: Path | None = None
    weights_sha256: str | None = None
    more_weights: tuple[tuple[str, str], ...] = ()
    error: str | None = None
    note: str | None = None


def _code_entry(spec: PipelineSpec, models_dir: Path, check: bool) -> InstalledPipeline:
    """A code pipeline (built-in or plugin): its weight files hashed, (``check``) built once.

    Weights that cannot be found make a note (not installed), which is an
    error only where routing rules send series to the pipeline.
    """
    from pipelines.model.config import sha256_of

    source = "built-in"
    if spec.distribution is not None:
        source = f"plugin {spec.distribution[0]} {spec.distribution[1]}"
    entry = {"name": spec.name, "version": spec.version, "kind": spec.kind, "queue": spec.queue}
    try:
        files = [(name, path, sha256_of(path)) for name, path in spec.weight_files().items()]
    except ConfigurationError as exc:
        return InstalledPipeline(**entry, source=source, note=f"not installed: {exc}")
    if check:
        from pipelines.registry import load_pipeline

        try:
            load_pipeline(spec.name, models_dir, "cpu")
        except ConfigurationError as exc:
            return InstalledPipeline(**entry, source=source, error=str(exc))
    if not files:
        return InstalledPipeline(**entry, source=source)
    (_, main, digest), *more = files
    return InstalledPipeline(
        **entry,
        source=source,
        weights=main,
        weights_sha256=digest,
        more_weights=tuple((name, sha) for name, _, sha in more),
    )


def _model_entry(spec: PipelineSpec, models_dir: Path, check: bool) -> InstalledPipeline:
    """Validate one model pipeline: configuration, weights, and (``check``) the network."""
    from pipelines.model.config import find_weights, load_model_config, sha256_of

    source = "built-in" if spec.name in builtin_specs() else str(spec.config_path)
    entry = {"name": spec.name, "version": spec.version, "kind": spec.kind, "queue": spec.queue}
    folder = spec.weights_folder(models_dir)
    if spec.config_path is None or folder is None:
        return InstalledPipeline(**entry, source=source, error="no configuration or weights folder")
    if spec.weights_dir is None and not folder.exists():
        note = f"not installed: the operator's weights go in {folder}"
        return InstalledPipeline(**entry, source=source, note=note)
    try:
        config = load_model_config(spec.config_path)
        weights = find_weights(config, folder)
        digest = sha256_of(weights)
        if check:
            from pipelines.model.pipeline import ModelPipeline

            ModelPipeline.create(spec, models_dir, "cpu")
    except ConfigurationError as exc:
        return InstalledPipeline(**entry, source=source, error=str(exc))
    return InstalledPipeline(**entry, source=source, weights=weights, weights_sha256=digest)


def inventory(models_dir: Path, *, check: bool = False) -> list[InstalledPipeline]:
    """Every built-in and configured pipeline with its weights and problems, by name.

    Parameters
    ----------
    models_dir:
        The node's models directory.
    check:
        Also load each model and run it once on a zero input.
    """
    models, errors = discover_models(models_dir)
    plugins, plugin_errors = plugin_specs()
    entries = []
    everything = {**builtin_specs(), **plugins, **models}
    for spec in sorted(everything.values(), key=lambda spec: spec.name):
        if spec.config_path is None:
            entries.append(_code_entry(spec, models_dir, check))
        else:
            entries.append(_model_entry(spec, models_dir, check))
    entries.extend(
        InstalledPipeline(
            name=path.parent.name, version="?", kind="?", queue="?", source=str(path), error=reason
        )
        for path, reason in errors.items()
    )
    entries.extend(
        InstalledPipeline(
            name=label.partition(" = ")[0],
            version="?",
            kind="?",
            queue="?",
            source="plugin",
            error=reason,
        )
        for label, reason in plugin_errors.items()
    )
    return entries
