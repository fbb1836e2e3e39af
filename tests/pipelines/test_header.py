"""Header geometry: pixel spacing of radiographs (zero, imager, detector), functional groups."""

from __future__ import annotations

import pydicom
import pytest

from pipelines.header import image_orientation, pixel_spacing, slice_thickness
from pipelines.phantom import generate_ct_phantom
from tests.support.radiograph import make_radiograph
from tests.support.stacks import enhanced_ct


def _radiograph(**attributes: object) -> pydicom.Dataset:
    ds = make_radiograph()
    del ds.ImagerPixelSpacing
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"PixelSpacing": [0.2, 0.25]}, (0.2, 0.25)),
        ({"PixelSpacing": [0.2, 0.2], "ImagerPixelSpacing": [0.3, 0.3]}, (0.2, 0.2)),
        ({"PixelSpacing": ["0.000", "0.000"], "ImagerPixelSpacing": [0.3, 0.3]}, (0.3, 0.3)),
        ({"ImagerPixelSpacing": [0.15, 0.15]}, (0.15, 0.15)),
        (
            {"PixelSpacing": ["0.000", "0.000"], "DetectorElementSpacing": [0.14, 0.14]},
            (0.14, 0.14),
        ),
        ({"NominalScannedPixelSpacing": [0.5, 0.5]}, (0.5, 0.5)),
        ({"PixelSpacing": ["0.000", "0.000"]}, None),
        ({}, None),
    ],
    ids=[
        "pixel",
        "pixel-first",
        "zero-then-imager",
        "imager",
        "detector",
        "scanned",
        "zero",
        "none",
    ],
)
def test_radiograph_pixel_spacing(attributes: dict, expected: tuple | None) -> None:
    assert pixel_spacing(_radiograph(**attributes)) == expected


def test_values_from_functional_groups() -> None:
    slices = generate_ct_phantom(slices=4, rows=16, columns=16, pixel_spacing=3.0).datasets
    enhanced = enhanced_ct(slices)
    assert "PixelSpacing" not in enhanced and "ImageOrientationPatient" not in enhanced
    assert pixel_spacing(enhanced) == (3.0, 3.0)
    assert slice_thickness(enhanced) == 2.5
    assert image_orientation(enhanced) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
