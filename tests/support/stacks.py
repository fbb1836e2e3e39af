"""Generated CT series reproducing the geometry real scanners send (issue 18's cases).

* :func:`jitter_orientation`: a GE 3D T1's 32 distinct ImageOrientationPatient
  strings that differ by at most 3.3e-8.
* :func:`sphere_series`: slices at any positions (a gantry-tilted stack that
  steps along the table, variable slice spacing) whose pixels show a sphere
  of known volume, sampled at each pixel's true patient position.
* :func:`enhanced_ct`: one enhanced multi-frame CT built from single-frame
  slices by highdicom's legacy converter.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.uid import generate_uid

from pipelines.phantom import generate_ct_phantom

__all__ = ["SPHERE_HU", "enhanced_ct", "jitter_orientation", "sphere_series"]

#: Values inside and outside the sphere of :func:`sphere_series`.
SPHERE_HU = (1000.0, -1000.0)


def jitter_orientation(
    datasets: Sequence[pydicom.Dataset], distinct: int = 32, step: float = 1.03e-9
) -> list[pydicom.Dataset]:
    """Copies of ``datasets`` whose orientation strings differ as the GE 3D T1's did.

    Slice ``k`` gets the orientation with ``(k % distinct) * step`` taken off
    the row cosine's x and the column cosine's y (32 strings, at most
    ``31 * 1.03e-9 = 3.2e-8`` apart: within the loader's tolerance).
    """
    jittered = []
    for k, ds in enumerate(datasets):
        ds = copy.deepcopy(ds)
        delta = (k % distinct) * step
        row = [1.0 - delta, 0.0, 0.0]
        column = [0.0, 1.0 - delta, 0.0]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*row, *column)]
        jittered.append(ds)
    return jittered


def sphere_series(
    positions: np.ndarray,
    orientation: Sequence[float],
    *,
    size: int = 48,
    spacing: float = 2.0,
    radius: float = 25.0,
    slice_thickness: float | None = None,
) -> list[pydicom.Dataset]:
    """CT slices at ``positions`` (ImagePositionPatient, mm) showing a sphere.

    The sphere (``radius`` mm, centred at the mean slice centre) is 1000 HU,
    the rest -1000 HU, each pixel sampled at its own patient position, so
    any stack geometry shows the same object of volume ``4/3 pi r^3``.
    ``slice_thickness`` (default: the phantom's) is only written, never used.
    """
    orientation = np.asarray(orientation, float)
    row_direction, column_direction = orientation[:3], orientation[3:]
    study = generate_ct_phantom(
        slices=len(positions),
        rows=size,
        columns=size,
        pixel_spacing=spacing,
        image_orientation=tuple(orientation),
    )
    r, c = np.mgrid[:size, :size].astype(float)
    in_plane = (r[..., None] * column_direction + c[..., None] * row_direction) * spacing
    centre = np.mean(positions, axis=0) + in_plane[size // 2, size // 2]
    datasets = []
    for ds, position in zip(study.datasets, positions, strict=True):
        points = in_plane + position
        inside = np.linalg.norm(points - centre, axis=-1) <= radius
        hu = np.where(inside, *SPHERE_HU)
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.PixelData = (hu - float(ds.RescaleIntercept)).astype(np.uint16).tobytes()
        if slice_thickness is not None:
            ds.SliceThickness = slice_thickness
        datasets.append(ds)
    return datasets


def enhanced_ct(datasets: Sequence[pydicom.Dataset]) -> hd.legacy.LegacyConvertedEnhancedCTImage:
    """One Legacy Converted Enhanced CT instance holding the slices ``datasets``."""
    first = datasets[0]
    return hd.legacy.LegacyConvertedEnhancedCTImage(
        list(datasets),
        series_instance_uid=generate_uid(entropy_srcs=[first.SeriesInstanceUID, "series"]),
        series_number=int(first.SeriesNumber) + 100,
        sop_instance_uid=generate_uid(entropy_srcs=[first.SeriesInstanceUID, "instance"]),
        instance_number=1,
    )
