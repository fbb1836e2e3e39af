"""Validated input domain: each bound, unknown values, and the unbounded default."""

from __future__ import annotations

import pydicom
import pytest

from pipelines.domain import InputDomain, orientation_name


def _ct(**values: object) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.Modality = "CT"
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.KVP = 120
    ds.BodyPartExamined = "CHEST"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


DOMAIN = InputDomain(
    modalities=["ct"],
    pixel_spacing_mm=(0.5, 1.0),
    slice_thickness_mm=(0.5, 1.5),
    kvp=(100, 140),
    contrast=False,
    body_parts=["chest"],
    patient_orientations=["axial"],
)


def test_inside_the_domain() -> None:
    assert DOMAIN.violations([_ct()]) == []
    assert InputDomain().violations([pydicom.Dataset()]) == []


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"Modality": "MR"}, "modality MR not in ['CT']"),
        ({"PixelSpacing": [2.0, 2.0]}, "pixel spacing 2 outside 0.5-1"),
        ({"SliceThickness": 5.0}, "slice thickness 5 outside 0.5-1.5"),
        ({"KVP": 80}, "kVp 80 outside 100-140"),
        ({"BodyPartExamined": "HEAD"}, "body part HEAD not in ['CHEST']"),
        ({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}, "orientation SAGITTAL not in ['AXIAL']"),
        ({"ContrastBolusAgent": "Iodine"}, "acquired with contrast, validated only the other way"),
    ],
)
def test_each_bound_reports_its_reason(values: dict, reason: str) -> None:
    assert DOMAIN.violations([_ct(**values)]) == [reason]


def test_missing_value_is_outside_a_bounded_range() -> None:
    ds = _ct()
    del ds.KVP
    assert DOMAIN.violations([ds]) == ["kVp unknown (validated 100-140)"]


def test_orientation_names() -> None:
    assert orientation_name(_ct(ImageOrientationPatient=[1, 0, 0, 0, 0, -1])) == "CORONAL"
    assert orientation_name(pydicom.Dataset()) is None


def test_missing_body_part_may_be_left_to_the_content() -> None:
    lenient = InputDomain(body_parts=["chest"], body_part_may_be_missing=True)
    ds = _ct()
    del ds.BodyPartExamined
    assert lenient.violations([ds]) == []
    assert DOMAIN.violations([ds]) == ["body part unknown not in ['CHEST']"]
    assert lenient.violations([_ct(BodyPartExamined="BRAIN")]) == [
        "body part BRAIN not in ['CHEST']"
    ]
