"""A pipeline defined by a model file and its ``pipeline.json``: no code per model.

The same class serves every result kind:

* ``segmentation``: per-voxel class probabilities (softmax) or per-label
  probabilities (sigmoid); each configured segment is the union of its
  class values in the argmax (softmax) or above the threshold (sigmoid).
* ``classification``: one output per class for the whole image; the
  class is called present when its probability reaches the threshold.
* ``detection``: one probability map per finding kind; every connected
  region above the threshold is a finding, scored by its peak probability.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydicom.sr.coding import Code
from scipy import ndimage

from core.errors import ConfigurationError, PipelineError
from pipelines.base import (
    ClassFinding,
    ClassificationResult,
    DetectedFinding,
    DetectionResult,
    Pipeline,
    PipelineInput,
    PipelineResult,
    SegmentationResult,
    SegmentDefinition,
)
from pipelines.model.config import ModelConfig, find_weights, load_model_config, sha256_of
from pipelines.model.inference import load_network, predict_dense, predict_global, resolve_device
from pipelines.model.steps import fill_holes, largest_component, reorientation
from pipelines.spec import PipelineSpec

__all__ = ["ModelPipeline", "check_model"]


def _tracking_id(label: str) -> str:
    """Stable tracking identifier of a label: ``"Left lung"`` becomes ``left-lung``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-") or "finding"


def check_model(config: ModelConfig, network: torch.nn.Module) -> None:
    """Run a zero input through ``network`` and check the output shape against ``config``.

    Raises
    ------
    ConfigurationError
        The network fails on an input of the configured shape, or does not
        produce one channel per configured output.
    """
    settings = config.input
    size = settings.roi_size or settings.size or (32,) * settings.spatial_dims
    device = next(network.parameters(), torch.zeros(0)).device
    x = torch.zeros((1, settings.channels, *size), device=device)
    try:
        with torch.inference_mode():
            output = network(x)
    except Exception as exc:  # a scripted network raises RuntimeError or torch.jit errors
        raise ConfigurationError(
            f"{config.name}: wrong shape: the network fails on an input of shape "
            f"{tuple(x.shape)}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    expected = config.output_channels
    if output.ndim < 2 or output.shape[1] != expected:
        raise ConfigurationError(
            f"{config.name}: wrong shape: output {tuple(output.shape)} for input "
            f"{tuple(x.shape)}, expected {expected} channels (one per configured label value)"
        )
    if config.kind == "classification" and output.ndim != 2:
        raise ConfigurationError(
            f"{config.name}: wrong shape: a classifier must output (batch, classes), "
            f"got {tuple(output.shape)}"
        )


class ModelPipeline(Pipeline):
    """A MONAI/PyTorch model run according to its :class:`ModelConfig`."""

    intensity_unit: ClassVar[Code] = Code("[hnsf'U]", "UCUM", "Hounsfield unit")

    def __init__(self, spec: PipelineSpec, config: ModelConfig, weights: Path, device: str) -> None:
        self.spec = spec
        self.config = config
        self.domain = config.domain
        self.domain_policy = config.domain_policy
        self.content = config.content
        self.demo = config.demo
        self.measures_mm = config.kind != "classification"  # a classifier resizes, measures nothing
        self.weights_sha256 = sha256_of(weights)
        torch_device = resolve_device(device)
        self.device = str(torch_device)
        self._torch_device = torch_device
        self.network = load_network(weights, config, torch_device)
        self.first_network = None
        crop = config.input.crop
        if crop is not None and crop.model is not None:
            first = weights.parent / crop.model
            if not first.is_file():
                raise ConfigurationError(f"{config.name}: missing file: crop model {first}")
            self.first_network = load_network(first, config, torch_device)
        check_model(config, self.network)
        window = config.input.window
        self.parameters = {  # type: ignore[misc]
            "window": f"{window[0]:g}..{window[1]:g}" if window else "percentile 0.5..99.5",
            "threshold": f"{config.threshold:g}",
        }
        if config.inputs:
            self.parameters["inputs"] = ",".join(item.role for item in config.inputs)
        if config.input.roi_size is not None:
            self.parameters["roi_size"] = "x".join(str(n) for n in config.input.roi_size)
            self.parameters["overlap"] = f"{config.input.overlap:g}"
        if config.input.spacing is not None:
            self.parameters["spacing_mm"] = "x".join(f"{s:g}" for s in config.input.spacing)
        self._recipe_parameters(config, weights)
        if config.modalities - {"CT"}:
            self.intensity_unit = Code("1", "UCUM", "no units")  # type: ignore[misc]

    def _recipe_parameters(self, config: ModelConfig, weights: Path) -> None:
        """Record the declarative steps in use (and the crop network's SHA-256) as parameters."""
        settings = config.input
        if settings.axes != "acquisition":
            self.parameters["axes"] = settings.axes
        if settings.normalise is not None:
            low, high = settings.normalise.percentiles
            z = settings.normalise
            self.parameters["window"] = f"percentile {low:g}..{high:g}" + (
                f", z-score {z.mean:g}+-{z.std:g}" if z.zscore else ""
            )
        if settings.resize is not None:
            size = "x".join(str(n) for n in settings.resize.size)
            self.parameters["resize"] = f"{size} {settings.resize.interpolation}"
        if settings.crop is not None:
            self.parameters["crop"] = f"{settings.crop.stage} +{settings.crop.margin:g}"
            if settings.crop.model is not None:
                crop_weights = weights.parent / settings.crop.model
                self.parameters["crop_weights_sha256"] = sha256_of(crop_weights)
        post = [name for name, used in config.postprocess.model_dump().items() if used]
        if post:
            self.parameters["postprocess"] = ",".join(post)

    @classmethod
    def create(cls, spec: PipelineSpec, models_dir: Path | None, device: str = "auto") -> Pipeline:
        """Read the configuration, find and hash the weights, load the network once.

        Raises
        ------
        ConfigurationError
            Invalid configuration, missing weights, unloadable weights or a
            network whose output does not fit the configuration.
        """
        if spec.config_path is None:
            raise ConfigurationError(f"{spec.name}: a model pipeline needs a pipeline.json")
        config = load_model_config(spec.config_path)
        folder = spec.weights_folder(models_dir)
        if folder is None:
            raise ConfigurationError(f"{spec.name}: no models directory configured for its weights")
        return cls(spec, config, find_weights(config, folder), device)

    def _channels(self, data: PipelineInput) -> tuple[np.ndarray, tuple[float, ...]]:
        """Model input ``(channels, *spatial)`` and the spacing of its spatial axes."""
        settings = self.config.input
        given = 1 + len(data.companions)
        if settings.channels != given:
            raise PipelineError(
                f"{self.spec.name} needs {settings.channels} input series; {given} given"
            )
        array = np.stack([data.volume.array, *data.companions])
        spacing = tuple(float(s) for s in data.volume.spacing)
        if settings.spatial_dims == 2:
            if array.shape[1] != 1:
                raise PipelineError(
                    f"{self.spec.name} analyses single images; got {array.shape[1]} slices"
                )
            return array[:, 0], spacing[1:]
        return array, spacing

    def run(self, data: PipelineInput) -> PipelineResult:
        """Pre-process, infer (sliding window / AMP as configured) and post-process."""
        channels, spacing = self._channels(data)
        kind = self.config.kind
        if kind == "classification":
            probabilities = predict_global(self.network, channels, self.config, self._torch_device)
            return self._classes(probabilities)
        axes = reorientation(np.asarray(data.volume.affine), self.config.input.axes)
        if self.config.input.spatial_dims == 3:
            channels = np.stack([axes.apply(channel) for channel in channels])
            spacing = axes.spacing(spacing)
        dense = predict_dense(
            self.network, channels, spacing, self.config, self._torch_device, self.first_network
        )
        if self.config.input.spatial_dims == 2:
            dense = dense[:, None]
        else:
            dense = np.stack([axes.invert(channel) for channel in dense])
        if kind == "segmentation":
            return self._segments(dense)
        return self._detections(dense, data)

    def _segments(self, probabilities: np.ndarray) -> SegmentationResult:
        """One mask per configured segment: union of its classes in the argmax, or thresholded."""
        segments, masks = [], []
        if self.config.activation == "softmax":
            predicted = probabilities.argmax(axis=0)
        for label in self.config.labels:
            segments.append(
                SegmentDefinition(
                    label=label.label,
                    category=label.category_code("segmentation"),
                    property_type=label.code.to_code(),
                    tracking_id=_tracking_id(label.label),
                )
            )
            if self.config.activation == "softmax":
                mask = np.isin(predicted, label.values)
            else:
                mask = (probabilities[label.values] >= self.config.threshold).any(axis=0)
            if self.config.postprocess.largest_component:
                mask = largest_component(mask)
            if self.config.postprocess.fill_holes:
                mask = fill_holes(mask)
            masks.append(mask)
        return SegmentationResult(segments=segments, masks=masks)

    def _classes(self, probabilities: np.ndarray) -> ClassificationResult:
        """Probability and decision at the threshold for every configured class."""
        findings = []
        for label in self.config.labels:
            probability = float(np.clip(probabilities[label.values[0]], 0.0, 1.0))
            findings.append(
                ClassFinding(
                    label=label.label,
                    finding=label.code.to_code(),
                    category=label.category_code("classification"),
                    probability=probability,
                    present=probability >= self.config.threshold,
                )
            )
        return ClassificationResult(findings=findings, threshold=self.config.threshold)

    def _detections(self, probabilities: np.ndarray, data: PipelineInput) -> DetectionResult:
        """Connected regions above the threshold, per finding kind, best score first."""
        spacing = np.asarray(data.volume.spacing, float)
        projection = self.config.input.spatial_dims == 2
        findings = []
        for label in self.config.labels:
            score_map = probabilities[label.values[0]]
            regions, _ = ndimage.label(score_map >= self.config.threshold)
            for index, box in enumerate(ndimage.find_objects(regions), start=1):
                region = regions[box] == index
                centre = ndimage.center_of_mass(region)
                slice_index = box[0].start + round(centre[0])
                in_plane = region[round(centre[0])]
                rows = np.flatnonzero(in_plane.any(axis=1)) + box[1].start
                columns = np.flatnonzero(in_plane.any(axis=0)) + box[2].start
                extent = np.array([s.stop - s.start for s in box], float) * spacing
                findings.append(
                    DetectedFinding(
                        label=label.label,
                        finding=label.code.to_code(),
                        category=label.category_code("detection"),
                        score=float(score_map[box][region].max()),
                        slice_index=int(slice_index),
                        box=(int(rows[0]), int(columns[0]), int(rows[-1]), int(columns[-1])),
                        diameter_mm=float(extent[1:].max() if projection else extent.max()),
                        volume_ml=None if projection else int(region.sum()) * data.voxel_volume_ml,
                    )
                )
        findings.sort(key=lambda finding: -finding.score)
        kinds = [
            (label.label, label.code.to_code(), label.category_code("detection"))
            for label in self.config.labels
        ]
        return DetectionResult(findings=findings, threshold=self.config.threshold, kinds=kinds)
