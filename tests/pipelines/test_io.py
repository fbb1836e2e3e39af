"""Loading a series into a PipelineInput: sorting, geometry, HU, errors."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest

from core.errors import PipelineError
from pipelines.base import PipelineInput
from pipelines.io import load_series
from pipelines.phantom import PhantomStudy, generate_ct_phantom
from tests.support.stacks import jitter_orientation

SMALL = {"slices": 8, "rows": 40, "columns": 40, "pixel_spacing": 8.0, "slice_thickness": 5.0}


def _hu(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _assert_geometry(data: PipelineInput, datasets: list[pydicom.Dataset]) -> None:
    """Every instance lies at ``affine @ (k, 0, 0)`` and its pixels are ``array[k]``."""
    volume = data.volume
    assert volume.array.shape == (len(datasets), datasets[0].Rows, datasets[0].Columns)
    seen = set()
    for ds in datasets:
        index = volume.inverse_affine @ np.append(np.asarray(ds.ImagePositionPatient, float), 1)
        k = round(index[0])
        np.testing.assert_allclose(index[:3], [k, 0, 0], atol=1e-3)
        np.testing.assert_allclose(volume.array[k], _hu(ds), atol=1e-3)
        seen.add(k)
    assert seen == set(range(len(datasets)))


def test_files_shuffled_are_sorted(phantom: PhantomStudy, phantom_files: list[Path]) -> None:
    data = load_series(phantom_files)
    assert data.volume.array.dtype == np.float32
    assert len(data.datasets) == 64
    assert all("PixelData" not in ds for ds in data.datasets)  # dropped after loading
    assert data.voxel_volume_ml == pytest.approx(2.5**3 / 1000)
    np.testing.assert_allclose(data.volume.spacing, (2.5, 2.5, 2.5))
    _assert_geometry(data, phantom.datasets)
    assert data.volume.array[phantom.labels == 0].mean() < -950  # rescale applied: HU


def test_datasets_are_not_modified(phantom: PhantomStudy) -> None:
    datasets = sorted(phantom.datasets, key=lambda ds: int(ds.InstanceNumber))[:5]
    data = load_series(datasets)
    assert all("PixelData" in ds for ds in data.datasets)
    assert data.datasets[0] is datasets[0]


def test_keep_pixel_data(phantom_files: list[Path]) -> None:
    data = load_series(sorted(phantom_files)[:4], keep_pixel_data=True)
    assert all("PixelData" in ds for ds in data.datasets)


def test_axial_head_first_affine(phantom: PhantomStudy, phantom_input: PipelineInput) -> None:
    """[1,0,0,0,1,0]: slice 0 is the most superior slice; z decreases along the slice axis."""
    affine = phantom_input.volume.affine
    np.testing.assert_allclose(affine[:3, 0], [0, 0, -2.5])
    np.testing.assert_allclose(affine[:3, 1], [0, 2.5, 0])
    np.testing.assert_allclose(affine[:3, 2], [2.5, 0, 0])
    top = max(float(ds.ImagePositionPatient[2]) for ds in phantom.datasets)
    assert affine[2, 3] == pytest.approx(top)


@pytest.mark.parametrize(
    ("orientation", "slice_step"),
    [
        ((1, 0, 0, 0, 1, 0), (0, 0, -5)),
        ((1, 0, 0, 0, -1, 0), (0, 0, 5)),  # slice axis runs feet to head
        ((-1, 0, 0, 0, 1, 0), (0, 0, 5)),
        ((0, 1, 0, 0, 0, -1), (5, 0, 0)),  # sagittal: right to left
    ],
    ids=["z-decreasing", "z-increasing", "mirrored", "sagittal"],
)
def test_affine_follows_orientation(orientation: tuple, slice_step: tuple) -> None:
    study = generate_ct_phantom(**SMALL, image_orientation=orientation, shuffle=True)
    data = load_series(study.datasets)
    np.testing.assert_allclose(data.volume.affine[:3, 0], slice_step, atol=1e-6)
    np.testing.assert_allclose(data.volume.affine[:3, 2], np.array(orientation[:3]) * 8.0)
    _assert_geometry(data, study.datasets)


def test_oblique_series() -> None:
    c, s = np.cos(np.pi / 7), np.sin(np.pi / 7)
    orientation = (c, s, 0.0, 0.0, 0.0, -1.0)  # coronal, rotated about the z axis
    study = generate_ct_phantom(**SMALL, image_orientation=orientation, shuffle=True)
    data = load_series(study.datasets)
    np.testing.assert_allclose(data.volume.spacing, (5.0, 8.0, 8.0), rtol=1e-5)
    _assert_geometry(data, study.datasets)


def _small() -> list[pydicom.Dataset]:
    return copy.deepcopy(generate_ct_phantom(**SMALL).datasets)


@pytest.mark.parametrize("count", [0, 1, 2])
def test_too_few_slices(count: int) -> None:
    with pytest.raises(PipelineError, match="at least 3"):
        load_series(_small()[:count])


def test_missing_pixel_data() -> None:
    datasets = _small()
    del datasets[3].PixelData
    with pytest.raises(PipelineError, match="no pixel data"):
        load_series(datasets)


def test_mixed_orientation() -> None:
    datasets = _small()
    datasets[2].ImageOrientationPatient = [1, 0, 0, 0, 0.9998477, 0.0174524]
    with pytest.raises(PipelineError, match="ImageOrientationPatient"):
        load_series(datasets)


def test_orientation_rounding_is_tolerated() -> None:
    datasets = _small()
    datasets[2].ImageOrientationPatient = [1, 0, 0, 0, 0.99999999, 0.0001]
    data = load_series(datasets)
    assert data.volume.array.shape == (8, 40, 40)


def test_different_matrix_size() -> None:
    datasets = _small()
    other = generate_ct_phantom(**{**SMALL, "rows": 32}).datasets[4]
    datasets[4].Rows, datasets[4].PixelData = other.Rows, other.PixelData
    with pytest.raises(PipelineError, match="Rows"):
        load_series(datasets)


def test_different_pixel_spacing() -> None:
    datasets = _small()
    datasets[1].PixelSpacing = [7.0, 7.0]
    with pytest.raises(PipelineError, match="PixelSpacing"):
        load_series(datasets)


def test_missing_slice_is_irregular_spacing() -> None:
    datasets = _small()
    del datasets[4]
    with pytest.raises(PipelineError, match="irregular slice spacing"):
        load_series(datasets)


def test_duplicate_positions() -> None:
    datasets = _small()
    datasets[5].ImagePositionPatient = datasets[4].ImagePositionPatient
    with pytest.raises(PipelineError, match="duplicate slice positions"):
        load_series(datasets)


def test_sheared_stack_is_resampled_with_its_source_frames() -> None:
    """Slices shifted in-plane as they step (gantry tilt): see test_stack.py for the geometry."""
    datasets = _small()
    for k, ds in enumerate(datasets):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 2.0 * k, z]
    data = load_series(datasets)
    assert data.frames is not None and len(data.frames.datasets) == 8
    assert data.volume.spatial_shape == (8, 40 + 2, 40)  # 14 mm of shift: 2 more rows


def test_near_equal_orientations_are_harmonised() -> None:
    """A GE 3D T1: 32 orientation strings within 3.3e-8 become the series' most common one."""
    datasets = jitter_orientation(generate_ct_phantom(**{**SMALL, "slices": 40}).datasets)
    strings = {tuple(ds.ImageOrientationPatient) for ds in datasets}
    assert len(strings) == 32
    spread = np.ptp(np.array([list(map(float, s)) for s in strings]), axis=0).max()
    assert 3e-8 < spread <= 3.3e-8
    data = load_series(datasets)
    assert len({tuple(ds.ImageOrientationPatient) for ds in data.datasets}) == 1
    assert len({tuple(ds.ImageOrientationPatient) for ds in datasets}) == 32  # not modified
    common = [float(v) for v in data.datasets[0].ImageOrientationPatient]
    np.testing.assert_allclose(data.volume.affine[:3, 2] / 8.0, common[:3], atol=1e-12)


def test_missing_frame_of_reference_is_named() -> None:
    datasets = _small()
    for ds in datasets:
        del ds.FrameOfReferenceUID
    with pytest.raises(PipelineError) as raised:
        load_series(datasets)
    assert str(raised.value) == (
        "8 of 8 instance(s) have no FrameOfReferenceUID: "
        "their slices cannot be placed in one patient coordinate system"
    )


def test_zero_pixel_spacing_in_a_series_is_named() -> None:
    datasets = _small()
    for ds in datasets:
        ds.PixelSpacing = [0.0, 0.0]
    with pytest.raises(PipelineError, match=r"PixelSpacing 0\.0\\0\.0: no in-plane size"):
        load_series(datasets)


def test_mixed_series() -> None:
    datasets = _small()
    datasets[0].SeriesInstanceUID = "1.2.3"
    with pytest.raises(PipelineError, match="SeriesInstanceUID"):
        load_series(datasets)


def test_multiframe_instance() -> None:
    datasets = _small()
    datasets[0].NumberOfFrames = 2
    with pytest.raises(PipelineError, match="holds 2 frames among 8 instances"):
        load_series(datasets)


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not dicom at all")
    with pytest.raises(PipelineError, match="cannot read"):
        load_series([path, *_small()])


def test_truncated_pixel_data() -> None:
    datasets = _small()
    datasets[3].PixelData = datasets[3].PixelData[:100]
    with pytest.raises(PipelineError, match="cannot build a volume"):
        load_series(datasets)
