"""The small configuration file that turns a model file into a pipeline.

An operator drops a folder under the models directory (``AINODE_MODELS_DIR``)
holding ``pipeline.json`` and the weights (``model.ts``, TorchScript), or a
MONAI bundle (``configs/metadata.json`` + ``models/model.ts``) next to a
``pipeline.json`` that names its labels and codes.  Everything the node
needs to pre-process, run and report is declared here and validated when
the configuration is read, so mistakes surface in ``ainode pipelines``
rather than in the middle of a job.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.sr.coding import Code

from core.errors import ConfigurationError
from core.fields import UpperSet
from pipelines.content import ContentCheckName
from pipelines.domain import InputDomain

__all__ = [
    "CONFIG_FILE",
    "CodeConfig",
    "CropConfig",
    "InputConfig",
    "LabelConfig",
    "ModelConfig",
    "NormaliseConfig",
    "PostprocessConfig",
    "ResizeConfig",
    "SeriesInputConfig",
    "find_weights",
    "load_model_config",
    "sha256_of",
]

#: Name of the configuration file in a model folder.
CONFIG_FILE = "pipeline.json"
#: Weights looked for, in this order, when the configuration names none.
_WEIGHT_CANDIDATES = ("model.ts", "models/model.ts", "model.pt", "models/model.pt")
_SCHEMES = {"SCT": re.compile(r"^\d{6,18}$"), "DCM": re.compile(r"^\d{5,6}$")}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeConfig(_Strict):
    """A coded concept ``[value, scheme, meaning]`` (SNOMED CT ``SCT`` or ``DCM``).

    Private schemes (designators starting with ``99``) are accepted as is;
    SCT and DCM values are checked for their form, so a typo in a code is a
    configuration error rather than a wrong report.
    """

    value: str
    scheme: str
    meaning: str

    @model_validator(mode="before")
    @classmethod
    def _from_triple(cls, data: object) -> object:
        if isinstance(data, list | tuple):
            if len(data) != 3:
                raise ValueError(f"a code is [value, scheme, meaning], got {data!r}")
            return {"value": data[0], "scheme": data[1], "meaning": data[2]}
        return data

    @model_validator(mode="after")
    def _known_form(self) -> CodeConfig:
        pattern = _SCHEMES.get(self.scheme)
        if pattern is None and not self.scheme.startswith("99"):
            raise ValueError(
                f"unknown code scheme {self.scheme!r} for {self.meaning!r} "
                "(use SCT, DCM or a private 99... scheme)"
            )
        if pattern is not None and not pattern.match(self.value):
            raise ValueError(f"unknown label code {self.value!r} in scheme {self.scheme}")
        if not self.meaning.strip() or len(self.meaning) > 64:
            raise ValueError(f"code meaning must be 1-64 characters, got {self.meaning!r}")
        return self

    def to_code(self) -> Code:
        """The pydicom :class:`~pydicom.sr.coding.Code`."""
        return Code(self.value, self.scheme, self.meaning)


_ANATOMICAL_STRUCTURE = CodeConfig(value="91723000", scheme="SCT", meaning="Anatomical structure")
_FINDING = CodeConfig(value="404684003", scheme="SCT", meaning="Clinical finding")


class LabelConfig(_Strict):
    """One output of the model: a segment, a class or a kind of detected finding.

    Parameters
    ----------
    values:
        Segmentation: model class indices whose union is this segment
        (e.g. ``[1, 2, 3]`` for an outline containing organs).
        Classification and detection: the output channel, one value.
    label:
        Human-readable name (SegmentLabel, tracking identifier).
    code:
        What it is (segmented property type or finding), e.g.
        ``["44029006", "SCT", "Left lung"]``.
    category:
        Segmented property / finding category.
    """

    values: list[int] = Field(min_length=1)
    label: str = Field(min_length=1, max_length=64)
    code: CodeConfig
    category: CodeConfig | None = None

    def category_code(self, kind: str) -> Code:
        """The category, defaulting to anatomical structure (SEG) or clinical finding."""
        if self.category is not None:
            return self.category.to_code()
        return (_ANATOMICAL_STRUCTURE if kind == "segmentation" else _FINDING).to_code()


class SeriesInputConfig(_Strict):
    """One series of a multi-series input, found in the study by its description and modality.

    Parameters
    ----------
    role:
        Name of the input, e.g. ``t1c``; channels follow the order of ``inputs``.
    series_description:
        Regular expression searched (case-insensitive) in the SeriesDescription.
    modalities:
        Accepted modalities (default: any of the pipeline's).
    """

    role: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    series_description: str | None = None
    modalities: UpperSet | None = None

    @field_validator("series_description")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid series_description regex {value!r}: {exc}") from exc
        return value


class NormaliseConfig(_Strict):
    """Quantile scaling then (optionally) a z-score, as many published models are fed.

    Parameters
    ----------
    percentiles:
        Intensities at these percentiles (of the whole volume) map to 0 and 1,
        with clipping.
    sample_size:
        Take the percentiles on a nearest-exact down-sample to this matrix
        (deepbet: 128³); None: on the full volume.
    zscore, mean, std:
        Then standardise the network input and map it to ``mean`` and ``std``
        (deepbet: 0.449 and 0.226).
    """

    percentiles: tuple[float, float] = (0.5, 99.5)
    sample_size: tuple[int, ...] | None = None
    zscore: bool = False
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> NormaliseConfig:
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}"
            )
        return self


class ResizeConfig(_Strict):
    """Resize the network input to a fixed matrix, and its output back, with one interpolation."""

    size: tuple[int, ...]
    interpolation: Literal["nearest", "nearest-exact", "trilinear", "area"] = "trilinear"


class CropConfig(_Strict):
    """Crop to a foreground or to a first network's bounding box before the main network.

    Parameters
    ----------
    stage:
        ``foreground``: the box of voxels whose scaled intensity (0-1, after
        the quantile scaling) exceeds ``threshold``; ``model``: the box of a
        first network's output channel ``channel`` above ``threshold``, run
        on the volume resized to ``size`` (nearest-exact), its largest
        component kept (a cascade such as deepbet's).
    model:
        The first network's weights file (``stage`` ``model``).
    margin:
        Fraction of the box's size added on each side.
    """

    stage: Literal["foreground", "model"]
    model: str | None = None
    size: tuple[int, ...] | None = None
    channel: int = Field(default=1, ge=0)
    threshold: float = 0.5
    margin: float = Field(default=0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _stage(self) -> CropConfig:
        if self.stage == "model" and (self.model is None or self.size is None):
            raise ValueError("crop stage 'model' needs 'model' (the first network) and 'size'")
        return self


class PostprocessConfig(_Strict):
    """Clean-up of every segment's mask: keep its largest component, fill its holes."""

    largest_component: bool = False
    fill_holes: bool = False


class InputConfig(_Strict):
    """How a volume is turned into the model's input tensor.

    Parameters
    ----------
    channels:
        Input channels the model expects (one per input series).
    spatial_dims:
        3 for volumes, 2 for projection images (CR/DX).
    window:
        Intensities are clipped to ``[low, high]`` and scaled to ``[0, 1]``;
        None (for MR, whose values have no fixed scale): each channel is
        clipped to its 0.5th-99.5th percentiles and scaled to ``[0, 1]``.
    spacing:
        Voxel spacing (mm, volume axes) the model was trained at; the input
        is resampled to it and the output back.  ``None``: no resampling.
    size:
        Classification/detection of 2D images: resize to this size.
    roi_size, overlap, sw_batch_size:
        Sliding-window inference (3D): window size, fractional overlap and
        windows per forward pass.
    axes:
        Axis order the model was trained in: ``acquisition`` (slice, row,
        column, as received), or ``RAS`` / ``LPS`` canonical (flips and a
        transpose, undone exactly on the output).
    normalise:
        Quantile scaling and z-score instead of ``window`` (set ``window`` to null).
    resize:
        A fixed-matrix resize of the network input (instead of ``spacing``).
    crop:
        A crop stage before the network (3D segmentation).
    """

    channels: int = Field(default=1, ge=1)
    spatial_dims: Literal[2, 3] = 3
    window: tuple[float, float] | None
    spacing: tuple[float, ...] | None = None
    size: tuple[int, ...] | None = None
    roi_size: tuple[int, ...] | None = None
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    sw_batch_size: int = Field(default=1, ge=1)
    axes: Literal["acquisition", "RAS", "LPS"] = "acquisition"
    normalise: NormaliseConfig | None = None
    resize: ResizeConfig | None = None
    crop: CropConfig | None = None

    @model_validator(mode="after")
    def _dimensions(self) -> InputConfig:
        if self.window is not None and self.window[0] >= self.window[1]:
            raise ValueError(f"window low must be below high, got {self.window}")
        if self.window is not None and self.normalise is not None:
            raise ValueError("window and normalise exclude each other: set window to null")
        if self.resize is not None and (self.spacing is not None or self.roi_size is not None):
            raise ValueError("resize excludes spacing and roi_size (one input matrix)")
        if (self.crop is not None or self.axes != "acquisition") and self.spatial_dims != 3:
            raise ValueError("crop and axes apply to 3D volumes (spatial_dims 3)")
        sizes = [
            ("resize.size", self.resize and self.resize.size),
            ("normalise.sample_size", self.normalise and self.normalise.sample_size),
            ("crop.size", self.crop and self.crop.size),
        ]
        for name, value in sizes:
            if value and (len(value) != self.spatial_dims or min(value) <= 0):
                raise ValueError(
                    f"{name} must have {self.spatial_dims} positive values, got {value}"
                )
        for name in ("spacing", "size", "roi_size"):
            value = getattr(self, name)
            if value is not None and (len(value) != self.spatial_dims or min(value) <= 0):
                raise ValueError(
                    f"{name} must have {self.spatial_dims} positive values, got {value}"
                )
        return self


class ModelConfig(_Strict):
    """Everything in ``pipeline.json``.

    Parameters
    ----------
    name, version, description:
        Identity of the pipeline (``ainode pipelines``, jobs, result objects).
    kind:
        Result kind: ``segmentation`` (SEG + SR), ``classification`` (SR with
        one finding per class), ``detection`` (SR with one group per finding).
    queue:
        ``gpu`` or ``cpu``.
    modalities:
        Modalities it accepts (routing rules must agree).
    model:
        Weights file relative to the weights folder; found automatically
        (``model.ts``, ``models/model.ts``, ``model.pt``) when omitted.
    architecture:
        For a state dict: the MONAI network it belongs to (``densenet121``,
        ``unet``); TorchScript, recognised by content whatever its suffix,
        needs none.
    inputs:
        Multi-series pipelines: the series needed from a study, one per
        input channel (routing waits for all of them); empty: one series.
    labels:
        Outputs in order (segments, classes or finding kinds).
    threshold:
        Classification: probability at which a class is called present.
        Detection: score above which a region is a finding.
    activation:
        Applied to the network output: ``softmax`` (segmentation classes),
        ``sigmoid`` (independent probabilities) or ``none``.
    postprocess:
        Segmentation masks: keep the largest component, fill holes.
    domain, domain_policy:
        Validated input domain, and what to do outside it: ``skip`` the job
        with the reason recorded, or ``flag`` it in the SR.
    content:
        Image content checks (:mod:`pipelines.content`, e.g. ``chest-ct``,
        ``head``) the input must pass; one that fails always skips the job.
    demo:
        A demonstration model: result descriptions and the SR say so.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    version: str = Field(min_length=1, max_length=16)
    description: str = Field(min_length=1, max_length=200)
    kind: Literal["segmentation", "classification", "detection"]
    queue: Literal["gpu", "cpu"] = "gpu"
    modalities: UpperSet
    model: str | None = None
    architecture: Literal["densenet121", "unet"] | None = None
    input: InputConfig
    inputs: list[SeriesInputConfig] = Field(default_factory=list)
    labels: list[LabelConfig] = Field(min_length=1)
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    activation: Literal["softmax", "sigmoid", "none"] = "softmax"
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    domain: InputDomain = Field(default_factory=InputDomain)
    domain_policy: Literal["skip", "flag"] = "skip"
    content: tuple[ContentCheckName, ...] = ()
    demo: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        tracking = [label.label for label in self.labels]
        if len(set(tracking)) != len(tracking):
            raise ValueError(f"label names must be unique: {tracking}")
        if self.kind != "segmentation" and any(len(label.values) != 1 for label in self.labels):
            raise ValueError(f"each {self.kind} label names exactly one output channel")
        if self.inputs and len(self.inputs) != self.input.channels:
            raise ValueError(
                f"{len(self.inputs)} input series but input.channels is {self.input.channels}"
            )
        roles = [item.role for item in self.inputs]
        if len(set(roles)) != len(roles):
            raise ValueError(f"input roles must be unique: {roles}")
        dense_only = {
            "input.crop": self.input.crop is not None,
            "input.resize": self.input.resize is not None and self.input.spatial_dims == 3,
            "postprocess": self.postprocess != PostprocessConfig(),
        }
        for name, used in dense_only.items():
            if used and self.kind != "segmentation":
                raise ValueError(f"{name} applies to segmentation, not {self.kind}")
        return self

    @property
    def output_channels(self) -> int:
        """Channels the network must produce: the largest label value + 1."""
        return max(value for label in self.labels for value in label.values) + 1


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _bundle_defaults(folder: Path) -> dict[str, object]:
    """Name, version and description from a MONAI bundle's ``configs/metadata.json``."""
    metadata_path = folder / "configs" / "metadata.json"
    if not metadata_path.is_file():
        return {}
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{metadata_path}: not readable JSON: {exc}") from exc
    defaults: dict[str, object] = {}
    if "version" in metadata:
        defaults["version"] = str(metadata["version"])
    if metadata.get("name") or metadata.get("description"):
        defaults["description"] = str(metadata.get("description") or metadata["name"])[:200]
    return defaults


def load_model_config(config_path: Path) -> ModelConfig:
    """Read and validate one ``pipeline.json``.

    Values missing from the file are taken from a MONAI bundle's
    ``configs/metadata.json`` in the same folder (version, description).

    Raises
    ------
    ConfigurationError
        Unreadable file, invalid JSON, or a value that fails validation; the
        message names the file and the offending field.
    """
    try:
        raw = json.loads(config_path.read_text())
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{config_path}: missing file") from exc
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{config_path}: not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{config_path}: expected a JSON object")
    merged = {**_bundle_defaults(config_path.parent), **raw}
    try:
        return ModelConfig.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(file)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigurationError(f"{config_path}: {problems}") from exc


def find_weights(config: ModelConfig, folder: Path) -> Path:
    """The weights file of ``config`` in ``folder``.

    Raises
    ------
    ConfigurationError
        If the named file (or every default candidate) is missing.
    """
    candidates = [config.model] if config.model else list(_WEIGHT_CANDIDATES)
    for candidate in candidates:
        path = folder / candidate
        if path.is_file():
            return path
    raise ConfigurationError(
        f"{config.name}: missing file: no weights {' or '.join(candidates)} in {folder}"
    )
