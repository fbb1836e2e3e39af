"""Measurements on a pipeline input: volumes use the slice pitch from positions."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.sr.codedict import codes

from pipelines.base import SegmentationResult, SegmentDefinition, measure_segments
from pipelines.io import load_series
from pipelines.phantom import generate_ct_phantom
from tests.support.real_data import real_images

SEGMENT = SegmentDefinition(
    label="Bright",
    category=codes.SCT.AnatomicalStructure,
    property_type=codes.SCT.Bone,
    tracking_id="bright",
)


def test_volume_uses_the_pitch_not_slice_thickness() -> None:
    """Slices 5 mm apart, Slice Thickness 3 mm (overlapping slices' opposite)."""
    study = generate_ct_phantom(
        slices=10, rows=32, columns=32, pixel_spacing=4.0, slice_thickness=5.0
    )
    for ds in study.datasets:
        ds.SliceThickness = 3.0
    data = load_series(study.datasets)
    mask = np.zeros(data.volume.spatial_shape, bool)
    mask[2:6, 10:20, 10:20] = True  # 400 voxels of 4 x 4 x 5 mm
    (measurement,) = measure_segments(data, SegmentationResult(segments=[SEGMENT], masks=[mask]))
    assert measurement.volume_ml == pytest.approx(400 * 4 * 4 * 5 / 1000)


def test_real_series_whose_thickness_differs_from_its_spacing() -> None:
    """Siemens 2D T1 sagittal: Slice Thickness 4 mm, slices 4.8 mm apart (20 % gap)."""
    data = load_series(real_images("mr-t1-2d-sag-supine"))
    first = data.datasets[0]
    assert float(first.SliceThickness) == pytest.approx(4.0)
    assert data.volume.spacing[0] == pytest.approx(4.8, rel=1e-4)
    mask = data.volume.array > np.percentile(data.volume.array, 90)
    (measurement,) = measure_segments(data, SegmentationResult(segments=[SEGMENT], masks=[mask]))
    row, column = (float(v) for v in first.PixelSpacing)
    assert measurement.volume_ml == pytest.approx(mask.sum() * row * column * 4.8 / 1000, rel=1e-4)
    thickness_based = mask.sum() * row * column * 4.0 / 1000
    assert thickness_based == pytest.approx(measurement.volume_ml * 4.0 / 4.8, rel=1e-4)
