"""The full parse of a received dataset: every top-level element, to the last byte of the file.

:func:`dicom_node.store.header.scan_header` reads a dataset's first bytes and stops
at its pixel data; that is enough when the pixel data has a defined length
and ends exactly where the file ends (the usual image).  Everything else is
walked here, over the whole file (memory-mapped, so nothing is copied): the
encapsulated fragments up to their sequence delimiter, whatever follows the
pixel data, big endian, and deflated datasets (inflated first into a
temporary file, within :data:`MAX_INFLATED_BYTES`).  The walk answers the same facts as the scan or
says precisely why the bytes are not a dataset: an element running past the
end of the file, garbage after the last element, an unknown VR, an
unterminated sequence.  The SCP refuses such a dataset with 0xC000 instead
of storing what no reader could open.

Values of nested sequences with a defined length are not walked (they are
opaque bytes within a checked bound, as for the scan).
"""

from __future__ import annotations

import mmap
import struct
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from dicom_node.store.header import (
    LONG_VRS,
    PIXEL_DATA,
    PIXEL_DATA_TAGS,
    UNDEFINED,
    VRS,
    WANTED,
    ScannedHeader,
    text_value,
)

#: Largest inflated size of a deflated dataset (a deflate bomb is refused, not inflated).
MAX_INFLATED_BYTES = 1 << 30
#: Bytes inflated at a time (the memory a deflated dataset takes while it is checked).
INFLATE_CHUNK_BYTES = 1 << 20
#: Deepest nesting of undefined-length sequences walked.
MAX_DEPTH = 64
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_BINARY = {"SamplesPerPixel", "Rows", "Columns", "BitsAllocated"}


class MalformedDataset(ValueError):
    """The received bytes are not a complete, well-formed dataset (answered 0xC000)."""


class _Walker:
    """Walks encoded elements of one dataset held in ``data``."""

    def __init__(self, data: memoryview | bytes, explicit: bool, little: bool) -> None:
        self.data = data
        self.explicit = explicit
        order = "<" if little else ">"
        self.tag = struct.Struct(order + "HH")
        self.u16 = struct.Struct(order + "H")
        self.u32 = struct.Struct(order + "I")
        self.values: dict[str, str | int] = {}
        self.pixel_tag: int | None = None
        self.pixel_length: int | None = None

    def header(self, offset: int, end: int, explicit: bool) -> tuple[int, bytes, int, int]:
        """(tag, VR or b"", value length, value offset) of the element at ``offset``."""
        if offset + 8 > end:
            raise MalformedDataset(f"{end - offset} stray bytes after the last element")
        group, number = self.tag.unpack_from(self.data, offset)
        tag = group << 16 | number
        if group == 0xFFFE or not explicit:
            return tag, b"", self.u32.unpack_from(self.data, offset + 4)[0], offset + 8
        vr = bytes(self.data[offset + 4 : offset + 6])
        if vr in LONG_VRS:
            if offset + 12 > end:
                raise MalformedDataset("element header cut short")
            return tag, vr, self.u32.unpack_from(self.data, offset + 8)[0], offset + 12
        if vr not in VRS:
            raise MalformedDataset(f"no VR at ({group:04X},{number:04X})")
        return tag, vr, self.u16.unpack_from(self.data, offset + 6)[0], offset + 8

    def dataset(self, offset: int, end: int, depth: int, explicit: bool) -> int:
        """Walk the elements from ``offset`` to ``end`` (top level: keep the wanted values)."""
        while offset < end:
            tag, vr, length, value = self.header(offset, end, explicit)
            if length == UNDEFINED:
                offset = self.undefined(tag, vr, value, end, depth, explicit)
                continue
            if value + length > end:
                what = "pixel data" if tag in PIXEL_DATA_TAGS else f"element {tag:08X}"
                raise MalformedDataset(f"{what} cut short")
            if depth == 0:
                self.keep(tag, vr, value, length)
            offset = value + length
        return offset

    def keep(self, tag: int, vr: bytes, value: int, length: int) -> None:
        if tag in PIXEL_DATA_TAGS:
            self.pixel_tag, self.pixel_length = tag, length
            return
        keyword = WANTED.get(tag)
        if keyword is None:
            return
        raw = bytes(self.data[value : value + length])
        if keyword in _BINARY and len(raw) == 2:
            self.values[keyword] = self.u16.unpack(raw)[0]
            return
        try:  # text, or a binary value that is not one US (refused as unreadable)
            self.values[keyword] = text_value(keyword, raw, self.values)
        except UnicodeDecodeError:
            self.values[keyword] = raw.decode("ascii", "replace").strip(" \0")

    def undefined(
        self, tag: int, vr: bytes, offset: int, end: int, depth: int, explicit: bool
    ) -> int:
        """Offset after an undefined-length value whose content starts at ``offset``."""
        if depth >= MAX_DEPTH:
            raise MalformedDataset("sequences nested too deep")
        if tag == _PIXEL_DATA and vr in (b"OB", b"OW"):  # encapsulated, an icon's too
            if depth == 0:
                self.pixel_tag, self.pixel_length = tag, None
            return self.fragments(offset, end)
        if vr not in (b"", b"SQ", b"UN"):
            raise MalformedDataset(f"undefined length on a {vr.decode('latin-1')} element")
        # A UN sequence of undefined length is encoded in implicit VR (PS3.5 6.2.2).
        return self.items(offset, end, depth + 1, explicit and vr != b"UN")

    def items(self, offset: int, end: int, depth: int, explicit: bool) -> int:
        while True:
            tag, _vr, length, value = self.header(offset, end, False)
            if tag == _SEQUENCE_END:
                return value
            if tag != _ITEM:
                raise MalformedDataset(f"{tag:08X} where a sequence item belongs")
            if length == UNDEFINED:
                offset = self.item(value, end, depth, explicit)
            elif value + length > end:
                raise MalformedDataset("sequence item cut short")
            else:
                offset = value + length

    def item(self, offset: int, end: int, depth: int, explicit: bool) -> int:
        while True:
            tag, vr, length, value = self.header(offset, end, explicit)
            if tag == _ITEM_END:
                return value
            if length == UNDEFINED:
                offset = self.undefined(tag, vr, value, end, depth, explicit)
            elif value + length > end:
                raise MalformedDataset("element of a sequence item cut short")
            else:
                offset = value + length

    def fragments(self, offset: int, end: int) -> int:
        """Offset after encapsulated pixel data: items of defined length, then the delimiter."""
        while True:
            if offset + 8 > end:
                raise MalformedDataset("encapsulated pixel data cut short")
            tag, _vr, length, value = self.header(offset, end, False)
            if tag == _SEQUENCE_END:
                return value
            if tag != _ITEM or length == UNDEFINED or value + length > end:
                raise MalformedDataset("encapsulated pixel data cut short or malformed")
            offset = value + length


def _inflate(data: memoryview, into: BinaryIO) -> int:
    """Inflate the deflated dataset ``data`` into the file ``into`` a chunk at a time; its size."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    pending = data
    try:
        while pending or not inflater.eof:
            chunk = inflater.decompress(pending, INFLATE_CHUNK_BYTES)
            pending = memoryview(inflater.unconsumed_tail)
            if not chunk and not pending:
                break
            size += len(chunk)
            if size > MAX_INFLATED_BYTES:
                raise MalformedDataset(
                    f"deflated dataset inflates beyond {MAX_INFLATED_BYTES} bytes"
                )
            into.write(chunk)
    except zlib.error as exc:
        raise MalformedDataset(f"deflated dataset does not inflate ({exc})") from exc
    if not inflater.eof:
        raise MalformedDataset("deflated dataset cut short")
    return size


def parse_dataset(path: Path, dataset_offset: int, transfer_syntax: str) -> ScannedHeader:
    """Walk the whole dataset of the Part-10 file ``path`` that starts at ``dataset_offset``.

    A deflated dataset is inflated into an unnamed temporary file next to
    ``path`` (disk, not memory, however large it inflates) and walked there.

    Raises
    ------
    MalformedDataset
        If the bytes are not one complete, well-formed dataset.
    """
    with path.open("rb") as handle, _mapped(handle, dataset_offset) as dataset:
        if transfer_syntax != DeflatedExplicitVRLittleEndian:
            return _walk(dataset, transfer_syntax)
        with tempfile.TemporaryFile(dir=path.parent) as inflated:
            _inflate(dataset, inflated)
            inflated.flush()
            with _mapped(inflated, 0) as plain:
                return _walk(plain, ExplicitVRLittleEndian)


@contextmanager
def _mapped(handle: BinaryIO, offset: int) -> Iterator[memoryview]:
    """The bytes of the open file ``handle`` from ``offset`` on, memory-mapped."""
    size = handle.seek(0, 2)
    if size <= offset:
        raise MalformedDataset("empty dataset")
    with (
        mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        memoryview(mapped) as whole,
        whole[offset:] as data,
    ):
        yield data


def _walk(data: memoryview, transfer_syntax: str) -> ScannedHeader:
    little = transfer_syntax != ExplicitVRBigEndian
    explicit = transfer_syntax != ImplicitVRLittleEndian
    walker = _Walker(data, explicit, little)
    try:
        walker.dataset(0, len(data), 0, explicit)
    except (struct.error, IndexError) as exc:
        raise MalformedDataset(f"dataset cut short ({type(exc).__name__})") from exc
    finally:
        walker.data = b""  # the caller releases the mapping: no view of it may remain
    return ScannedHeader(
        values=walker.values,
        has_pixel_data=walker.pixel_tag is not None,
        pixel_data_length=walker.pixel_length,
        pixel_data_end=None,
        pixel_data_tag=walker.pixel_tag or PIXEL_DATA,
    )
