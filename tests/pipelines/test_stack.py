"""Gantry-tilted and variably spaced stacks: resampled for the model, results on the source."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.sr.codedict import codes

from core.errors import PipelineError
from pipelines.base import PipelineInput, SegmentationResult, SegmentDefinition, measure_segments
from pipelines.io import load_input, load_series
from tests.support.real_data import real_images
from tests.support.stacks import SPHERE_HU, sphere_series

#: Gantry tilts of the real head CTs of issue 18 (degrees).
TILTS = (-18.5, 16.5, 18.5)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SPHERE_ML = 4 / 3 * np.pi * 25.0**3 / 1000
SEGMENT = SegmentDefinition(
    label="Sphere",
    category=codes.SCT.AnatomicalStructure,
    property_type=codes.SCT.Bone,
    tracking_id="sphere",
)


def _tilted(degrees: float) -> tuple[float, ...]:
    """A tilted head CT's orientation: the image plane tilted about the x axis (Philips)."""
    tilt = np.deg2rad(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt)))


def _tilted_positions(count: int = 40, table_step: float = 2.5) -> np.ndarray:
    """Slices stepping along the table (z), as a tilted gantry stores them."""
    return np.array([[-48.0, -48.0, -50.0 + table_step * k] for k in range(count)])


def _pitch(degrees: float, table_step: float = 2.5) -> float:
    """Distance between tilted slices along their normal."""
    return table_step * float(np.cos(np.deg2rad(degrees)))


def _true_mask(data: PipelineInput) -> np.ndarray:
    """The sphere on the source frames, from the source values themselves."""
    assert data.frames is not None
    return data.frames.array > 0


def _sphere(data: PipelineInput) -> SegmentationResult:
    return SegmentationResult(segments=[SEGMENT], masks=[data.volume.array > 0])


@pytest.mark.parametrize("degrees", TILTS)
def test_tilted_stack_is_resampled_onto_an_orthogonal_grid(degrees: float) -> None:
    data = load_series(sphere_series(_tilted_positions(), _tilted(degrees)))
    assert data.frames is not None and len(data.frames.datasets) == 40
    direction = data.volume.affine[:3, :3] / np.asarray(data.volume.spacing)
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)
    # the pitch along the normal, not the 2.5 mm table step
    assert data.volume.spacing[0] == pytest.approx(_pitch(degrees), rel=1e-5)
    np.testing.assert_allclose(data.frames.slab_mm, _pitch(degrees), rtol=1e-5)
    # the grid still shows the sphere where the source does
    agreement = np.mean(data.frames.from_grid(data.volume.array > 0) == _true_mask(data))
    assert agreement > 0.995


@pytest.mark.parametrize("degrees", TILTS)
def test_tilted_masks_map_back_onto_every_source_frame(degrees: float) -> None:
    """Each source frame sits at an exact grid slice, shifted in-plane by its offset."""
    data = load_series(sphere_series(_tilted_positions(), _tilted(degrees)))
    assert data.frames is not None
    np.testing.assert_allclose(data.frames.grid_index[:, 0], np.arange(40), atol=1e-4)
    for k, ds in enumerate(data.frames.datasets):
        index = data.volume.map_reference_to_indices(
            np.array([ds.ImagePositionPatient], float), round_output=False
        )[0]
        np.testing.assert_allclose(index, data.frames.grid_index[k], atol=1e-4)


@pytest.mark.parametrize("degrees", TILTS)
def test_tilted_volume_is_measured_on_the_true_geometry(degrees: float) -> None:
    data = load_series(sphere_series(_tilted_positions(), _tilted(degrees), slice_thickness=2.5))
    (measurement,) = measure_segments(data, _sphere(data))
    assert measurement.volume_ml == pytest.approx(SPHERE_ML, rel=0.03)
    assert measurement.mean_intensity == pytest.approx(SPHERE_HU[0])
    assert data.frames is not None
    counted = _true_mask(data).sum() * 2.0 * 2.0 * _pitch(degrees) / 1000
    assert measurement.volume_ml == pytest.approx(counted, rel=0.01)


def test_variable_spacing_is_resampled_and_measured_per_slab() -> None:
    distances = np.concatenate([np.arange(12) * 2.5, 27.5 + np.arange(1, 9) * 5.0]) - 40
    positions = np.array([[-48.0, -48.0, z] for z in distances])
    data = load_series(sphere_series(positions, AXIAL))
    assert data.frames is not None
    assert data.volume.spacing[0] == pytest.approx(2.5)
    assert data.volume.spatial_shape[0] == round((distances[-1] - distances[0]) / 2.5) + 1
    np.testing.assert_allclose(sorted(data.frames.slab_mm)[:2], [2.5, 2.5])
    assert max(data.frames.slab_mm) == pytest.approx(5.0)
    (measurement,) = measure_segments(data, _sphere(data))
    assert measurement.volume_ml == pytest.approx(SPHERE_ML, rel=0.04)


def test_tilted_stack_with_variable_spacing() -> None:
    """Tilt +16.5 degrees, 2.5 mm table steps through the posterior fossa, then 5 mm."""
    steps = np.concatenate([np.full(12, 2.5), np.full(8, 5.0)])
    z = -50.0 + np.concatenate([[0.0], np.cumsum(steps)])
    positions = np.array([[-48.0, -48.0, value] for value in z])
    data = load_series(sphere_series(positions, _tilted(16.5)))
    assert data.frames is not None
    assert data.volume.spacing[0] == pytest.approx(_pitch(16.5), rel=1e-5)
    assert max(data.frames.slab_mm) == pytest.approx(_pitch(16.5, 5.0), rel=1e-5)
    (measurement,) = measure_segments(data, _sphere(data))
    assert measurement.volume_ml == pytest.approx(SPHERE_ML, rel=0.04)


def test_a_missing_slice_is_still_refused() -> None:
    positions = np.array([[-48.0, -48.0, 2.5 * k] for k in range(12) if k != 6])
    with pytest.raises(PipelineError, match=r"a 5 mm gap between 2\.5 mm gaps"):
        load_series(sphere_series(positions, AXIAL))


def test_real_gantry_tilted_head_ct() -> None:
    """Philips head phantom, tilt -18.5 degrees, 2.5 mm table steps."""
    files = real_images("ct-head-phantom-gantry-tilt")
    data = load_input(files)
    assert data.frames is not None and len(data.frames.datasets) == len(files)
    tilt = np.deg2rad(float(data.datasets[0].GantryDetectorTilt))
    assert data.volume.spacing[0] == pytest.approx(2.5 * np.cos(tilt), rel=1e-4)
    bone = data.volume.array > 300
    agreement = np.mean(data.frames.from_grid(bone) == (data.frames.array > 300))
    assert agreement > 0.995
    (measurement,) = measure_segments(data, SegmentationResult(segments=[SEGMENT], masks=[bone]))
    mapped = data.frames.from_grid(bone)
    spacing = [float(v) for v in data.datasets[0].PixelSpacing]
    pitch = 2.5 * np.cos(tilt)
    expected = mapped.sum() * spacing[0] * spacing[1] * pitch / 1000
    assert measurement.volume_ml == pytest.approx(expected, rel=1e-6)
    assert measurement.mean_intensity == pytest.approx(data.frames.array[mapped].mean(), rel=1e-6)
