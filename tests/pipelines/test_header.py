"""Header geometry: pixel spacing of radiographs (zero, imager, detector), functional groups."""

from __future__ import annotations

import pydicom
import pytest

from pipelines.domain import InputDomain
from pipelines.header import (
    body_part,
    image_orientation,
    kvp,
    pixel_spacing,
    slice_thickness,
)
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
    assert "BodyPartExamined" not in enhanced and "KVP" not in enhanced
    assert body_part(enhanced) == "CHEST"  # from Frame Anatomy's SNOMED region code
    assert kvp(enhanced) == 120.0  # from the unassigned converted attributes
    domain = InputDomain(
        modalities=["CT"],
        body_parts=["CHEST"],
        kvp=(100, 140),
        pixel_spacing_mm=(2, 4),
        slice_thickness_mm=(2, 3),
        patient_orientations=["AXIAL"],
    )
    assert domain.violations([enhanced]) == []


def test_kvp_of_an_enhanced_ct_from_its_xray_details() -> None:
    details = pydicom.Dataset()
    details.KVP = 100
    group = pydicom.Dataset()
    group.CTXRayDetailsSequence = [details]
    enhanced = pydicom.Dataset()
    enhanced.SharedFunctionalGroupsSequence = [group]
    assert kvp(enhanced) == 100.0
    assert body_part(enhanced) is None
