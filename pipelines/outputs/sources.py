"""Patient and study attributes as result objects may carry them: valid, or repaired, or left out.

highdicom copies the Patient, General Study, Patient Study and Clinical
Trial modules of the first source image (SEG) or evidence item (SR) into
every result, value for value.  Real scanners send values those attributes'
value representations forbid (PatientAge ``42`` where AS needs ``042Y``,
dates written ``2020-01-02``, an empty ProcedureCodeSequence, a weight of
``70kg``), and a result carrying them fails ``dciodvfy`` or, for an invalid
PatientSex, cannot be built at all.  :func:`result_sources` gives the
writers headers whose copied attributes are all valid:

* a value whose meaning is certain is repaired (``42`` -> ``042Y``,
  ``2020-01-02`` -> ``20200102``, ``12:30:00`` -> ``123000``, ``male`` ->
  ``M``, a number too long for DS rounded to 16 characters, a one-component
  person name given its caret: ``HFS`` -> ``HFS^``, the same family name);
* otherwise an optional (Type 3) attribute is left out and a required but
  possibly empty (Type 2) one is emptied; a Type 1 value is kept as sent
  (nothing could stand in for a UID);
* an empty or malformed Type 3 sequence (a code item without its code
  value, scheme or meaning) is left out.

Every change is named by its attribute and what was done, never by the
value, so the job's events can record it without holding PHI.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from highdicom._standard_utils import get_module_attribute_map  # the table highdicom copies by
from pydicom import DataElement, Dataset
from pydicom.charset import convert_encodings, decode_bytes
from pydicom.config import RAISE
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import format_number_as_ds, validate_value

__all__ = ["ResultSources", "repaired_header", "result_sources"]

#: Modules highdicom copies from the source into SEG and SR (Patient and Study IEs).
_COPIED_MODULES = (
    "patient",
    "general-study",
    "patient-study",
    "clinical-trial-subject",
    "clinical-trial-study",
)
#: Value representations holding text or numbers as text (validated value by value).
_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC"}
_CODE_VALUES = ("CodeValue", "LongCodeValue", "URNCodeValue")
_SEXES = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F", "OTHER": "O"}
_AGE = re.compile(r"^0*(\d{1,3})\s*([DWMY]?)$", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4})[.\-/](\d{2})[.\-/](\d{2})$")
_TIME = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?$")


@dataclass(frozen=True)
class ResultSources:
    """Source datasets for the result writers and what was changed to make them valid.

    Parameters
    ----------
    datasets:
        The source datasets, each replaced by a repaired header where a
        copied attribute needed it.
    changes:
        One line per attribute changed, e.g. ``"PatientAge repaired (AS)"``.
    """

    datasets: list[Dataset]
    changes: list[str]

    @property
    def note(self) -> str | None:
        """The changes as one line for the job's events, None when there were none."""
        if not self.changes:
            return None
        return "source attributes made valid for the results: " + ", ".join(self.changes)


@cache
def _copied_attributes() -> dict[BaseTag, tuple[str, str]]:
    """Root-level tag -> keyword and type (``1``, ``2``, ``3``, ``1C``...) of the copied modules."""
    table = get_module_attribute_map()
    return {
        Tag(tag_for_keyword(str(item["keyword"]))): (str(item["keyword"]), str(item["type"]))
        for module in _COPIED_MODULES
        for item in table[module]
        if not item["path"]
    }


def _text_values(value: object) -> list[str]:
    """The values of a text element as strings (DS/IS as they were written)."""
    items = list(value) if isinstance(value, MultiValue) else [value]
    return [
        str(getattr(item, "original_string", None) or item) for item in items if item is not None
    ]


def _valid(vr: str, text: str) -> bool:
    try:
        validate_value(vr, text, RAISE)
    except (ValueError, TypeError):
        return False
    if vr == "DA" and text:
        try:
            datetime.date(int(text[:4]), int(text[4:6] or 1), int(text[6:8] or 1))
        except ValueError:
            return False
    return True


def _repaired(keyword: str, vr: str, text: str) -> str | None:
    """``text`` rewritten in the form ``vr`` needs, when its meaning is certain; else None."""
    stripped = text.strip()
    if keyword == "PatientSex":
        return _SEXES.get(stripped.upper())
    if vr == "AS" and (match := _AGE.match(stripped)):
        return f"{int(match[1]):03d}{(match[2] or 'Y').upper()}"
    if vr == "DA" and (match := _DATE.match(stripped)):
        return "".join(match.groups())
    if vr == "TM" and (match := _TIME.match(stripped)):
        return "".join(part or "" for part in match.groups())
    if vr == "DS":
        try:
            return format_number_as_ds(float(stripped))
        except (ValueError, OverflowError):
            return None
    if vr == "CS" and _valid(vr, stripped.upper()):
        return stripped.upper()
    return None


def _explicit_family_name(texts: list[str] | None) -> str | None:
    """A one-component person name with its caret (``HFS`` -> ``HFS^``); None for any other.

    A name of one component is a family name (PS3.5 6.2.1.2), so the caret
    changes nothing of its meaning; without it highdicom warns that the name
    is unlikely to be intended, and its warning quotes the name (PHI) into
    the worker's log.
    """
    if texts is None or len(texts) != 1:
        return None
    name = texts[0].strip()
    if not name or "^" in name or "=" in name or not _valid("PN", f"{name}^"):
        return None
    return f"{name}^"


def _valid_item(item: Dataset) -> bool:
    """A sequence item with valid text values; a code item needs its value, scheme and meaning."""
    if len(item) == 0:
        return False
    coded = any(
        keyword in item for keyword in (*_CODE_VALUES, "CodingSchemeDesignator", "CodeMeaning")
    )
    if coded and not (
        any(item.get(keyword) for keyword in _CODE_VALUES)
        and item.get("CodeMeaning")
        and (item.get("CodingSchemeDesignator") or "URNCodeValue" in item)
    ):
        return False
    for element in item:
        if element.VR == "SQ":
            if not all(_valid_item(inner) for inner in element.value):
                return False
        elif element.VR in _TEXT_VRS and not all(
            _valid(element.VR, text) for text in _text_values(element.value)
        ):
            return False
    return True


def _texts(header: Dataset, tag: BaseTag, vr: str) -> list[str] | None:
    """The values of a text element as written; None when they cannot be decoded.

    A raw (not yet read) element is decoded from its bytes here rather than
    by pydicom, whose warning about an invalid value would quote the value
    (PHI) in the log.
    """
    element = header.get_item(tag)
    if not element.is_raw:
        return _text_values(element.value)
    encodings = convert_encodings(header.get("SpecificCharacterSet") or "ISO_IR 6")
    try:
        text = decode_bytes(element.value or b"", encodings, set())
    except (LookupError, ValueError):
        return None
    text = text.rstrip(" \x00")
    if not text:
        return []
    return [text] if vr in ("LT", "ST") else text.split("\\")


def _check(header: Dataset, tag: BaseTag, keyword: str, kind: str) -> str | None:
    """Make ``keyword`` (``tag``) of ``header`` valid in place; the change made, or None."""
    vr = header.get_item(tag).VR or dictionary_VR(tag)
    if vr == "SQ":
        items = header[tag].value
        if items and all(_valid_item(item) for item in items):
            return None
        if kind != "3":
            return None
        del header[tag]
        return f"{keyword} left out ({'malformed' if items else 'empty'})"
    if vr not in _TEXT_VRS:
        return None
    texts = _texts(header, tag, vr)
    if vr == "PN" and (explicit := _explicit_family_name(texts)) is not None:
        header[tag] = DataElement(tag, vr, explicit)
        return f"{keyword} repaired (family name made explicit)"
    valid = texts is not None and all(_valid(vr, text) for text in texts)
    if valid and (keyword != "PatientSex" or set(texts or []) <= {"", "M", "F", "O"}):
        return None
    if texts is not None and len(texts) == 1:
        fixed = _repaired(keyword, vr, texts[0])
        if fixed is not None and _valid(vr, fixed):
            header[tag] = DataElement(tag, vr, fixed)  # a new element: the source keeps its own
            return f"{keyword} repaired ({vr})"
    if kind == "3":
        del header[tag]
        return f"{keyword} left out (invalid {vr})"
    if kind.startswith("2"):
        header[tag] = DataElement(tag, vr, None)
        return f"{keyword} emptied (invalid {vr})"
    return None


def repaired_header(dataset: Dataset) -> tuple[Dataset, list[str]]:
    """``dataset`` with every copied patient/study attribute valid, and the changes made.

    The original is never modified: when something changes, the returned
    header is a new dataset sharing every other element with it.
    """
    copied = _copied_attributes()
    header = Dataset(dict(dataset.items()))
    if hasattr(dataset, "file_meta"):
        header.file_meta = dataset.file_meta
    changes = [
        change
        for tag in sorted(dataset.keys() & copied.keys())
        if (change := _check(header, tag, *copied[tag])) is not None
    ]
    return (header if changes else dataset), changes


def result_sources(datasets: Sequence[Dataset]) -> ResultSources:
    """The source datasets the writers get, each repaired where needed.

    SEG and SR copy from the first, a Secondary Capture from its key image:
    every one is repaired, so whichever a writer copies from is valid.

    Parameters
    ----------
    datasets:
        The pipeline input's source datasets (all share patient and study).
    """
    repaired, changes = [], {}
    for dataset in datasets:
        header, made = repaired_header(dataset)
        repaired.append(header)
        changes.update(dict.fromkeys(made))
    return ResultSources(datasets=repaired, changes=list(changes))
