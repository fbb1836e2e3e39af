"""Validated input domain of a pipeline and the check of a study against it.

A model is only known to work on inputs like those it was validated on.
Each pipeline may declare that domain (modality, pixel spacing, slice
thickness, kVp, contrast, body part, patient orientation); the worker checks
the loaded input against it before inference and, per the pipeline's
``domain_policy``, skips the job with the reasons recorded or runs it and
states in the SR that the input was outside the validated domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydicom import Dataset

from core.fields import UpperSet
from pipelines.header import body_part, image_orientation, kvp, pixel_spacing, slice_thickness

__all__ = ["InputDomain", "orientation_name"]


def orientation_name(dataset: Dataset) -> str | None:
    """``AXIAL``, ``CORONAL`` or ``SAGITTAL`` from the slice normal; None without geometry."""
    orientation = image_orientation(dataset)
    if orientation is None:
        return None
    cosines = np.asarray(orientation, float).reshape(2, 3)
    normal = np.abs(np.cross(cosines[0], cosines[1]))
    return ("SAGITTAL", "CORONAL", "AXIAL")[int(np.argmax(normal))]


def _pixel_spacing(dataset: Dataset) -> float | None:
    spacing = pixel_spacing(dataset)
    return min(spacing) if spacing else None


class InputDomain(BaseModel):
    """The inputs a pipeline was validated on; every bound left unset accepts anything.

    Parameters
    ----------
    modalities, body_parts, patient_orientations:
        Accepted values (case-insensitive); orientation is ``AXIAL``,
        ``CORONAL`` or ``SAGITTAL`` of the image plane.
    body_part_may_be_missing:
        Accept a series without Body Part Examined (the tag is often left
        empty); a pipeline that sets it checks the image content instead.
    pixel_spacing_mm, slice_thickness_mm, kvp:
        Inclusive ``[low, high]`` ranges.
    contrast:
        True: contrast-enhanced only (Contrast/Bolus Agent present); False:
        non-contrast only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: UpperSet | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    slice_thickness_mm: tuple[float, float] | None = None
    kvp: tuple[float, float] | None = None
    contrast: bool | None = None
    body_parts: UpperSet | None = None
    body_part_may_be_missing: bool = False
    patient_orientations: UpperSet | None = None

    def violations(self, datasets: Sequence[Dataset], *, spacing_needed: bool = True) -> list[str]:
        """Why the series of ``datasets`` is outside this domain (empty: inside).

        Only the first dataset is inspected: the loader has already checked
        that geometry is consistent across the series.  A value the header
        lacks counts as outside a bounded range (unknown is not validated),
        except an unknown pixel spacing when ``spacing_needed`` is False (a
        classifier resizes the image and measures nothing in mm).
        """
        first = datasets[0]
        reasons = []
        for name, accepted, value in (
            ("modality", self.modalities, first.get("Modality")),
            ("body part", self.body_parts, body_part(first)),
            ("orientation", self.patient_orientations, orientation_name(first)),
        ):
            if accepted is None:
                continue
            if name == "body part" and not value and self.body_part_may_be_missing:
                continue
            if str(value or "").upper() not in accepted:
                reasons.append(f"{name} {value or 'unknown'} not in {sorted(accepted)}")
        for name, bounds, value in (
            ("pixel spacing", self.pixel_spacing_mm, _pixel_spacing(first)),
            ("slice thickness", self.slice_thickness_mm, slice_thickness(first)),
            ("kVp", self.kvp, kvp(first)),
        ):
            if bounds is None:
                continue
            if value is None and name == "pixel spacing" and not spacing_needed:
                continue
            if value is None:
                reasons.append(f"{name} unknown (validated {bounds[0]:g}-{bounds[1]:g})")
            elif not bounds[0] <= value <= bounds[1]:
                reasons.append(f"{name} {value:g} outside {bounds[0]:g}-{bounds[1]:g}")
        if self.contrast is not None:
            enhanced = bool(first.get("ContrastBolusAgent"))
            if enhanced != self.contrast:
                state = "with" if enhanced else "without"
                reasons.append(f"acquired {state} contrast, validated only the other way")
        return reasons
