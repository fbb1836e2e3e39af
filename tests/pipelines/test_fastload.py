"""The fast volume path gives exactly what highdicom gives, or steps aside."""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from pipelines.fastload import fast_volume
from pipelines.io import ORIENTATION_TOL, load_series
from pipelines.phantom import generate_ct_phantom


def _reference(datasets: list) -> hd.Volume:
    return hd.get_volume_from_series(datasets, dtype=np.float32, orientation_tol=ORIENTATION_TOL)


def _assert_same(datasets: list) -> None:
    fast = fast_volume(datasets, ORIENTATION_TOL)
    assert fast is not None
    reference = _reference(datasets)
    assert fast.array.dtype == reference.array.dtype == np.float32
    assert np.array_equal(fast.array, reference.array)
    assert np.array_equal(fast.affine, reference.affine)
    assert fast.frame_of_reference_uid == reference.frame_of_reference_uid
    assert fast.coordinate_system == reference.coordinate_system


@pytest.mark.parametrize(
    "orientation",
    [
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
        (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    ],
)
def test_same_volume_as_highdicom_any_orientation_shuffled(orientation: tuple) -> None:
    study = generate_ct_phantom(
        slices=12, rows=24, columns=20, seed=3, shuffle=True, image_orientation=orientation
    )
    _assert_same(study.datasets)


def test_same_volume_for_signed_pixels_with_unused_high_bits() -> None:
    datasets = copy.deepcopy(generate_ct_phantom(slices=6, rows=16, columns=16, seed=4).datasets)
    rng = np.random.default_rng(0)
    for ds in datasets:
        values = rng.integers(-2048, 2047, size=(16, 16), dtype=np.int16)
        raw = values.view(np.uint16) & np.uint16(0x0FFF)
        raw |= np.uint16(0xA000)  # garbage in the unused high bits
        ds.PixelRepresentation = 1
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.RescaleIntercept = 7
        ds.PixelData = raw.tobytes()
    _assert_same(datasets)


def test_same_volume_for_unsigned_pixels_with_unused_high_bits() -> None:
    datasets = copy.deepcopy(generate_ct_phantom(slices=5, rows=16, columns=16, seed=5).datasets)
    for ds in datasets:
        raw = np.frombuffer(ds.PixelData, dtype="<u2") | np.uint16(0xF000)
        ds.PixelData = raw.tobytes()
    assert datasets[0].BitsStored < 16
    _assert_same(datasets)


@pytest.mark.parametrize(
    "change",
    [
        lambda ds: setattr(ds, "RescaleSlope", 0.5),
        lambda ds: setattr(ds, "RescaleIntercept", -1024.5),
        lambda ds: setattr(ds, "PhotometricInterpretation", "MONOCHROME1"),
        lambda ds: setattr(ds, "PresentationLUTShape", "INVERSE"),
    ],
)
def test_steps_aside_when_not_a_plain_series(change) -> None:
    datasets = copy.deepcopy(generate_ct_phantom(slices=4, rows=8, columns=8, seed=6).datasets)
    change(datasets[2])
    assert fast_volume(datasets, ORIENTATION_TOL) is None


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_go_through_highdicom(syntax: str) -> None:
    study = generate_ct_phantom(slices=4, rows=64, columns=64, seed=8, transfer_syntax_uid=syntax)
    assert fast_volume(study.datasets, ORIENTATION_TOL) is None
    loaded = load_series(study.datasets)
    assert np.array_equal(loaded.volume.array, _reference(study.datasets).array)


def test_irregular_spacing_is_refused_like_highdicom() -> None:
    datasets = copy.deepcopy(generate_ct_phantom(slices=6, rows=8, columns=8, seed=9).datasets)
    del datasets[3]
    with pytest.raises(ValueError, match="regularly-spaced"):
        fast_volume(datasets, ORIENTATION_TOL)
    with pytest.raises(ValueError, match="regularly-spaced"):
        _reference(datasets)
