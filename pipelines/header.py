"""Geometry values of an image header, wherever the image's IOD keeps them.

A single-frame CT or MR carries Pixel Spacing, Slice Thickness and Image
Orientation (Patient) at the top level; an enhanced multi-frame image keeps
them in its shared (or first per-frame) functional groups; a projection
radiograph may give its spacing only as Imager Pixel Spacing or as the
detector's element spacing, and real files carry ``0\\0`` where the value is
unknown.  An enhanced image codes its body part in Frame Anatomy and keeps
its kVp in CT X-Ray Details (a legacy-converted one: in the unassigned
converted attributes).  The domain check and the loaders read these values
here, so they agree on what an image's spacing is and on when it is unknown.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from highdicom._standard_utils import get_anatomic_region_map  # pinned highdicom 0.28
from pydicom import Dataset

__all__ = [
    "body_part",
    "functional_value",
    "image_orientation",
    "kvp",
    "pixel_spacing",
    "slice_thickness",
]

#: Where a projection image's spacing may be, best first (calibrated at the patient, then
#: at the detector's front plane, then the detector's own element pitch, then a digitiser's).
_SPACING_KEYWORDS = (
    "PixelSpacing",
    "ImagerPixelSpacing",
    "DetectorElementSpacing",
    "NominalScannedPixelSpacing",
)


def functional_value(dataset: Dataset, sequence: str, keyword: str) -> Any:
    """``keyword`` of the functional group ``sequence`` (shared, else first frame), or None."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = dataset.get(groups) or []
        if items and sequence in items[0] and items[0][sequence].value:
            value = items[0][sequence].value[0].get(keyword)
            if value is not None:
                return value
    return None


def _header_value(dataset: Dataset, sequence: str, keyword: str) -> Any:
    value = dataset.get(keyword)
    return value if value not in (None, "") else functional_value(dataset, sequence, keyword)


def pixel_spacing(dataset: Dataset) -> tuple[float, float] | None:
    """Row and column spacing in mm; None when no attribute gives two positive values.

    Pixel Spacing (top level or Pixel Measures functional group) first; for a
    projection image without it (or with ``0\\0``), Imager Pixel Spacing,
    Detector Element Spacing, then Nominal Scanned Pixel Spacing.
    """
    for keyword in _SPACING_KEYWORDS:
        value = (
            _header_value(dataset, "PixelMeasuresSequence", keyword)
            if keyword == "PixelSpacing"
            else dataset.get(keyword)
        )
        try:
            spacing = tuple(float(v) for v in value) if value else ()
        except (TypeError, ValueError):
            continue
        if len(spacing) == 2 and min(spacing) > 0:
            return spacing[0], spacing[1]
    return None


def slice_thickness(dataset: Dataset) -> float | None:
    """Nominal Slice Thickness in mm (top level or Pixel Measures functional group), or None."""
    value = _header_value(dataset, "PixelMeasuresSequence", "SliceThickness")
    return float(value) if value not in (None, "") else None


def image_orientation(dataset: Dataset) -> list[float] | None:
    """Image Orientation (Patient) (top level or Plane Orientation functional group), or None."""
    value = _header_value(dataset, "PlaneOrientationSequence", "ImageOrientationPatient")
    return [float(v) for v in value] if value else None


def kvp(dataset: Dataset) -> float | None:
    """kVp (top level, CT X-Ray Details or unassigned converted attributes), or None."""
    value = dataset.get("KVP")
    for sequence in ("CTXRayDetailsSequence", "UnassignedSharedConvertedAttributesSequence"):
        if value in (None, ""):
            value = functional_value(dataset, sequence, "KVP")
    return float(value) if value not in (None, "") else None


@cache
def _body_part_terms() -> dict[str, str]:
    """Body Part Examined term of each SNOMED anatomic region code (DICOM PS3.16 Annex L)."""
    terms: dict[str, str] = {}
    for term, (code, _) in get_anatomic_region_map().items():
        terms.setdefault(str(code.value), term)
    return terms


def body_part(dataset: Dataset) -> str | None:
    """Body Part Examined, or the term of an enhanced image's Frame Anatomy region code, or None."""
    value = str(dataset.get("BodyPartExamined") or "").strip()
    if value:
        return value
    region = functional_value(dataset, "FrameAnatomySequence", "AnatomicRegionSequence")
    if region:
        return _body_part_terms().get(str(region[0].get("CodeValue", "")))
    return None
