"""Load one single-frame series (CT, MR) or one projection image (CR, DX) as pipeline input.

The volume is built by :func:`highdicom.get_volume_from_series`, which sorts
the slices along the slice axis and applies the modality LUT (rescale slope
and intercept), so CT arrays are in HU.  Its axes are ``(slice, row,
column)`` and right-handed: for an axial series with the usual orientation
``[1, 0, 0, 0, 1, 0]`` slice 0 is the most *superior* slice.  Use
``volume.affine`` to get patient coordinates; never assume a direction.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import highdicom as hd
import numpy as np
import pydicom
from highdicom.spatial import get_normal_vector
from pydicom.pixels import apply_modality_lut
from scipy import ndimage

from core.errors import PipelineError
from pipelines.base import PipelineInput
from pipelines.fastload import fast_volume

__all__ = [
    "MIN_SLICES",
    "ORIENTATION_TOL",
    "add_companions",
    "load_input",
    "load_projection",
    "load_series",
    "resample_onto",
]

#: Fewest slices accepted as a volume.
MIN_SLICES = 3
#: Slices whose direction cosines agree to ``1 - cos(angle) <= ORIENTATION_TOL`` (about
#: 0.08 degrees) count as one orientation; absorbs rounding in ImageOrientationPatient.
ORIENTATION_TOL = 1e-6

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GEOMETRY_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


def _read(items: Iterable[str | os.PathLike[str] | pydicom.Dataset]) -> list[pydicom.Dataset]:
    """Datasets as given, files read from disk; any read error is a PipelineError."""
    datasets = []
    for item in items:
        if isinstance(item, pydicom.Dataset):
            datasets.append(item)
            continue
        try:
            datasets.append(pydicom.dcmread(item))
        except Exception as exc:  # pydicom raises many types for broken files
            raise PipelineError(f"cannot read {os.fspath(item)!r}: {exc}") from exc
    return datasets


def _unit_cosines(ds: pydicom.Dataset) -> np.ndarray:
    """Row and column direction cosines of ``ds`` as unit vectors, shape ``(2, 3)``."""
    cosines = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    return cosines / np.linalg.norm(cosines, axis=1, keepdims=True)


def _check(datasets: Sequence[pydicom.Dataset]) -> None:
    """Reject what highdicom would either refuse obscurely or silently accept."""
    if len(datasets) < MIN_SLICES:
        raise PipelineError(
            f"series has {len(datasets)} instance(s); at least {MIN_SLICES} slices are needed"
        )
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(keyword, "")) for ds in datasets}
        if len(values) > 1 or "" in values:
            raise PipelineError(f"instances do not share one {keyword} ({len(values)} values)")
    for ds in datasets:
        sop = ds.get("SOPInstanceUID", "?")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise PipelineError(f"instance {sop} is multi-frame; only single-frame series")
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
            raise PipelineError(f"instance {sop} has no pixel data")
        missing = [keyword for keyword in _GEOMETRY_KEYWORDS if keyword not in ds]
        if missing:
            raise PipelineError(f"instance {sop} lacks {', '.join(missing)}")
    first = datasets[0]
    reference = _unit_cosines(first)
    for ds in datasets:
        if np.any(np.einsum("ij,ij->i", _unit_cosines(ds), reference) < 1.0 - ORIENTATION_TOL):
            raise PipelineError(
                "inconsistent geometry: ImageOrientationPatient differs between slices "
                f"({list(first.ImageOrientationPatient)} vs {list(ds.ImageOrientationPatient)})"
            )
    for keyword in ("Rows", "Columns", "PixelSpacing"):
        values = {tuple(np.atleast_1d(np.asarray(ds.get(keyword), float))) for ds in datasets}
        if len(values) > 1:
            raise PipelineError(
                f"inconsistent geometry: {keyword} differs between slices "
                f"({len(values)} distinct values, e.g. {first.get(keyword)})"
            )


def _spacing_reason(datasets: Sequence[pydicom.Dataset]) -> str:
    """Explain why the slice positions do not form a regular volume."""
    normal = get_normal_vector(datasets[0].ImageOrientationPatient)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], float)
    distances = np.sort(positions @ normal)
    gaps = np.diff(distances)
    if np.any(np.isclose(gaps, 0.0, atol=1e-3)):
        return "duplicate slice positions"
    along = (positions - positions[0]) - np.outer((positions - positions[0]) @ normal, normal)
    if np.abs(along).max() > 1e-2:
        return "slices are not stacked along the slice normal (gantry tilt or shifted slices)"
    return f"irregular slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm; missing slices?)"


def load_series(
    paths_or_datasets: Iterable[str | os.PathLike[str] | pydicom.Dataset],
    *,
    keep_pixel_data: bool = False,
) -> PipelineInput:
    """Build the pipeline input of one single-frame series.

    Parameters
    ----------
    paths_or_datasets:
        Part 10 files and/or already-read datasets of one series, in any
        order.
    keep_pixel_data:
        Keep ``PixelData`` of the files read here (it is dropped by default
        to save memory; datasets passed in are never modified).

    Returns
    -------
    PipelineInput
        ``float32`` volume in real-world units (HU for CT) and the source
        datasets (headers).

    Raises
    ------
    PipelineError
        Unreadable files, fewer than :data:`MIN_SLICES` slices, multi-frame
        instances, missing pixel data, mixed series or inconsistent geometry
        (orientation, pixel spacing, matrix size, irregular slice positions).
    """
    items = list(paths_or_datasets)
    datasets = _read(items)
    _check(datasets)
    try:
        volume = fast_volume(datasets, ORIENTATION_TOL) or hd.get_volume_from_series(
            datasets, dtype=np.float32, orientation_tol=ORIENTATION_TOL
        )
    except ValueError as exc:
        reason = str(exc)
        if "regularly-spaced" in reason:
            reason = f"not a regular volume: {_spacing_reason(datasets)}"
        raise PipelineError(f"cannot build a volume from the series: {reason}") from exc
    except (AttributeError, TypeError, NotImplementedError, RuntimeError) as exc:
        raise PipelineError(f"cannot decode series: {type(exc).__name__}: {exc}") from exc
    if not keep_pixel_data:
        for item, ds in zip(items, datasets, strict=True):
            if not isinstance(item, pydicom.Dataset) and "PixelData" in ds:
                del ds.PixelData
    return PipelineInput(volume=volume, datasets=datasets)


def load_projection(
    paths_or_datasets: Iterable[str | os.PathLike[str] | pydicom.Dataset],
) -> PipelineInput:
    """Build the pipeline input of one projection radiograph (CR, DX: no patient geometry).

    The image becomes a one-slice volume ``(1, rows, columns)`` in stored
    values after the modality LUT, inverted for MONOCHROME1 so that higher
    always means more attenuation.  Its affine only carries the pixel
    spacing (``ImagerPixelSpacing``, else ``PixelSpacing``, else 1 mm): a
    radiograph has no patient coordinates, so results locate findings in
    image pixels of the source image (SCOORD), never in patient space.

    Raises
    ------
    PipelineError
        Not exactly one instance, multi-frame, no or unreadable pixel data.
    """
    datasets = _read(list(paths_or_datasets))
    if len(datasets) != 1:
        raise PipelineError(f"expected one projection image, got {len(datasets)} instances")
    ds = datasets[0]
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise PipelineError("multi-frame projection images are not supported")
    try:
        pixels = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    except (AttributeError, ValueError, TypeError, NotImplementedError, RuntimeError) as exc:
        raise PipelineError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim != 2:
        raise PipelineError(f"expected a greyscale image, got pixel shape {pixels.shape}")
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    spacing = ds.get("ImagerPixelSpacing") or ds.get("PixelSpacing") or (1.0, 1.0)
    affine = np.diag([1.0, float(spacing[0]), float(spacing[1]), 1.0])
    volume = hd.Volume(pixels[None], affine, coordinate_system="PATIENT")
    return PipelineInput(volume=volume, datasets=datasets)


def load_input(paths: Sequence[str | os.PathLike[str]]) -> PipelineInput:
    """A projection image when ``paths`` is one instance without patient geometry, else a series.

    Parameters
    ----------
    paths:
        Part 10 files of one series.
    """
    if len(paths) == 1:
        dataset = _read(paths)[0]
        if "ImagePositionPatient" not in dataset:
            return load_projection([dataset])
    return load_series(paths)


def resample_onto(source: hd.Volume, reference: hd.Volume) -> np.ndarray:
    """``source`` sampled (trilinear) at the voxel centres of ``reference``.

    Both volumes are in patient coordinates: each reference voxel index is
    mapped to LPS by the reference affine and back to a (fractional) source
    index by the inverse source affine.  Outside the source, the source's
    minimum is used (background).

    Returns
    -------
    numpy.ndarray
        float32 array of ``reference.spatial_shape``.
    """
    mapping = np.linalg.inv(np.asarray(source.affine, float)) @ np.asarray(reference.affine, float)
    array = np.asarray(source.array, np.float32)
    return ndimage.affine_transform(
        array,
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=reference.spatial_shape,
        order=1,
        cval=float(array.min()),
    ).astype(np.float32)


def add_companions(
    primary: PipelineInput, companions: Sequence[Sequence[str | os.PathLike[str]]]
) -> PipelineInput:
    """``primary`` with further series of the study resampled onto its grid.

    Parameters
    ----------
    primary:
        The first input series (its grid is the model's input grid).
    companions:
        Files of each further series, in channel order.

    Raises
    ------
    PipelineError
        A companion cannot be loaded, or does not share the primary's
        frame of reference (then no patient-space resampling is meaningful).
    """
    frame = primary.datasets[0].get("FrameOfReferenceUID")
    arrays = []
    for paths in companions:
        series = load_series(paths)
        if series.datasets[0].get("FrameOfReferenceUID") != frame:
            raise PipelineError(
                "input series do not share one frame of reference; cannot resample them together"
            )
        arrays.append(resample_onto(series.volume, primary.volume))
    return PipelineInput(volume=primary.volume, datasets=primary.datasets, companions=arrays)
