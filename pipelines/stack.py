"""Slice stacks that are not a regular grid: gantry tilt and variable slice spacing.

A CT acquired with a tilted gantry stores axial-looking slices whose
positions step along the table, not along the slice normal: the stack is
sheared.  Some protocols also change the slice spacing part-way (e.g. thin
slices through the posterior fossa, thicker above).  Neither is a
:class:`highdicom.Volume` (which needs an orthogonal, regular grid), and the
models expect one.

:func:`resample_stack` builds the orthogonal grid the model runs on: the
source's row and column directions and pixel spacing, slices along the
slice normal at the smallest source pitch, extended in-plane to cover every
shifted slice; each grid slice is interpolated (trilinear) from the source
frames at its position.  The source frames themselves are kept as
:class:`SourceFrames`: every result is mapped back onto them
(:meth:`SourceFrames.from_grid`, nearest grid voxel), so a SEG frame lies
exactly on its tilted source image, and volumes are measured on the true
geometry: each frame's pixels times its own slab along the normal
(:attr:`SourceFrames.slab_mm`), the pitch from the positions, never Slice
Thickness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from highdicom.spatial import VOLUME_INDEX_CONVENTION, get_normal_vector
from pydicom import Dataset
from scipy import ndimage

__all__ = ["SourceFrames", "resample_stack"]


@dataclass(frozen=True)
class SourceFrames:
    """The source frames behind a resampled model volume, sorted along the slice normal.

    Parameters
    ----------
    datasets:
        Source instances, one per frame, in slice order.
    array:
        Source values ``(frame, row, column)`` (HU for CT).
    grid_index:
        Per frame, the fractional ``(slice, row, column)`` index in the model
        grid of the frame's first pixel; a frame's pixel ``(r, c)`` lies at
        ``grid_index + (0, r, c)`` (same in-plane axes and spacing).
    slab_mm:
        Per frame, the thickness along the normal that its pixels stand for:
        half the distance to each neighbour (the one gap at either end).
    pixel_area_mm2:
        Area of one pixel.
    """

    datasets: Sequence[Dataset]
    array: np.ndarray
    grid_index: np.ndarray
    slab_mm: np.ndarray
    pixel_area_mm2: float

    def from_grid(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` (model grid) sampled at every source pixel (nearest grid voxel).

        Returns
        -------
        numpy.ndarray
            Boolean ``(frame, row, column)``; pixels outside the grid are False.
        """
        frames, rows, columns = self.array.shape
        out = np.zeros((frames, rows, columns), dtype=bool)
        depth, grid_rows, grid_columns = mask.shape
        for k, (slice_index, row_offset, column_offset) in enumerate(self.grid_index):
            j = round(float(slice_index))
            if not 0 <= j < depth:
                continue
            dr, dc = round(float(row_offset)), round(float(column_offset))
            r0, r1 = max(0, -dr), min(rows, grid_rows - dr)
            c0, c1 = max(0, -dc), min(columns, grid_columns - dc)
            if r0 < r1 and c0 < c1:
                out[k, r0:r1, c0:c1] = mask[j, r0 + dr : r1 + dr, c0 + dc : c1 + dc]
        return out

    def volume_ml(self, frames_mask: np.ndarray) -> float:
        """Volume of a mask on the source frames: pixels x pixel area x each frame's slab."""
        counts = np.count_nonzero(frames_mask.reshape(len(self.slab_mm), -1), axis=1)
        return float(counts @ self.slab_mm) * self.pixel_area_mm2 / 1000.0


def _slabs(distances: np.ndarray) -> np.ndarray:
    """Per frame, half the gap to each neighbour along the normal (the one gap at the ends)."""
    gaps = np.diff(distances)
    before = np.concatenate([gaps[:1], gaps])
    after = np.concatenate([gaps, gaps[-1:]])
    return (before + after) / 2.0


@dataclass(frozen=True)
class _ModelGrid:
    """The orthogonal regular grid around a stack whose frames are sorted along ``normal``.

    In-plane it keeps the frames' directions and pixel spacing, extended so
    every shifted frame lies inside; along the normal it steps by ``pitch``,
    the smallest gap between the frames' ``distances`` (their positions along
    the normal, mm).  ``frame_index`` is :attr:`SourceFrames.grid_index`.
    """

    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray
    row_spacing: float
    column_spacing: float
    distances: np.ndarray
    pitch: float
    shape: tuple[int, int, int]
    origin: np.ndarray
    frame_index: np.ndarray

    @classmethod
    def around(
        cls,
        orientation: Sequence[float],
        normal: np.ndarray,
        pixel_spacing: tuple[float, float],
        positions: np.ndarray,
        frame_shape: tuple[int, int],
    ) -> _ModelGrid:
        """The grid around frames of ``frame_shape`` pixels at ``positions`` (sorted)."""
        row_direction = np.asarray(orientation[:3])  # along a row: the column index grows
        column_direction = np.asarray(orientation[3:])  # down a column: the row index grows
        row_spacing, column_spacing = pixel_spacing
        distances = positions @ normal
        pitch = float(np.diff(distances).min())
        depth = int(np.floor((distances[-1] - distances[0]) / pitch + 1e-6)) + 1
        offsets = positions - positions[0]
        row_shift = offsets @ column_direction / row_spacing
        column_shift = offsets @ row_direction / column_spacing
        top, left = np.floor(row_shift.min()), np.floor(column_shift.min())
        rows, columns = frame_shape
        shape = (
            depth,
            rows + int(np.ceil(row_shift.max() - top)),
            columns + int(np.ceil(column_shift.max() - left)),
        )
        origin = (
            positions[0]
            + top * row_spacing * column_direction
            + left * column_spacing * row_direction
        )
        frame_index = np.stack(
            [(distances - distances[0]) / pitch, row_shift - top, column_shift - left], axis=1
        )
        return cls(
            row_direction=row_direction,
            column_direction=column_direction,
            normal=normal,
            row_spacing=row_spacing,
            column_spacing=column_spacing,
            distances=distances,
            pitch=pitch,
            shape=shape,
            origin=origin,
            frame_index=frame_index,
        )


def _interpolate(array: np.ndarray, positions: np.ndarray, grid: _ModelGrid) -> np.ndarray:
    """The values on ``grid``: each slice trilinear from the frames at its distance.

    ``array`` holds the frames ``(frame, row, column)`` at ``positions``,
    sorted along the normal; outside the stack a voxel takes the minimum value.
    """
    frames = array.shape[0]
    grid_distances = grid.distances[0] + grid.pitch * np.arange(grid.shape[0])
    fraction = np.interp(grid_distances, grid.distances, np.arange(frames, dtype=float))
    out = np.empty(grid.shape, np.float32)
    r, c = np.mgrid[: grid.shape[1], : grid.shape[2]].astype(np.float64)
    background = float(array.min())
    for j, index in enumerate(fraction):
        # where the (interpolated) source plane at this distance has its first pixel
        position = [np.interp(index, np.arange(frames), axis) for axis in positions.T]
        shift = grid.origin + grid.pitch * j * grid.normal - np.asarray(position)
        coordinates = [
            np.full_like(r, index),
            r + shift @ grid.column_direction / grid.row_spacing,
            c + shift @ grid.row_direction / grid.column_spacing,
        ]
        out[j] = ndimage.map_coordinates(array, coordinates, order=1, cval=background)
    return out


def resample_stack(
    datasets: Sequence[Dataset], array: np.ndarray
) -> tuple[hd.Volume, SourceFrames]:
    """The orthogonal regular model grid of a sheared or irregular stack, and its frames.

    Parameters
    ----------
    datasets:
        Single-frame instances sharing orientation, pixel spacing and matrix
        (checked by the loader), with distinct positions along the normal.
    array:
        Their values ``(instance, row, column)`` in the order of ``datasets``.

    Returns
    -------
    tuple
        The model volume (float32, trilinear, outside the stack the minimum
        value) and the source frames sorted along the normal.
    """
    first = datasets[0]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    normal = get_normal_vector(orientation, index_convention=VOLUME_INDEX_CONVENTION)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    positions = np.array([ds.ImagePositionPatient for ds in datasets], float)
    order = np.argsort(positions @ normal)
    positions, array = positions[order], np.asarray(array, np.float32)[order]
    grid = _ModelGrid.around(
        orientation, normal, (row_spacing, column_spacing), positions, array.shape[1:]
    )
    volume = hd.Volume.from_attributes(
        array=_interpolate(array, positions, grid),
        image_position=[float(v) for v in grid.origin],
        image_orientation=orientation,
        pixel_spacing=[row_spacing, column_spacing],
        spacing_between_slices=grid.pitch,
        frame_of_reference_uid=first.FrameOfReferenceUID,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
    )
    frames = SourceFrames(
        datasets=[datasets[i] for i in order],
        array=array,
        grid_index=grid.frame_index,
        slab_mm=_slabs(grid.distances),
        pixel_area_mm2=row_spacing * column_spacing,
    )
    return volume, frames
