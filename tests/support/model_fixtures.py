"""TEST FIXTURES ONLY: tiny TorchScript "models" that exercise the plumbing, never shipped.

They compute their outputs from image intensities with a couple of fixed
operations, so a test knows what they will find: the classifier's
probability rises with mean brightness, the detector marks every voxel
brighter than a threshold.  They say nothing about any disease.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "BrightRegionDetectorFixture",
    "ChannelArgmaxSegmenterFixture",
    "IntensityBandSegmenterFixture",
    "MeanIntensityClassifierFixture",
    "write_model_folder",
    "write_tissue_bands_model",
]


class MeanIntensityClassifierFixture(torch.nn.Module):
    """TEST FIXTURE: logits ``scale * (mean(x) - offset_c)`` for each class ``c``."""

    def __init__(self, offsets: list[float], scale: float = 20.0) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.float32))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(dim=1, keepdim=True)
        return self.scale * (mean - self.offsets[None, :])


class BrightRegionDetectorFixture(torch.nn.Module):
    """TEST FIXTURE: per-voxel logit ``scale * (x - level)``: bright regions are "findings"."""

    def __init__(self, level: float, scale: float = 40.0) -> None:
        super().__init__()
        self.level = level
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x[:, :1] - self.level)


class ChannelArgmaxSegmenterFixture(torch.nn.Module):
    """TEST FIXTURE: class 0 where every channel is below ``level``, else 1 + brightest channel."""

    def __init__(self, level: float = 0.5) -> None:
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        background = torch.full_like(x[:, :1], self.level)
        return 10.0 * torch.cat([background, x], dim=1)


class IntensityBandSegmenterFixture(torch.nn.Module):
    """TEST FIXTURE (3D): class ``c`` where the first channel is closest to ``levels[c]``.

    One class per intensity band, so its segments never overlap (a label map
    can hold them), unlike body outlines that contain organs.
    """

    def __init__(self, levels: list[float], scale: float = 40.0) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.scale * (x[:, :1] - self.levels[None, :, None, None, None]).abs()


def write_model_folder(
    folder: Path, module: torch.nn.Module, config: dict[str, Any] | None = None
) -> Path:
    """Script ``module`` to ``folder/model.ts`` (and write ``pipeline.json`` if given).

    Returns
    -------
    Path
        The TorchScript file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.ts"
    torch.jit.script(module.eval()).save(str(path))
    if config is not None:
        (folder / "pipeline.json").write_text(json.dumps(config, indent=2))
    return path


#: A bring-your-own segmentation whose segments never overlap (so it can be a LABELMAP):
#: the fixture network's soft-tissue and bone bands of the CT phantom (40 and 400 HU).
TISSUE_BANDS_CONFIG: dict[str, Any] = {
    "name": "fixture-tissue-bands",
    "version": "0.0.1",
    "description": "TEST FIXTURE: soft tissue and bone by intensity band",
    "kind": "segmentation",
    "queue": "cpu",
    "modalities": ["CT"],
    "input": {"window": [-1000, 500], "roi_size": [32, 64, 64]},
    "activation": "softmax",
    "labels": [
        {"values": [1], "label": "Soft tissue", "code": ["87784001", "SCT", "Soft tissue"]},
        {"values": [2], "label": "Bone", "code": ["272673000", "SCT", "Bone structure"]},
    ],
}


def write_tissue_bands_model(models_dir: Path) -> str:
    """Write the ``fixture-tissue-bands`` pipeline under ``models_dir``; returns its name.

    Window -1000 to 500 HU maps air, soft tissue (40 HU) and bone (400 HU) of the
    phantom to about 0, 0.69 and 0.93: the fixture's three levels.
    """
    module = IntensityBandSegmenterFixture([0.0, 1040 / 1500, 1400 / 1500])
    write_model_folder(models_dir / "tissue-bands", module, TISSUE_BANDS_CONFIG)
    return str(TISSUE_BANDS_CONFIG["name"])
