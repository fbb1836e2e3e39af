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
    "MeanIntensityClassifierFixture",
    "write_model_folder",
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
