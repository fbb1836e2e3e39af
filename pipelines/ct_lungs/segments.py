"""Coded segment definitions produced by the ``ct-lungs`` pipeline.

Codes are SNOMED CT (scheme ``SCT``).  The category is DICOM CID 7150
"Anatomical Structure" (SCT 91723000, as in pydicom's ``codes.SCT``); the
types are "Entire body" (38266002, ``codes.SCT.EntireBody``), "Left lung"
(44029006) and "Right lung" (3341006), which pydicom's dictionary lacks.
"""

from __future__ import annotations

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipelines.base import SegmentDefinition

__all__ = ["ANATOMICAL_STRUCTURE", "BODY", "LEFT_LUNG", "RIGHT_LUNG", "SEGMENTS"]

#: Segmented property category of every segment (CID 7150).
ANATOMICAL_STRUCTURE: Code = codes.SCT.AnatomicalStructure

BODY = SegmentDefinition(
    label="Body",
    category=ANATOMICAL_STRUCTURE,
    property_type=codes.SCT.EntireBody,
    tracking_id="body",
)
LEFT_LUNG = SegmentDefinition(
    label="Left lung",
    category=ANATOMICAL_STRUCTURE,
    property_type=Code("44029006", "SCT", "Left lung"),
    tracking_id="left-lung",
)
RIGHT_LUNG = SegmentDefinition(
    label="Right lung",
    category=ANATOMICAL_STRUCTURE,
    property_type=Code("3341006", "SCT", "Right lung"),
    tracking_id="right-lung",
)

#: Segments in output order (segment numbers 1, 2, 3).
SEGMENTS: tuple[SegmentDefinition, ...] = (BODY, LEFT_LUNG, RIGHT_LUNG)
