"""Shared fixtures for pipeline tests: the synthetic CT phantom in a few variants."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.base import PipelineInput
from pipelines.io import load_series
from pipelines.phantom import PhantomStudy, generate_ct_phantom, write_phantom

PhantomFactory = Callable[..., tuple[PhantomStudy, PipelineInput]]


@functools.cache
def _phantom(**kwargs: object) -> tuple[PhantomStudy, PipelineInput]:
    study = generate_ct_phantom(**kwargs)  # type: ignore[arg-type]
    return study, load_series(study.datasets)


@pytest.fixture(scope="session")
def phantom_factory() -> PhantomFactory:
    """``factory(**generate_ct_phantom kwargs) -> (study, input)``, cached per arguments.

    The returned objects are shared between tests: do not modify them.
    """
    return _phantom


@pytest.fixture(scope="session")
def phantom(phantom_factory: PhantomFactory) -> PhantomStudy:
    """The default 64 x 128 x 128 phantom, datasets shuffled."""
    return phantom_factory(shuffle=True)[0]


@pytest.fixture(scope="session")
def phantom_input(phantom_factory: PhantomFactory) -> PipelineInput:
    """The default phantom loaded as a pipeline input."""
    return phantom_factory(shuffle=True)[1]


@pytest.fixture(scope="session")
def phantom_files(phantom: PhantomStudy, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The default phantom written as Part 10 files."""
    return write_phantom(phantom, tmp_path_factory.mktemp("phantom"))
