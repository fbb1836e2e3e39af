"""The T1-weighted head MR domain of ``mr-brain``: what it accepts and why it refuses."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from pipelines.mr_brain.domain import T1HeadDomain, t1_head_reasons


def _header(**tags: object) -> Dataset:
    dataset = Dataset()
    dataset.Modality = "MR"
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    dataset.SeriesDescription = "t1_mprage_sag"
    for keyword, value in tags.items():
        setattr(dataset, keyword, value)
    return dataset


MPRAGE = {
    "ScanningSequence": ["GR", "IR"],
    "SequenceVariant": ["SK", "SP", "MP"],
    "MRAcquisitionType": "3D",
    "EchoTime": 2.3,
    "RepetitionTime": 2300,
    "InversionTime": 900,
    "BodyPartExamined": "BRAIN",
}


@pytest.mark.parametrize(
    "tags",
    [
        MPRAGE,
        {
            "ScanningSequence": "GR",
            "MRAcquisitionType": "2D",
            "EchoTime": 2.46,
            "RepetitionTime": 300,
            "BodyPartExamined": "HEAD",
        },
        {
            "ScanningSequence": "SE",
            "MRAcquisitionType": "2D",
            "EchoTime": 12,
            "RepetitionTime": 550,
        },
        {"SeriesDescription": "anat-T1w", "ImageType": ["DERIVED", "SECONDARY"]},
    ],
    ids=["3d-mprage", "2d-flash", "2d-spin-echo", "converted-without-sequence-tags"],
)
def test_t1_weighted_head_images_are_accepted(tags: dict[str, object]) -> None:
    assert t1_head_reasons(_header(**tags)) == []


@pytest.mark.parametrize(
    ("tags", "reason"),
    [
        ({**MPRAGE, "EchoTime": 95, "InversionTime": 0, "RepetitionTime": 4000}, "echo time 95 ms"),
        ({**MPRAGE, "InversionTime": 2500, "RepetitionTime": 9000, "EchoTime": 90}, "FLAIR-like"),
        ({**MPRAGE, "InversionTime": 150}, "STIR-like"),
        (
            {**MPRAGE, "InversionTime": 0, "ScanningSequence": "GR", "RepetitionTime": 2000},
            "repetition time 2000 ms",
        ),
        ({**MPRAGE, "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]}, "not a structural"),
        ({**MPRAGE, "ScanningSequence": ["EP"]}, "echo-planar"),
        ({**MPRAGE, "BodyPartExamined": "KNEE"}, "body part KNEE"),
        ({"SeriesDescription": "T2 FLAIR"}, "T1 weighting unknown"),
        ({"SeriesDescription": "survey"}, "T1 weighting unknown"),
    ],
    ids=[
        "t2",
        "flair",
        "stir",
        "long-tr-gradient-echo",
        "adc",
        "epi",
        "knee",
        "named-flair",
        "unnamed",
    ],
)
def test_other_images_are_refused_with_the_reason(tags: dict[str, object], reason: str) -> None:
    reasons = t1_head_reasons(_header(**tags))
    assert any(reason in item for item in reasons), reasons


def test_the_domain_adds_the_generic_bounds() -> None:
    domain = T1HeadDomain(modalities=frozenset({"MR"}), slice_thickness_mm=(0.4, 6.0))
    ct = _header(**MPRAGE, SliceThickness=1.0)
    ct.Modality = "CT"
    assert domain.violations([ct]) == ["modality CT not in ['MR']"]
    assert domain.violations([_header(**MPRAGE, SliceThickness=8.0)]) == [
        "slice thickness 8 outside 0.4-6"
    ]
