"""Load one series as pipeline input: a volume, or its projection images one by one.

* Single-frame CT or MR slices: the volume is built by
  :func:`highdicom.get_volume_from_series`, which sorts the slices along the
  slice axis and applies the modality LUT (rescale slope and intercept), so
  CT arrays are in HU.  Its axes are ``(slice, row, column)`` and
  right-handed: for an axial series with the usual orientation ``[1, 0, 0,
  0, 1, 0]`` slice 0 is the most *superior* slice.  Use ``volume.affine`` to
  get patient coordinates; never assume a direction.  A gantry-tilted
  (sheared) stack or one with variable slice spacing is resampled onto an
  orthogonal grid and keeps its source frames (:mod:`pipelines.stack`).
* One enhanced multi-frame CT or MR instance: read through highdicom's
  :class:`highdicom.Image` (per-frame functional groups included).
* Projection radiographs (CR, DX): each image of the series is analysed on
  its own (``PipelineInput.images``).
"""

from __future__ import annotations

import os
from collections import Counter
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
from pipelines.header import functional_value, pixel_spacing
from pipelines.stack import resample_stack

__all__ = [
    "MIN_SLICES",
    "ORIENTATION_TOL",
    "add_companions",
    "load_input",
    "load_multiframe",
    "load_projection",
    "load_series",
    "resample_onto",
]

#: Fewest slices accepted as a volume.
MIN_SLICES = 3
#: Slices whose direction cosines agree to ``1 - cos(angle) <= ORIENTATION_TOL`` (about
#: 0.08 degrees) count as one orientation; absorbs rounding in ImageOrientationPatient.
ORIENTATION_TOL = 1e-6

_IMAGE_ORIENTATION = 0x0020_0037
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GEOMETRY_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")

Source = str | os.PathLike[str] | pydicom.Dataset


def _read(items: Iterable[Source]) -> list[pydicom.Dataset]:
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


def _as_written(values: Iterable[object]) -> str:
    """A multi-valued attribute as DICOM writes it: ``0.000\\0.000``."""
    return "\\".join(str(value) for value in values)


def _frame_count(ds: pydicom.Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def _unit_cosines(ds: pydicom.Dataset) -> np.ndarray:
    """Row and column direction cosines of ``ds`` as unit vectors, shape ``(2, 3)``."""
    cosines = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    return cosines / np.linalg.norm(cosines, axis=1, keepdims=True)


def _check_shared_uids(datasets: Sequence[pydicom.Dataset]) -> None:
    """Every instance names the same series and frame of reference; the reason names the gap."""
    for keyword in ("SeriesInstanceUID", "FrameOfReferenceUID"):
        missing = sum(1 for ds in datasets if not str(ds.get(keyword, "") or ""))
        if missing:
            raise PipelineError(
                f"{missing} of {len(datasets)} instance(s) have no {keyword}: "
                "their slices cannot be placed in one patient coordinate system"
                if keyword == "FrameOfReferenceUID"
                else f"{missing} of {len(datasets)} instance(s) have no {keyword}"
            )
        values = {str(ds.get(keyword)) for ds in datasets}
        if len(values) > 1:
            raise PipelineError(
                f"instances do not share one {keyword}: {len(values)} different values"
            )


def _check(datasets: Sequence[pydicom.Dataset]) -> None:
    """Reject what highdicom would either refuse obscurely or silently accept."""
    if len(datasets) < MIN_SLICES:
        raise PipelineError(
            f"series has {len(datasets)} slice(s); at least {MIN_SLICES} are needed for a volume"
        )
    _check_shared_uids(datasets)
    for ds in datasets:
        sop = ds.get("SOPInstanceUID", "?")
        if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
            raise PipelineError(f"instance {sop} has no pixel data")
        missing = [keyword for keyword in _GEOMETRY_KEYWORDS if keyword not in ds]
        if missing:
            raise PipelineError(f"instance {sop} lacks {', '.join(missing)}")
        if pixel_spacing(ds) != tuple(float(v) for v in ds.PixelSpacing):
            raise PipelineError(
                f"instance {sop} has PixelSpacing {_as_written(ds.PixelSpacing)}: no in-plane size"
            )
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


def _harmonised(datasets: Sequence[pydicom.Dataset]) -> list[pydicom.Dataset]:
    """The datasets with one ImageOrientationPatient string, the series' most common one.

    The loader accepts orientations within :data:`ORIENTATION_TOL` (a GE 3D
    T1 carries 32 strings that differ by at most 3.3e-8); highdicom's
    Segmentation demands identical strings from its source images.  Slices
    that differ get a shallow copy carrying the common string (the one the
    volume's affine is built from); the datasets given are never modified.
    """
    counts = Counter(tuple(ds.ImageOrientationPatient) for ds in datasets)
    if len(counts) == 1:
        return list(datasets)
    common = list(counts.most_common(1)[0][0])
    harmonised = []
    for ds in datasets:
        if list(ds.ImageOrientationPatient) != common:
            copy = pydicom.Dataset(dict(ds.items()))
            if hasattr(ds, "file_meta"):
                copy.file_meta = ds.file_meta
            copy.add_new(_IMAGE_ORIENTATION, "DS", common)  # a new element: ds keeps its own
            ds = copy
        harmonised.append(ds)
    return harmonised


def _stack_problem(datasets: Sequence[pydicom.Dataset]) -> str | None:
    """Why the slice positions cannot be resampled into a volume; None when they can.

    Gantry tilt (slices shifted in-plane as they step) and variable spacing
    (the pitch changes between runs of slices) are resampled; duplicate
    positions and a gap that is a multiple of equal gaps on both sides (a
    missing slice) are refused.
    """
    normal = get_normal_vector(datasets[0].ImageOrientationPatient)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], float)
    gaps = np.diff(np.sort(positions @ normal))
    if np.any(np.isclose(gaps, 0.0, atol=1e-3)):
        return "duplicate slice positions"
    for before, gap, after in zip(gaps, gaps[1:], gaps[2:], strict=False):
        if np.isclose(before, after, rtol=1e-2) and gap > 1.5 * before:
            return (
                f"irregular slice spacing ({gaps.min():.3g} to {gaps.max():.3g} mm): a "
                f"{gap:.3g} mm gap between {before:.3g} mm gaps (missing slices?)"
            )
    return None


def _values(datasets: Sequence[pydicom.Dataset]) -> np.ndarray:
    """Every slice's pixels after the modality LUT, ``(instance, row, column)`` float32."""
    return np.stack([apply_modality_lut(ds.pixel_array, ds).astype(np.float32) for ds in datasets])


def _series_input(
    items: Sequence[Source], datasets: list[pydicom.Dataset], keep_pixel_data: bool
) -> PipelineInput:
    """The pipeline input of the single-frame slices ``datasets`` read from ``items``."""
    _check(datasets)
    datasets = _harmonised(datasets)
    frames = None
    try:
        try:
            volume = fast_volume(datasets, ORIENTATION_TOL) or hd.get_volume_from_series(
                datasets, dtype=np.float32, orientation_tol=ORIENTATION_TOL
            )
        except ValueError as exc:
            if "regularly-spaced" not in str(exc):
                raise
            problem = _stack_problem(datasets)
            if problem is not None:
                raise PipelineError(
                    f"cannot build a volume from the series: not a regular volume: {problem}"
                ) from exc
            volume, frames = resample_stack(datasets, _values(datasets))
    except ValueError as exc:
        raise PipelineError(f"cannot build a volume from the series: {exc}") from exc
    except (AttributeError, TypeError, NotImplementedError, RuntimeError) as exc:
        raise PipelineError(f"cannot decode series: {type(exc).__name__}: {exc}") from exc
    if not keep_pixel_data:
        for item, ds in zip(items, datasets, strict=True):
            if not isinstance(item, pydicom.Dataset) and "PixelData" in ds:
                del ds.PixelData
    return PipelineInput(volume=volume, datasets=datasets, frames=frames)


def load_series(
    paths_or_datasets: Iterable[Source], *, keep_pixel_data: bool = False
) -> PipelineInput:
    """Build the pipeline input of one single-frame series (or one enhanced multi-frame instance).

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
        datasets (headers, one ImageOrientationPatient string).  A tilted or
        variably spaced stack comes resampled, with its source ``frames``.

    Raises
    ------
    PipelineError
        Unreadable files, fewer than :data:`MIN_SLICES` slices, missing pixel
        data, mixed series or frame of reference, or inconsistent geometry
        (orientation, pixel spacing, matrix size, duplicate or missing slices).
    """
    items = list(paths_or_datasets)
    datasets = _read(items)
    if len(datasets) == 1 and _frame_count(datasets[0]) > 1:
        return load_multiframe(datasets[0])
    multiframe = [ds for ds in datasets if _frame_count(ds) > 1]
    if multiframe:
        raise PipelineError(
            f"instance {multiframe[0].get('SOPInstanceUID', '?')} holds "
            f"{_frame_count(multiframe[0])} frames among {len(datasets)} instances: a series "
            "is either one enhanced multi-frame instance or single-frame slices"
        )
    return _series_input(items, datasets, keep_pixel_data)


def load_multiframe(dataset: pydicom.Dataset) -> PipelineInput:
    """Build the pipeline input of one enhanced multi-frame CT or MR instance.

    highdicom reads the per-frame functional groups (plane position,
    orientation, pixel measures, pixel value transformation) and sorts the
    frames into a regular volume; result SEGs then reference source *frames*.

    Raises
    ------
    PipelineError
        No functional groups (a cine or projection multi-frame), no frame of
        reference, or frames that do not form a regular volume.
    """
    sop = dataset.get("SOPInstanceUID", "?")
    frames = _frame_count(dataset)
    if "PerFrameFunctionalGroupsSequence" not in dataset:
        raise PipelineError(
            f"instance {sop} ({dataset.get('Modality', '?')}) holds {frames} frames without "
            "per-frame functional groups (no plane position per frame): not a volume"
        )
    if not dataset.get("FrameOfReferenceUID"):
        raise PipelineError(f"enhanced multi-frame instance {sop} has no FrameOfReferenceUID")
    if functional_value(dataset, "PlanePositionSequence", "ImagePositionPatient") is None:
        raise PipelineError(
            f"enhanced multi-frame instance {sop} has no Plane Position (Patient) per frame"
        )
    try:
        image = hd.Image.from_dataset(dataset, copy=False)
        volume = image.get_volume(dtype=np.float32)
    except (ValueError, RuntimeError, AttributeError, KeyError) as exc:
        raise PipelineError(
            f"cannot build a volume from enhanced multi-frame instance {sop} ({frames} frames): "
            f"{exc}"
        ) from exc
    if volume.spatial_shape[0] < MIN_SLICES:
        raise PipelineError(
            f"enhanced multi-frame instance {sop} has {volume.spatial_shape[0]} slice(s); "
            f"at least {MIN_SLICES} are needed for a volume"
        )
    return PipelineInput(volume=volume, datasets=[dataset])


def load_projection(paths_or_datasets: Iterable[Source]) -> PipelineInput:
    """Build the pipeline input of one projection radiograph (CR, DX: no patient geometry).

    The image becomes a one-slice volume ``(1, rows, columns)`` in stored
    values after the modality LUT, inverted for MONOCHROME1 so that higher
    always means more attenuation.  Its affine only carries the pixel
    spacing (:func:`pipelines.header.pixel_spacing`: Pixel Spacing, else
    Imager Pixel Spacing, else the detector's): a radiograph has no patient
    coordinates, so results locate findings in image pixels of the source
    image (SCOORD), never in patient space.  Without any positive spacing
    (real files carry ``0\\0``) the affine uses 1 mm and ``unknown_spacing``
    says why: a classifier still runs, pipelines that measure in mm do not.

    Raises
    ------
    PipelineError
        Not exactly one instance, multi-frame, no or unreadable pixel data.
    """
    datasets = _read(list(paths_or_datasets))
    if len(datasets) != 1:
        raise PipelineError(f"expected one projection image, got {len(datasets)} instances")
    ds = datasets[0]
    sop = ds.get("SOPInstanceUID", "?")
    if _frame_count(ds) > 1:
        raise PipelineError(
            f"instance {sop} is a multi-frame projection ({_frame_count(ds)} frames, e.g. a "
            "cine); only single radiographs are analysed"
        )
    try:
        pixels = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
    except (AttributeError, ValueError, TypeError, NotImplementedError, RuntimeError) as exc:
        raise PipelineError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim != 2:
        raise PipelineError(f"expected a greyscale image, got pixel shape {pixels.shape}")
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        pixels = pixels.max() - pixels
    spacing = pixel_spacing(ds)
    unknown = None
    if spacing is None:
        given = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        unknown = (
            f"image {sop} has no pixel size: "
            + (f"PixelSpacing {_as_written(given)}" if given else "no PixelSpacing")
            + " and no ImagerPixelSpacing or DetectorElementSpacing"
        )
        spacing = (1.0, 1.0)
    affine = np.diag([1.0, spacing[0], spacing[1], 1.0])
    volume = hd.Volume(pixels[None], affine, coordinate_system="PATIENT")
    return PipelineInput(volume=volume, datasets=datasets, unknown_spacing=unknown)


def _is_projection(ds: pydicom.Dataset) -> bool:
    """A single-frame image without patient geometry (a CR or DX radiograph)."""
    return "ImagePositionPatient" not in ds and _frame_count(ds) == 1


def load_input(paths: Sequence[str | os.PathLike[str]]) -> PipelineInput:
    """The input of one series: its volume, or its projection images one by one.

    A series of radiographs (a PA and a lateral) becomes one input whose
    ``images`` are the single images in InstanceNumber order (each is
    analysed on its own, :func:`pipelines.projections.run_pipeline`); one
    enhanced multi-frame instance is read by :func:`load_multiframe`;
    anything else is a single-frame series (:func:`load_series`).

    Parameters
    ----------
    paths:
        Part 10 files of one series.
    """
    datasets = _read(paths)
    if datasets and all(_is_projection(ds) for ds in datasets):
        ordered = sorted(datasets, key=lambda ds: int(ds.get("InstanceNumber") or 0))
        images = [load_projection([ds]) for ds in ordered]
        if len(images) == 1:
            return images[0]
        reasons = [image.unknown_spacing for image in images if image.unknown_spacing]
        return PipelineInput(
            volume=images[0].volume,
            datasets=ordered,
            unknown_spacing="; ".join(reasons) or None,
            images=images,
        )
    if len(datasets) == 1 and _frame_count(datasets[0]) > 1:
        data = load_multiframe(datasets[0])
        del data.datasets[0].PixelData  # read here; results need the header only
        return data
    if any(_frame_count(ds) > 1 for ds in datasets):
        return load_series(datasets)  # refuses, naming the multi-frame instance
    return _series_input(list(paths), datasets, keep_pixel_data=False)


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
