"""A received dataset's filing attributes, read from its first bytes without pydicom.

The Storage SCP needs a dozen top-level attributes of every instance (its
UIDs, modality, image size and where the pixel data starts).  pydicom's
reader builds a full dataset for that, which costs more than everything else
the SCP does per instance; :func:`scan_header` walks the encoded elements of
a little-endian dataset once and keeps only those attributes.  Anything it
is not sure about (big endian, deflate, a malformed element) returns None,
and the caller parses the whole file instead (:mod:`dicom_node.store.structure`),
so unusual input is handled exactly as before, only slower.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

#: Attributes kept: tag -> keyword.
WANTED: dict[int, str] = {
    0x00080005: "SpecificCharacterSet",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080020: "StudyDate",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
    0x00081030: "StudyDescription",
    0x0008103E: "SeriesDescription",
    0x00100020: "PatientID",
    0x00180015: "BodyPartExamined",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00280002: "SamplesPerPixel",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00321060: "RequestedProcedureDescription",
}
#: Free-text attributes decoded in the dataset's character set when not plain ASCII.
_TEXT = {"PatientID", "StudyDescription", "SeriesDescription", "RequestedProcedureDescription"}
_BINARY = {"SamplesPerPixel", "Rows", "Columns", "BitsAllocated"}
PIXEL_DATA = 0x7FE00010
#: Float Pixel Data, Double Float Pixel Data and Pixel Data: a dataset holds at most one.
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, PIXEL_DATA})
UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
#: Every VR of PS3.5 Table 6.2-1.
VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL"
    b" UN UR US UT UV".split()
)
#: VRs with a 4-byte value length (PS3.5 7.1.2).
LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_MAX_DEPTH = 16


class _Unsure(ValueError):
    """The scan cannot vouch for its result; the caller falls back to the full parse."""


def text_value(keyword: str, raw: bytes, values: dict[str, str | int]) -> str:
    """The text of a kept attribute; free text in the character set of ``values`` if not ASCII.

    Raises
    ------
    UnicodeDecodeError
        If an attribute that must be ASCII (a UID, a code string) is not.
    """
    if keyword in _TEXT and not raw.isascii():
        charset = str(values.get("SpecificCharacterSet", "")).split("\\")
        encodings = convert_encodings([name.strip() for name in charset])
        return decode_bytes(raw, encodings, set()).strip(" \0")
    return raw.decode("ascii").strip(" \0")


@dataclass(frozen=True)
class ScannedHeader:
    """The filing attributes of one dataset and where its pixel data lies.

    ``pixel_data_length`` is None for encapsulated (undefined length) pixel
    data; ``pixel_data_end`` is the file offset where the pixel data ends;
    ``pixel_data_tag`` is which of :data:`PIXEL_DATA_TAGS` holds it.
    """

    values: dict[str, str | int]
    has_pixel_data: bool
    pixel_data_length: int | None
    pixel_data_end: int | None
    pixel_data_tag: int = PIXEL_DATA


def scan_header(
    data: bytes | memoryview, start: int, transfer_syntax: str, complete: bool
) -> ScannedHeader | None:
    """Scan the dataset that begins at ``start`` of ``data``; None when the full parse must decide.

    ``data`` is the start of the file; ``complete`` says whether it is the
    whole file (else an element running past its end makes the scan unsure).
    """
    if transfer_syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        return None
    scanner = _Scanner(memoryview(data), transfer_syntax != ImplicitVRLittleEndian, complete)
    try:
        return scanner.scan(start)
    except (_Unsure, struct.error, UnicodeDecodeError):
        return None


class _Scanner:
    def __init__(self, data: memoryview, explicit: bool, complete: bool) -> None:
        self.data = data
        self.explicit = explicit
        self.complete = complete
        self.values: dict[str, str | int] = {}

    def element(self, offset: int) -> tuple[int, bytes, int, int]:
        """(tag, VR or b"", value length, value offset) of the element at ``offset``."""
        group, number = _TAG.unpack_from(self.data, offset)
        tag = group << 16 | number
        if group == 0xFFFE or not self.explicit:
            return tag, b"", _U32.unpack_from(self.data, offset + 4)[0], offset + 8
        vr = bytes(self.data[offset + 4 : offset + 6])
        if vr in LONG_VRS:
            return tag, vr, _U32.unpack_from(self.data, offset + 8)[0], offset + 12
        if vr not in VRS:
            raise _Unsure(f"not a VR: {vr!r}")
        return tag, vr, _U16.unpack_from(self.data, offset + 6)[0], offset + 8

    def scan(self, offset: int) -> ScannedHeader:
        end = len(self.data)
        last_tag = -1
        while offset < end:
            tag, vr, length, value = self.element(offset)
            if tag <= last_tag:
                raise _Unsure("elements out of order")
            last_tag = tag
            if tag in PIXEL_DATA_TAGS:
                if length == UNDEFINED:
                    return ScannedHeader(self.values, True, None, None, tag)
                return ScannedHeader(self.values, True, length, value + length, tag)
            if length == UNDEFINED:
                if vr not in (b"", b"SQ"):
                    raise _Unsure(f"undefined length {vr!r}")
                offset = self.skip_sequence(value, 0)
                continue
            if value + length > end:
                raise _Unsure("an element runs past the bytes given")
            if tag in WANTED:
                self.keep(WANTED[tag], bytes(self.data[value : value + length]), vr)
            offset = value + length
        if offset != end or not self.complete:
            raise _Unsure("the header runs past the bytes given")
        return ScannedHeader(self.values, False, None, None)

    def keep(self, keyword: str, raw: bytes, vr: bytes) -> None:
        if keyword in _BINARY:
            if len(raw) != 2 or vr not in (b"", b"US"):
                raise _Unsure(f"{keyword} is not one US value")
            self.values[keyword] = _U16.unpack(raw)[0]
        else:
            self.values[keyword] = text_value(keyword, raw, self.values)

    def skip_sequence(self, offset: int, depth: int) -> int:
        """Offset after an undefined-length sequence whose items start at ``offset``."""
        if depth > _MAX_DEPTH:
            raise _Unsure("sequences nested too deep")
        while True:
            tag, _vr, length, value = self.element(offset)
            if tag == _SEQUENCE_END:
                return value
            if tag != _ITEM:
                raise _Unsure("sequence without items")
            offset = value + length if length != UNDEFINED else self.skip_item(value, depth)

    def skip_item(self, offset: int, depth: int) -> int:
        """Offset after an undefined-length item whose elements start at ``offset``."""
        while True:
            tag, _vr, length, value = self.element(offset)
            if tag == _ITEM_END:
                return value
            offset = value + length if length != UNDEFINED else self.skip_sequence(value, depth + 1)
