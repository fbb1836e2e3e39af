"""Pre- and post-processing steps that published models need, one function each.

Each step reproduces what common research code does, so that a model runs on
the node exactly as its authors ran it:

* :func:`reorientation`: the array in a model's axis convention (``RAS`` or
  ``LPS`` canonical, as nibabel's ``as_closest_canonical`` gives, or the
  acquisition order) and the exact inverse back onto the source frames;
* :func:`percentile_range` / :func:`scale_and_standardise`: intensities
  scaled between two quantiles (taken, optionally, on a nearest-neighbour
  down-sample) and z-scored, optionally mapped to a fixed mean and spread;
* :func:`resize`: a fixed-matrix resize with a named interpolation;
* :func:`bbox_with_margin`: a bounding box of a coarse foreground, grown by
  a margin, in the coordinates of a finer grid (a crop stage of a cascade);
* :func:`largest_component` and :func:`fill_holes`: mask clean-up;
* :func:`is_torchscript`: whether a weights file is TorchScript, by content.

Both the declarative ``pipeline.json`` recipe and code pipelines use them.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "AxisConvention",
    "Reorientation",
    "bbox_with_margin",
    "fill_holes",
    "is_torchscript",
    "largest_component",
    "percentile_range",
    "reorientation",
    "resize",
    "scale_and_standardise",
]

#: Array axis order a model was trained in: canonical RAS or LPS, or as acquired.
AxisConvention = Literal["acquisition", "RAS", "LPS"]
#: Interpolations of a fixed-matrix resize (torch's names).
Interpolation = Literal["nearest", "nearest-exact", "trilinear", "bilinear", "area"]

_LPS_TO = {"RAS": np.diag([-1.0, -1.0, 1.0]), "LPS": np.eye(3)}


def _closest_axes(affine: np.ndarray) -> np.ndarray:
    """Per array axis, the closest world axis and its sense (nibabel's ``io_orientation``).

    The rotation part is freed of zooms and shears (polar decomposition),
    then array axes are matched to world axes from the most to the least
    aligned one, so an oblique acquisition gets the same answer as in nibabel.
    """
    rzs = affine[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1
    left, _, right = np.linalg.svd(rzs / zooms, full_matrices=False)
    rotation = left @ right
    orientation = np.zeros((3, 2), dtype=int)
    for axis in np.argsort(np.min(-(rotation**2), axis=0), kind="stable"):
        column = rotation[:, axis]
        world = int(np.argmax(np.abs(column)))
        orientation[axis] = (world, 1 if column[world] > 0 else -1)
        rotation[world, :] = 0
    return orientation


@dataclass(frozen=True)
class Reorientation:
    """Flips and a transpose from the source array to a model's axis convention.

    Only whole-axis flips and permutations: no voxel is resampled, so
    :meth:`invert` maps a model's mask back onto the source frames exactly.

    Attributes
    ----------
    orientation:
        ``(3, 2)``: per source axis, the target axis and ``1`` or ``-1``
        (nibabel's orientation array).
    """

    orientation: tuple[tuple[int, int], ...]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """``array`` (source axes first) in the target convention."""
        for axis, (_, sense) in enumerate(self.orientation):
            if sense == -1:
                array = np.flip(array, axis=axis)
        order = np.argsort([target for target, _ in self.orientation])
        return np.ascontiguousarray(array.transpose(*order, *range(3, array.ndim)))

    def invert(self, array: np.ndarray) -> np.ndarray:
        """``array`` in the target convention back in the source's axis order."""
        targets = [target for target, _ in self.orientation]
        array = array.transpose(*targets, *range(3, array.ndim))
        for axis, (_, sense) in enumerate(self.orientation):
            if sense == -1:
                array = np.flip(array, axis=axis)
        return np.ascontiguousarray(array)

    def spacing(self, spacing: tuple[float, ...]) -> tuple[float, ...]:
        """Voxel spacing of the source axes, in the target axis order."""
        order = np.argsort([target for target, _ in self.orientation])
        return tuple(float(spacing[axis]) for axis in order)


def reorientation(affine_lps: np.ndarray, convention: AxisConvention) -> Reorientation:
    """The flips and transpose bringing an array with ``affine_lps`` into ``convention``.

    Parameters
    ----------
    affine_lps:
        ``4 x 4`` map from array indices to patient coordinates (LPS, mm),
        e.g. ``volume.affine`` of a pipeline input.
    convention:
        ``RAS``: axes 0, 1, 2 grow towards the patient's Right, Anterior,
        Superior (nibabel's canonical); ``LPS``: towards Left, Posterior,
        Superior; ``acquisition``: the source order unchanged.
    """
    if convention == "acquisition":
        return Reorientation(((0, 1), (1, 1), (2, 1)))
    world = np.asarray(affine_lps, float)[:3, :3]
    closest = _closest_axes(_LPS_TO[convention] @ world)
    return Reorientation(tuple((int(target), int(sense)) for target, sense in closest))


def resize_channels(x: torch.Tensor, shape: tuple[int, ...], mode: str) -> torch.Tensor:
    """``x`` ``(channels, *spatial)``: each channel resized to the fixed matrix ``shape``."""
    corners = {"align_corners": False} if mode in ("trilinear", "bilinear") else {}
    return F.interpolate(x[None], size=shape, mode=mode, **corners)[0]


def resize(x: torch.Tensor, shape: tuple[int, ...], mode: Interpolation) -> torch.Tensor:
    """``x`` (spatial axes only) resized to the fixed matrix ``shape``."""
    return resize_channels(x[None], shape, mode)[0]


def percentile_range(
    x: torch.Tensor,
    quantiles: tuple[float, float],
    sample_shape: tuple[int, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Intensities at two quantiles (fractions in ``[0, 1]``), linearly interpolated.

    Parameters
    ----------
    x:
        The volume.
    quantiles:
        E.g. ``(0.005, 0.995)``.
    sample_shape:
        Take the quantiles on a nearest-exact down-sample to this matrix
        (as deepbet does on 128³), which also bounds the cost; None: on ``x``.
    """
    sample = x if sample_shape is None else resize(x, sample_shape, "nearest-exact")
    low, high = (sample.quantile(q) for q in quantiles)
    return low, high


def scale_and_standardise(
    x: torch.Tensor,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    *,
    zscore: bool = True,
    mean: float = 0.0,
    std: float = 1.0,
) -> torch.Tensor:
    """Scale ``[low, high]`` to ``[0, 1]`` with clipping, then z-score to ``mean`` and ``std``.

    With ``mean=0.449, std=0.226`` this is deepbet's ``normalize``; with
    ``zscore=False`` it is the plain clip to ``[0, 1]``.
    """
    x = ((x - low) / (high - low)).clamp(min=0, max=1)
    if not zscore:
        return x
    return std * ((x - x.mean()) / x.std()) + mean


def bbox_with_margin(
    foreground: torch.Tensor,
    shape: tuple[int, ...],
    margin: float,
    threshold: float = 0.02,
) -> tuple[slice, ...]:
    """Bounding box of ``foreground``, grown by ``margin`` per side, on a grid of ``shape``.

    An axis position belongs to the box when the mean of ``foreground``
    over the other axes exceeds ``threshold``; the box is scaled to
    ``shape``, grown by ``margin`` of its size on each side, rounded and
    clipped (deepbet's crop between its two networks).

    Raises
    ------
    ValueError
        Nothing in ``foreground`` reaches the threshold on some axis.
    """
    dims = foreground.ndim
    ranges = [
        torch.where(foreground.mean(tuple(d for d in range(dims) if d != axis)) > threshold)[0]
        for axis in range(dims)
    ]
    if any(r.numel() == 0 for r in ranges):
        raise ValueError("not enough foreground to place a bounding box")
    centre = torch.tensor([(r.max() + 1 + r.min()) / 2 for r in ranges])
    size = torch.tensor([(r.max() + 1) - r.min() for r in ranges])
    scale = torch.tensor(shape) / torch.tensor(foreground.shape)
    centre, size = scale * centre, (1 + 2 * margin * torch.ones(dims)) * (scale * size)
    centre, size = centre.round(), size.round()
    return tuple(
        slice(max(0, int(c - s / 2)), min(n, int(c + s / 2)), 1)
        for c, s, n in zip(centre, size, shape, strict=True)
    )


def largest_component(mask: np.ndarray) -> np.ndarray:
    """``mask`` reduced to its largest 26-connected component (unchanged when empty)."""
    labels, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if count <= 1:
        return mask.astype(bool)
    return labels == int(np.bincount(labels.ravel())[1:].argmax()) + 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every cavity not connected to the border filled (6-connected background)."""
    return ndimage.binary_fill_holes(mask)


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive, by content, whatever its suffix.

    A TorchScript file is a zip holding ``<name>/constants.pkl`` and
    ``<name>/code/``; a ``torch.save`` state dict is a zip with
    ``<name>/data.pkl`` only (or a legacy pickle, not a zip at all).
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(name.endswith("/constants.pkl") for name in names) and any(
        "/code/" in name for name in names
    )
