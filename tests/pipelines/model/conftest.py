"""Model folders with TEST FIXTURE networks (see :mod:`tests.support.model_fixtures`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.support.model_fixtures import BrightRegionDetectorFixture, write_model_folder

#: A bring-your-own detection pipeline configuration (fixture detector: bright bone).
DETECTOR_CONFIG: dict[str, Any] = {
    "name": "fixture-bone-detect",
    "version": "0.0.1",
    "description": "TEST FIXTURE: marks voxels above 300 HU",
    "kind": "detection",
    "queue": "cpu",
    "modalities": ["CT"],
    "input": {"window": [-1000, 500], "roi_size": [32, 64, 64], "overlap": 0.25},
    "activation": "sigmoid",
    "labels": [{"values": [0], "label": "Bone", "code": ["272673000", "SCT", "Bone structure"]}],
    "domain": {"modalities": ["CT"], "pixel_spacing_mm": [1.0, 3.0]},
}


def detector_config(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`DETECTOR_CONFIG` with top-level ``changes``."""
    config = copy.deepcopy(DETECTOR_CONFIG)
    config.update(changes)
    return config


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models directory holding the fixture detector as a bring-your-own pipeline."""
    folder = tmp_path / "models"
    write_model_folder(
        folder / "bone", BrightRegionDetectorFixture(level=(300 + 1000) / 1500), DETECTOR_CONFIG
    )
    return folder
