"""The pipeline: the node's steps in the model's axis convention, the mask back on the source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipelines.base import Pipeline, PipelineInput, SegmentationResult, SegmentDefinition
from pipelines.domain import InputDomain
from pipelines.model.steps import fill_holes, largest_component, reorientation
from pipelines.spec import PipelineSpec

BONE = SegmentDefinition(
    label="Bone",
    category=codes.SCT.AnatomicalStructure,
    property_type=Code("272673000", "SCT", "Bone"),
    tracking_id="bone",
)


class ExampleBonePipeline(Pipeline):
    """The largest bright region of a CT, holes filled."""

    domain = InputDomain(modalities=frozenset({"CT"}), slice_thickness_mm=(0.5, 5.0))

    def __init__(self, threshold_hu: float) -> None:
        self.threshold_hu = threshold_hu
        self.parameters = {"threshold_hu": f"{threshold_hu:g}"}

    @classmethod
    def create(cls, spec: PipelineSpec, models_dir: Path | None, device: str = "auto") -> Pipeline:
        """Read the weights once per worker process."""
        weights = json.loads(spec.weight_files()["weights.json"].read_text())
        return cls(float(weights["threshold_hu"]))

    def run(self, data: PipelineInput) -> SegmentationResult:
        """Threshold in RAS order (as a model trained on NIfTI would see it), map back."""
        axes = reorientation(np.asarray(data.volume.affine), "RAS")
        x = axes.apply(np.asarray(data.volume.array))
        mask = fill_holes(largest_component(x > self.threshold_hu))
        return SegmentationResult(segments=[BONE], masks=[axes.invert(mask)])
