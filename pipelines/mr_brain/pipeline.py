"""The ``mr-brain`` pipeline: deepbet's two-network cascade, run as its authors run it.

Steps (deepbet 1.0.2, ``BrainExtraction.run``), each from :mod:`pipelines.model.steps`:

1. the volume in RAS canonical axis order (nibabel's ``as_closest_canonical``);
2. a 128³ nearest-exact down-sample; its 0.5 and 99.5 % quantiles scale
   intensities to ``[0, 1]``, then a z-score mapped to mean 0.449, SD 0.226;
3. the bounding-box network on the 128³ volume, its largest component,
   and the box of that foreground grown by 10 % per side on the full grid;
4. the crop resized to 256³ (nearest-exact), the brain network on it, its
   output resized back onto the crop, thresholded at 0.5;
5. in the box: the largest 26-connected component, holes filled;
6. the mask flipped/transposed back onto the source frames (no resampling).

The weights come from the installed ``deepbet`` distribution and must match
the SHA-256 of its published 1.0.2 files.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from core.errors import ConfigurationError, ContentOutsideDomain
from pipelines.base import (
    Pipeline,
    PipelineInput,
    SecondOpinion,
    SegmentationResult,
    SegmentDefinition,
)
from pipelines.model.inference import inference_context, resolve_device
from pipelines.model.steps import (
    bbox_with_margin,
    fill_holes,
    largest_component,
    percentile_range,
    reorientation,
    resize,
    scale_and_standardise,
)
from pipelines.mr_brain.domain import T1HeadDomain
from pipelines.mr_brain.hdbet import HdBet
from pipelines.mr_brain.weights import (
    DEEPBET_VERSION,
    DEEPBET_WEIGHTS,
    HDBET_VERSION,
    HDBET_WEIGHTS,
    deepbet_weights,
    hdbet_weights,
)
from pipelines.outputs.agreement import dice
from pipelines.spec import PipelineSpec

__all__ = ["BRAIN", "MrBrainPipeline"]

#: The segment: SNOMED CT 12738006 "Brain", an anatomical structure.
BRAIN = SegmentDefinition(
    label="Brain",
    category=codes.SCT.AnatomicalStructure,
    property_type=Code("12738006", "SCT", "Brain"),
    tracking_id="brain",
)


class MrBrainPipeline(Pipeline):
    """Brain mask of a T1-weighted head MR by deepbet's cascade; skips what shows no brain."""

    intensity_unit: ClassVar[Code] = Code("1", "UCUM", "no units")
    domain = T1HeadDomain(
        modalities=frozenset({"MR"}),
        pixel_spacing_mm=(0.4, 1.6),
        slice_thickness_mm=(0.4, 6.0),
    )
    domain_policy = "skip"
    #: The image must show a head-sized object (pipelines.content) before anything runs.
    content = ("head",)
    #: Down-sample of the bounding-box network, matrix of the brain network.
    small_shape: ClassVar[tuple[int, int, int]] = (128, 128, 128)
    shape: ClassVar[tuple[int, int, int]] = (256, 256, 256)
    #: Plausible whole-brain mask of an adult (mL); outside it the image shows no whole brain.
    brain_volume_ml: ClassVar[tuple[float, float]] = (700.0, 2400.0)
    #: deepbet-HD-BET Dice under which the SR says "Requires review" (see the model card).
    review_below: ClassVar[float] = 0.93

    def __init__(self, weights: dict[str, Path], device: str, hdbet: Path | None = None) -> None:
        torch_device = resolve_device(device)
        self.device = str(torch_device)
        self._torch_device = torch_device
        self.bbox_network = _load(weights["bbox_model.pt"], torch_device)
        self.network = _load(weights["model.pt"], torch_device)
        self.weights_sha256 = DEEPBET_WEIGHTS["model.pt"]
        self.parameters = {  # type: ignore[misc]
            "model": f"deepbet {DEEPBET_VERSION}",
            "bbox_weights_sha256": DEEPBET_WEIGHTS["bbox_model.pt"],
            "axes": "RAS",
            "threshold": "0.5",
        }
        self.second_opinion = None if hdbet is None else HdBet(hdbet, torch_device)
        if self.second_opinion is not None:
            self.parameters["second_opinion"] = f"HD-BET {HDBET_VERSION} fold 0"
            self.parameters["second_opinion_sha256"] = HDBET_WEIGHTS["0.model"]

    @classmethod
    def create(cls, spec: PipelineSpec, models_dir: Path | None, device: str = "auto") -> Pipeline:
        """Locate and verify deepbet's weights (and HD-BET's where installed), load them once."""
        try:
            hdbet = hdbet_weights()["0.model"]
        except ConfigurationError:
            hdbet = None  # the [brain-hdbet] extra is optional
        return cls(deepbet_weights(), device, hdbet)

    def probabilities(self, x: np.ndarray) -> tuple[np.ndarray, tuple[slice, ...]]:
        """Brain probability of every voxel of ``x`` (RAS axes), and the cascade's box.

        Raises
        ------
        ContentOutsideDomain
            The bounding-box network finds no head.
        """
        volume = torch.nan_to_num(torch.from_numpy(x).to(self._torch_device))
        small = resize(volume, self.small_shape, "nearest-exact")
        low, high = percentile_range(small, (0.005, 0.995))
        with inference_context(self._torch_device):
            coarse = self.bbox_network(self._normalise(small, low, high))[0, 1].float()
        foreground = largest_component((coarse > 0.5).cpu().numpy())
        try:
            box = bbox_with_margin(torch.from_numpy(foreground.astype(np.float32)), x.shape, 0.1)
        except ValueError as exc:
            raise ContentOutsideDomain(f"no brain found: {exc}") from exc
        crop = resize(volume[box], self.shape, "nearest-exact")
        with inference_context(self._torch_device):
            fine = self.network(self._normalise(crop, low, high))[0, 1].float()
        probability = torch.zeros_like(volume)
        probability[box] = resize(fine, tuple(probability[box].shape), "nearest-exact")
        return probability.cpu().numpy(), box

    @staticmethod
    def _normalise(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """deepbet's ``normalize``, batched: quantile scaling, z-score to 0.449 ± 0.226."""
        return scale_and_standardise(x, low, high, mean=0.449, std=0.226)[None, None]

    def brain_mask(self, x: np.ndarray) -> np.ndarray:
        """The post-processed brain mask of ``x`` (RAS axes)."""
        probability, box = self.probabilities(x)
        mask = probability > 0.5
        if not mask[box].any():
            raise ContentOutsideDomain("no brain found: the brain network marks no voxel")
        mask[box] = fill_holes(largest_component(mask[box]))
        return mask

    def run(self, data: PipelineInput) -> SegmentationResult:
        """Brain mask in the source geometry (HD-BET's agreement where installed).

        Skips an image that shows no whole brain.
        """
        axes = reorientation(np.asarray(data.volume.affine), "RAS")
        ras = axes.apply(np.asarray(data.volume.array, np.float32))
        brain = self.brain_mask(ras)
        mask = axes.invert(brain)
        volume_ml = float(np.count_nonzero(mask)) * data.voxel_volume_ml
        low, high = self.brain_volume_ml
        if not low <= volume_ml <= high:
            raise ContentOutsideDomain(
                f"no whole adult brain: mask of {volume_ml:.0f} mL outside {low:g}-{high:g} mL"
            )
        opinions = {}
        if self.second_opinion is not None:
            spacing = axes.spacing(tuple(float(s) for s in data.volume.spacing))
            other = self.second_opinion.mask(ras, spacing)
            opinions[BRAIN.tracking_id] = SecondOpinion(
                model=f"HD-BET {HDBET_VERSION} fold 0",
                dice=dice(brain, other),
                volume_ml=float(np.count_nonzero(other)) * data.voxel_volume_ml,
                review_below=self.review_below,
            )
        return SegmentationResult(segments=[BRAIN], masks=[mask], second_opinions=opinions)


def _load(path: Path, device: torch.device) -> torch.nn.Module:
    """A TorchScript network on ``device`` in eval mode."""
    return torch.jit.load(str(path), map_location="cpu").to(device).eval()
