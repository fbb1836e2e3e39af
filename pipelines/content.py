"""Checks that an image shows what a pipeline relies on, from its pixels and geometry.

Tags are not enough: Body Part Examined is often missing or wrong, and a
head CT routed to a chest pipeline must not come back with "lungs".  Each
check here looks at the loaded volume (intensities plus the affine, so sizes
are in mm whatever the orientation) and returns the reasons the content is
missing, each naming what was looked for and what was found; an empty list
means the content is there.  A pipeline names the checks it needs
(``content`` in ``pipeline.json``, :attr:`pipelines.base.Pipeline.content`)
and the worker skips a job whose input fails one, before anything is run or
reported.  The functions are public so that a pipeline can also call them
directly (e.g. :func:`head_findings` before brain extraction).

All checks work on a copy of the volume subsampled to about 2 mm voxels:
sizes of bodies and organs are coarse facts, and a 500-slice series is
checked in about a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import highdicom as hd
import numpy as np
from scipy import ndimage

__all__ = [
    "CHECKS",
    "BodyExtent",
    "ContentCheckName",
    "body_extent",
    "check_content",
    "chest_ct_findings",
    "fill_holes",
    "head_findings",
    "largest_components",
    "projection_findings",
]

#: Names of the checks a pipeline can require (``content`` in ``pipeline.json``).
ContentCheckName = Literal["chest-ct", "head", "projection-radiograph"]

#: Voxel pitch (mm) the checks subsample to.
_CHECK_PITCH_MM = 2.0
#: CT voxels above this are body (soft tissue, bone; not air or lung).
BODY_THRESHOLD_HU = -500.0
#: CT voxels below this inside the body are air-density (lung, airway, gas).
AIR_THRESHOLD_HU = -400.0

#: 4-connectivity restricted to the slice plane: filling slice by slice.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def largest_components(mask: np.ndarray, count: int) -> list[np.ndarray]:
    """Masks of the ``count`` largest 6-connected components of ``mask``, largest first."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1][: min(count, n)]
    return [labels == index for index in order if sizes[index] > 0]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill holes in 3D, then in every slice plane (labelling is faster than scipy's fill).

    Background touching a face of the volume (or of a slice) is outside;
    everything else it encloses belongs to the object, so lungs reaching the
    first or last slice are filled too.
    """
    filled = mask.copy()
    for structure, axes in ((None, (0, 1, 2)), (_IN_PLANE, (1, 2))):
        background, _ = ndimage.label(~filled, structure)
        faces = [np.moveaxis(background, axis, 0)[end] for axis in axes for end in (0, -1)]
        outside = np.zeros(background.max() + 1, bool)
        outside[np.concatenate([face.ravel() for face in faces])] = True
        outside[0] = True
        filled |= ~outside[background]
    return filled


class _Subsampled:
    """A volume's array taken every few voxels (about ``_CHECK_PITCH_MM``) and its geometry."""

    def __init__(self, volume: hd.Volume) -> None:
        spacing = np.asarray(volume.spacing, float)
        self.step = np.maximum(1, np.floor(_CHECK_PITCH_MM / spacing)).astype(int)
        array = np.asarray(volume.array)
        if array.ndim != 3:
            raise ValueError(f"expected a single-channel 3D volume, got shape {array.shape}")
        self.array = array[tuple(slice(None, None, int(s)) for s in self.step)]
        self.affine = np.asarray(volume.affine, float) @ np.diag([*self.step, 1.0])
        self.voxel_ml = float(np.prod(spacing * self.step)) / 1000.0


@dataclass(frozen=True)
class BodyExtent:
    """Size of an object in patient space: extents along L-R, A-P and S-I (mm) and its volume.

    Parameters
    ----------
    width_mm, depth_mm, height_mm:
        Extent of the object along patient x (right-left), y
        (anterior-posterior) and z (inferior-superior).
    volume_ml:
        Volume of the object (holes filled).
    """

    width_mm: float
    depth_mm: float
    height_mm: float
    volume_ml: float


def _extent(mask: np.ndarray, affine: np.ndarray, voxel_ml: float) -> BodyExtent:
    """Patient-axis extents of ``mask`` (voxel indices mapped through ``affine``)."""
    points = np.argwhere(mask).astype(float)
    patient = points @ affine[:3, :3].T + affine[:3, 3]
    pitch = np.abs(affine[:3, :3]).max(axis=1)  # one voxel along each patient axis, about
    size = patient.max(axis=0) - patient.min(axis=0) + pitch
    return BodyExtent(float(size[0]), float(size[1]), float(size[2]), len(points) * voxel_ml)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of ``values`` (clipped to their 0.5-99.5th percentiles), 256 bins."""
    low, high = np.percentile(values, (0.5, 99.5))
    if high <= low:
        return float(high)
    counts, edges = np.histogram(np.clip(values, low, high), bins=256, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mean = np.cumsum(counts * centres)
    total, grand = weight[-1], mean[-1]
    below, above = weight[:-1], total - weight[:-1]
    valid = (below > 0) & (above > 0)
    between = np.zeros(len(below))
    mu_low = mean[:-1][valid] / below[valid]
    mu_high = (grand - mean[:-1][valid]) / above[valid]
    between[valid] = below[valid] * above[valid] * (mu_low - mu_high) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def body_extent(volume: hd.Volume, threshold: float | None = None) -> BodyExtent | None:
    """Size of the largest object in ``volume`` (the body, or the head), None if there is none.

    Parameters
    ----------
    volume:
        A 3D volume in any orientation; its affine gives the mm.
    threshold:
        Intensity above which a voxel belongs to the object (CT: -500 HU);
        None: Otsu's threshold of the volume (MR, whose values have no scale).
    """
    sampled = _Subsampled(volume)
    level = _otsu(sampled.array) if threshold is None else threshold
    found = largest_components(sampled.array > level, 1)
    if not found:
        return None
    return _extent(fill_holes(found[0]), sampled.affine, sampled.voxel_ml)


def chest_ct_findings(
    volume: hd.Volume, *, min_width_mm: float = 200.0, min_lung_ml: float = 100.0
) -> list[str]:
    """Why a CT volume (HU) does not show a chest: empty when it does.

    A chest shows a body cross-section of (adult) chest size, at least
    ``min_width_mm`` from right to left (an adult head is about 140-200 mm),
    holding at least ``min_lung_ml`` of air-density lung inside the body:
    the (one or two) largest regions below -400 HU that the body encloses.
    A head CT fails on both counts, a hollow head phantom on the first.

    Parameters
    ----------
    volume:
        CT intensities in HU with their geometry.
    min_width_mm, min_lung_ml:
        Smallest body width and in-body air volume accepted as a chest.
    """
    sampled = _Subsampled(volume)
    found = largest_components(sampled.array > BODY_THRESHOLD_HU, 1)
    if not found:
        return [f"no body in the field of view (no voxel above {BODY_THRESHOLD_HU:g} HU)"]
    body = fill_holes(found[0])
    extent = _extent(body, sampled.affine, sampled.voxel_ml)
    reasons = []
    if extent.width_mm < min_width_mm:
        reasons.append(
            f"no chest-sized body: the body is {extent.width_mm:.0f} mm wide "
            f"(a chest is at least {min_width_mm:g} mm)"
        )
    air = largest_components((sampled.array < AIR_THRESHOLD_HU) & body, 2)
    lung_ml = sum(int(np.count_nonzero(region)) for region in air) * sampled.voxel_ml
    if lung_ml < min_lung_ml:
        reasons.append(
            f"no lungs: {lung_ml:.0f} mL of air-density tissue (< {AIR_THRESHOLD_HU:g} HU) "
            f"inside the body (a chest holds at least {min_lung_ml:g} mL)"
        )
    return reasons


def head_findings(
    volume: hd.Volume,
    *,
    threshold: float | None = None,
    width_mm: tuple[float, float] = (100.0, 220.0),
    depth_mm: tuple[float, float] = (120.0, 260.0),
) -> list[str]:
    """Why a volume does not show a head: empty when its largest object is head-sized.

    A head is about 140-200 mm from right to left and 170-230 mm from front
    to back; the ranges leave room for children and for a field of view that
    cuts the nose or the back of the head.  A trunk (300+ mm wide) or a
    series without any object fails.

    Parameters
    ----------
    volume:
        MR or CT intensities with their geometry.
    threshold:
        Intensity above which a voxel is tissue (CT: -500 HU); None: Otsu's
        threshold (MR).
    width_mm, depth_mm:
        Accepted right-left and anterior-posterior extents.
    """
    extent = body_extent(volume, threshold)
    if extent is None:
        return ["no head: the image holds no object"]
    reasons = []
    for name, size, (low, high) in (
        ("wide", extent.width_mm, width_mm),
        ("deep (front to back)", extent.depth_mm, depth_mm),
    ):
        if not low <= size <= high:
            reasons.append(
                f"no head-sized object: the largest object is {size:.0f} mm {name} "
                f"(a head is {low:g}-{high:g} mm)"
            )
    return reasons


def projection_findings(volume: hd.Volume, *, min_pixels: int = 128) -> list[str]:
    """Why a volume is not a plausible projection radiograph: empty when it is one.

    A radiograph is one image plane of at least ``min_pixels`` in each
    direction whose intensities vary (an exposed detector, not a blank or
    saturated frame).  No mm are needed: a radiograph without a known pixel
    spacing is still one.
    """
    array = np.asarray(volume.array)
    if array.shape[0] != 1:
        return [f"not a projection image: {array.shape[0]} image planes"]
    reasons = []
    rows, columns = array.shape[1:3]
    if min(rows, columns) < min_pixels:
        reasons.append(
            f"not a radiograph: {rows} x {columns} pixels (at least {min_pixels} each way)"
        )
    low, high = np.percentile(array, (1, 99))
    if high <= low:
        reasons.append("no image content: 98% of the pixels have one value")
    return reasons


def _chest_ct(volume: hd.Volume, modality: str) -> list[str]:
    if modality != "CT":
        return [f"a chest CT check needs CT, got {modality or 'no modality'}"]
    return chest_ct_findings(volume)


def _head(volume: hd.Volume, modality: str) -> list[str]:
    return head_findings(volume, threshold=BODY_THRESHOLD_HU if modality == "CT" else None)


def _projection(volume: hd.Volume, modality: str) -> list[str]:
    return projection_findings(volume)


#: Every named check: ``check(volume, modality) -> reasons``.
CHECKS: dict[ContentCheckName, Callable[[hd.Volume, str], list[str]]] = {
    "chest-ct": _chest_ct,
    "head": _head,
    "projection-radiograph": _projection,
}


def check_content(
    names: tuple[ContentCheckName, ...], volume: hd.Volume, modality: str
) -> list[str]:
    """Reasons from every check in ``names`` that ``volume`` fails (empty: all pass).

    Parameters
    ----------
    names:
        Checks to run, in order.
    volume:
        The pipeline's (primary) input volume.
    modality:
        Its Modality, e.g. ``CT``: decides how tissue is told from air.
    """
    reasons = []
    for name in names:
        reasons += CHECKS[name](volume, modality.upper())
    return reasons
