"""Running a PyTorch network on a volume or an image: device, loading, pre/post-processing.

Efficiency rules applied here, once for every model pipeline:

* the network is loaded once per worker process (the pipeline instance that
  owns it is cached by :func:`pipelines.registry.load_pipeline`);
* inference runs under :func:`torch.inference_mode`, with automatic mixed
  precision (float16 autocast) on CUDA; on CPU it runs in float32;
* 3D volumes go through MONAI's ``sliding_window_inference`` (configurable
  ROI, overlap and batch), so memory does not grow with the volume;
* the device is CUDA when available unless configured otherwise, CPU
  otherwise (the same weights run on both).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference

from core.errors import ConfigurationError, ContentOutsideDomain, PipelineError
from pipelines.model.config import InputConfig, ModelConfig
from pipelines.model.steps import (
    bbox_with_margin,
    is_torchscript,
    largest_component,
    percentile_range,
    resize_channels,
    scale_and_standardise,
)

__all__ = [
    "inference_context",
    "load_network",
    "normalise",
    "predict_dense",
    "predict_global",
    "resolve_device",
]


def resolve_device(preference: str) -> torch.device:
    """The torch device for ``preference`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    ``auto`` is the first CUDA device when one is visible, else the CPU; an
    explicit CUDA request without CUDA falls back to the CPU too, so a GPU
    worker that lost its GPU still produces (slower) results.
    """
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda" if preference == "auto" else preference)


def _build_architecture(config: ModelConfig) -> torch.nn.Module:
    """The MONAI network a ``.pt`` state dict belongs to."""
    from monai.networks.nets import DenseNet121, UNet

    if config.architecture == "densenet121":
        return DenseNet121(
            spatial_dims=config.input.spatial_dims,
            in_channels=config.input.channels,
            out_channels=config.output_channels,
        )
    if config.architecture == "unet":
        return UNet(
            spatial_dims=config.input.spatial_dims,
            in_channels=config.input.channels,
            out_channels=config.output_channels,
            channels=(16, 32, 64, 128),
            strides=(2, 2, 2),
            num_res_units=2,
        )
    raise ConfigurationError(
        f"{config.name}: a state dict (not TorchScript) needs 'architecture' (densenet121 or unet)"
    )


def load_network(path: Path, config: ModelConfig, device: torch.device) -> torch.nn.Module:
    """Load TorchScript or a state dict onto ``device``, in eval mode.

    TorchScript is recognised by content whatever the file's suffix (published
    TorchScript is often named ``.pt``); anything else is taken for a state
    dict of the configured ``architecture``.

    Raises
    ------
    ConfigurationError
        The file is not loadable as TorchScript / a matching state dict.
    """
    try:
        if not is_torchscript(path):
            network = _build_architecture(config)
            state = torch.load(path, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        else:
            with warnings.catch_warnings():  # TorchScript is what operators bring; not an issue
                warnings.simplefilter("ignore", DeprecationWarning)
                network = torch.jit.load(str(path), map_location="cpu")
    except ConfigurationError:
        raise
    except Exception as exc:  # torch raises RuntimeError, pickle and zip errors
        raise ConfigurationError(f"{config.name}: cannot load {path.name}: {exc}") from exc
    return network.to(device).eval()


@contextlib.contextmanager
def inference_context(device: torch.device) -> Iterator[None]:
    """``torch.inference_mode`` plus float16 autocast on CUDA."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                yield
        else:
            yield


def normalise(array: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Clip to ``window`` and scale to ``[0, 1]`` (float32).

    Without a window each channel (first axis) is scaled between its 0.5th
    and 99.5th percentiles, for intensities without a fixed scale (MR).
    """
    if window is not None:
        low, high = window
        return ((np.clip(array, low, high) - low) / (high - low)).astype(np.float32)
    out = np.empty(array.shape, np.float32)
    for index, channel in enumerate(array):
        low, high = np.percentile(channel, (0.5, 99.5))
        out[index] = (np.clip(channel, low, high) - low) / max(float(high - low), 1e-6)
    return out


def _activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Softmax over channels, sigmoid per channel, or the raw output (float32)."""
    logits = logits.float()
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def _interpolation(spatial_dims: int) -> str:
    return "trilinear" if spatial_dims == 3 else "bilinear"


def _check_channels(output: torch.Tensor, expected: int, name: str) -> None:
    """A PipelineError when the network did not produce the configured channels."""
    if output.ndim < 2 or output.shape[1] != expected:
        raise PipelineError(
            f"{name}: network output has shape {tuple(output.shape)}, "
            f"expected {expected} channels in dimension 1"
        )


def _scaled(x: torch.Tensor, settings: InputConfig, ranges: list[tuple]) -> torch.Tensor:
    """Each channel of ``x`` scaled by its quantile range and z-scored (``normalise``)."""
    recipe = settings.normalise
    assert recipe is not None
    return torch.stack(
        [
            scale_and_standardise(
                channel, low, high, zscore=recipe.zscore, mean=recipe.mean, std=recipe.std
            )
            for channel, (low, high) in zip(x, ranges, strict=True)
        ]
    )


def _crop_box(
    first: torch.nn.Module | None,
    x: torch.Tensor,
    ranges: list[tuple],
    config: ModelConfig,
) -> tuple[slice, ...]:
    """The crop stage's box on the grid of ``x``: a first network's or the foreground's.

    Raises
    ------
    ContentOutsideDomain
        Nothing in the volume to crop to.
    """
    crop = config.input.crop
    assert crop is not None
    spatial = tuple(x.shape[1:])
    try:
        if crop.stage == "foreground":
            low, high = ranges[0]
            foreground = ((x[0] - low) / (high - low)).clamp(0, 1) > crop.threshold
            return bbox_with_margin(foreground.float().cpu(), spatial, crop.margin, threshold=0.0)
        assert first is not None and crop.size is not None
        small = resize_channels(x, crop.size, "nearest-exact")
        with inference_context(x.device):
            output = first(_scaled(small, config.input, ranges)[None])[0, crop.channel].float()
        foreground = largest_component((output > crop.threshold).cpu().numpy())
        return bbox_with_margin(
            torch.from_numpy(foreground.astype(np.float32)), spatial, crop.margin
        )
    except ValueError as exc:
        raise ContentOutsideDomain(f"{config.name}: crop stage found nothing: {exc}") from exc


def _forward(network: torch.nn.Module, x: torch.Tensor, settings: InputConfig) -> torch.Tensor:
    """The network on ``x`` (a batch of one), by sliding window when ``roi_size`` is set."""
    with inference_context(x.device):
        if settings.roi_size is not None:
            return sliding_window_inference(
                x,
                roi_size=settings.roi_size,
                sw_batch_size=settings.sw_batch_size,
                predictor=network,
                overlap=settings.overlap,
                mode="gaussian",
            )
        return network(x)


def predict_dense(
    network: torch.nn.Module,
    channels: np.ndarray,
    spacing: tuple[float, ...],
    config: ModelConfig,
    device: torch.device,
    first: torch.nn.Module | None = None,
) -> np.ndarray:
    """Per-voxel outputs of ``network`` on the original grid.

    Without ``input.normalise``: intensities windowed (or clipped between
    the 0.5th and 99.5th percentiles) to [0, 1], then resampled to the
    model's spacing.  With it: quantile ranges from the whole volume, the
    crop stage if any, the fixed-matrix resize or spacing, then the scaling
    and z-score of the network's input itself (deepbet's order).  The output
    goes back through the same resize onto the crop, and the crop into the
    full grid (background outside it).

    Parameters
    ----------
    channels:
        Input in real-world units, ``(channels, *spatial)``, in the model's axes.
    spacing:
        Spacing of the spatial axes (mm).
    config:
        The model's input handling, activation and output channels.
    first:
        The crop stage's first network (``input.crop.stage`` ``model``).

    Returns
    -------
    numpy.ndarray
        ``(output channels, *spatial)`` float32 after the activation.
    """
    settings: InputConfig = config.input
    spatial = tuple(channels.shape[1:])
    x, ranges = _network_input(channels, settings, device)
    box = _crop_box(first, x, ranges, config) if settings.crop is not None else ()
    x = x[(slice(None), *box)]
    cropped = tuple(x.shape[1:])
    size, mode = _model_matrix(cropped, spacing, settings)
    if size is not None:
        x = resize_channels(x, size, mode)
    if settings.normalise is not None:
        x = _scaled(x, settings, ranges)
    logits = _forward(network, x[None], settings)
    _check_channels(logits, config.output_channels, config.name)
    probabilities = _activate(logits, config.activation)[0]
    if tuple(probabilities.shape[1:]) != cropped:
        probabilities = resize_channels(probabilities, cropped, mode)
    return _uncropped(probabilities, spatial, box, config.activation)


def _network_input(
    channels: np.ndarray, settings: InputConfig, device: torch.device
) -> tuple[torch.Tensor, list[tuple]]:
    """``channels`` as a tensor on ``device``, and with ``normalise`` each channel's quantile range.

    Without ``normalise`` the intensities are windowed to [0, 1] at once;
    with it they stay in real-world units (NaN as 0) and are scaled after the
    resize, by ranges taken from the whole volume.
    """
    recipe = settings.normalise
    if recipe is None:
        return torch.from_numpy(normalise(channels, settings.window)).to(device), []
    x = torch.nan_to_num(torch.from_numpy(np.asarray(channels, np.float32)).to(device))
    fractions = (recipe.percentiles[0] / 100, recipe.percentiles[1] / 100)
    return x, [percentile_range(channel, fractions, recipe.sample_size) for channel in x]


def _model_matrix(
    cropped: tuple[int, ...], spacing: tuple[float, ...], settings: InputConfig
) -> tuple[tuple[int, ...] | None, str]:
    """The matrix the network runs on (None: the crop's own) and the interpolation to and from it.

    A fixed ``resize`` gives the matrix; a model ``spacing`` gives the matrix
    of the crop resampled from ``spacing`` to it.
    """
    mode = (
        settings.resize.interpolation if settings.resize else _interpolation(settings.spatial_dims)
    )
    size = settings.resize.size if settings.resize else None
    if settings.spacing is not None:
        size = tuple(
            max(1, round(n * s / t))
            for n, s, t in zip(cropped, spacing, settings.spacing, strict=True)
        )
    return size, mode


def _uncropped(
    probabilities: torch.Tensor,
    spatial: tuple[int, ...],
    box: tuple[slice, ...],
    activation: str,
) -> np.ndarray:
    """``probabilities`` of the crop ``box`` placed in the full grid of shape ``spatial``.

    Outside the crop every voxel is background: zero, or for a softmax
    output all probability on channel 0.
    """
    if not box:
        return probabilities.cpu().numpy()
    full = torch.zeros((probabilities.shape[0], *spatial), dtype=probabilities.dtype)
    if activation == "softmax":
        full[0] = 1.0
    full[(slice(None), *box)] = probabilities.cpu()
    return full.numpy()


def predict_global(
    network: torch.nn.Module, channels: np.ndarray, config: ModelConfig, device: torch.device
) -> np.ndarray:
    """One output vector for a whole image (classification).

    Parameters
    ----------
    channels:
        ``(channels, *spatial)`` in real-world units; resized to
        ``config.input.size`` when set.

    Returns
    -------
    numpy.ndarray
        ``(output channels,)`` after the activation.
    """
    x = torch.from_numpy(normalise(channels, config.input.window))[None].to(device)
    if config.input.size is not None:
        mode = _interpolation(config.input.spatial_dims)
        x = F.interpolate(x, size=config.input.size, mode=mode, align_corners=False)
    with inference_context(device):
        logits = network(x)
    _check_channels(logits, config.output_channels, config.name)
    return _activate(logits, config.activation)[0].cpu().numpy()
