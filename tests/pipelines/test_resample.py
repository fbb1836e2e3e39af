"""Resampling one series onto another's grid through patient coordinates."""

from __future__ import annotations

import numpy as np

from pipelines.io import resample_onto
from tests.pipelines.conftest import PhantomFactory


def test_fine_series_resampled_onto_a_coarse_grid_matches_it(
    phantom_factory: PhantomFactory,
) -> None:
    coarse_study, coarse = phantom_factory(
        slices=16, rows=64, columns=64, pixel_spacing=5.0, slice_thickness=5.0, seed=9
    )
    _, fine = phantom_factory(
        slices=32, rows=128, columns=128, pixel_spacing=2.5, slice_thickness=2.5, seed=9
    )
    resampled = resample_onto(fine.volume, coarse.volume)
    assert resampled.shape == coarse.volume.spatial_shape
    inside = coarse_study.labels > 0
    difference = np.abs(resampled - coarse.volume.array)[inside]
    assert np.median(difference) < 40  # HU: noise and partial volume only
    lungs = np.isin(coarse_study.labels, (2, 3))
    assert resampled[lungs].mean() < -700 and resampled[coarse_study.labels == 5].mean() > 0


def test_same_grid_is_the_identity(phantom_factory: PhantomFactory) -> None:
    _, data = phantom_factory(slices=8, rows=32, columns=32, pixel_spacing=8.0)
    assert np.allclose(resample_onto(data.volume, data.volume), data.volume.array, atol=1e-3)
