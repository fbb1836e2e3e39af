"""Load one single-frame series (CT, MR) into a :class:`~pipelines.base.PipelineInput`.

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

from core.errors import PipelineError
from pipelines.base import PipelineInput
from pipelines.fastload import fast_volume

__all__ = ["MIN_SLICES", "ORIENTATION_TOL", "load_series"]

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
