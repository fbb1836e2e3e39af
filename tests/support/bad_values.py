"""Patient and study values as real scanners and RIS send them, invalid for their VR.

pydicom refuses to set most of these through attributes (``70kg`` is no DS),
so they are stored as raw elements, exactly as a received file holds them.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.sequence import Sequence
from pydicom.tag import Tag

__all__ = ["EXPECTED_CHANGES", "INVALID_VALUES", "with_invalid_values"]

#: Keyword -> value as sent (each seen in real data), all invalid for the attribute's VR.
INVALID_VALUES: dict[str, bytes] = {
    "PatientAge": b"42",
    "PatientSex": b"male",
    "PatientBirthDate": b"1970.01.01",
    "StudyDate": b"2025-01-01",
    "StudyTime": b"12:00:00",
    "PatientWeight": b"70kg",
    "PatientSize": b"1.7500000000000001",
    "StudyID": b"STUDY-ID-FAR-TOO-LONG",
    "Occupation": b"occupation " * 7,
}

#: What :func:`pipelines.outputs.sources.repaired_header` makes of them, in its order.
EXPECTED_CHANGES = {
    "PatientBirthDate repaired (DA)",
    "PatientSex repaired (CS)",
    "StudyDate repaired (DA)",
    "StudyTime repaired (TM)",
    "StudyID emptied (invalid SH)",
    "ProcedureCodeSequence left out (empty)",
    "AdmittingDiagnosesCodeSequence left out (malformed)",
    "PatientAge repaired (AS)",
    "PatientSize repaired (DS)",
    "PatientWeight left out (invalid DS)",
    "Occupation left out (invalid SH)",
}


def with_invalid_values(dataset: Dataset) -> Dataset:
    """``dataset`` (changed in place) carrying :data:`INVALID_VALUES`, an empty
    ProcedureCodeSequence and a diagnosis code item without its code value."""
    for keyword, value in INVALID_VALUES.items():
        tag = Tag(tag_for_keyword(keyword))
        padded = value + b" " if len(value) % 2 else value
        dataset[tag] = RawDataElement(tag, dictionary_VR(tag), len(padded), padded, 0, False, True)
    dataset.ProcedureCodeSequence = Sequence()
    broken = Dataset()
    broken.CodeMeaning = "no code value"
    dataset.AdmittingDiagnosesCodeSequence = Sequence([broken])
    return dataset
