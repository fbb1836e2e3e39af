"""The full parse of a received dataset: what it accepts, and the malformed bytes it names."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import encode

from core.dicom_status import StoreStatus
from core.errors import InputRejected
from dicom_node.store import structure
from dicom_node.store.c_store import checked_header
from dicom_node.store.header import PIXEL_DATA
from dicom_node.store.receive import part10_header
from dicom_node.store.structure import MalformedDataset, parse_dataset
from pipelines.phantom import generate_ct_phantom


def _received(tmp_path: Path, dataset_bytes: bytes, syntax: str) -> tuple[Path, int]:
    """A receive file as the SCP writes it: its file meta, then the bytes as sent."""
    header = part10_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3", syntax, "SCU")
    path = tmp_path / "received.dcm"
    path.write_bytes(header + dataset_bytes)
    return path, len(header)


def _encoded(syntax: str, rows: int = 8) -> bytes:
    dataset = generate_ct_phantom(slices=1, rows=rows, columns=rows).datasets[0]
    dataset.add(DataElement(0xFFFCFFFC, "OB", b"\0" * 8))  # trailing padding is valid
    flags = {
        ImplicitVRLittleEndian: (True, True, False),
        ExplicitVRLittleEndian: (False, True, False),
        ExplicitVRBigEndian: (False, False, False),
        DeflatedExplicitVRLittleEndian: (False, True, True),
    }[syntax]
    encoded = encode(dataset, *flags)
    assert encoded is not None
    return encoded


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_whole_datasets_in_every_uncompressed_syntax(tmp_path: Path, syntax: str) -> None:
    path, offset = _received(tmp_path, _encoded(syntax), syntax)

    parsed = parse_dataset(path, offset, syntax)

    assert parsed.values["Rows"] == 8 and parsed.values["Modality"] == "CT"
    assert parsed.has_pixel_data and parsed.pixel_data_length == 8 * 8 * 2
    assert parsed.pixel_data_tag == PIXEL_DATA


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (b"\x01\x02\x03", "stray bytes"),
        (struct.pack("<HH2sH", 0x7FE1, 0x0010, b"XY", 2) + b"ab", "no VR"),
        (struct.pack("<HH2sxxI", 0x7FE1, 0x0010, b"OB", 100), "cut short"),
    ],
)
def test_bytes_after_the_last_element_are_named(tmp_path: Path, tail: bytes, why: str) -> None:
    path, offset = _received(
        tmp_path, _encoded(ExplicitVRLittleEndian) + tail, ExplicitVRLittleEndian
    )

    with pytest.raises(MalformedDataset, match=why):
        parse_dataset(path, offset, ExplicitVRLittleEndian)


def test_encapsulated_pixel_data_must_end_with_its_delimiter(tmp_path: Path) -> None:
    source = Path(get_testdata_file("MR_small_RLE.dcm"))  # type: ignore[arg-type]
    raw = source.read_bytes()
    start = 132 + 12 + struct.unpack_from("<I", raw, 140)[0]
    syntax = str(dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    whole, offset = _received(tmp_path, raw[start:], syntax)
    assert parse_dataset(whole, offset, syntax).pixel_data_length is None

    cut, offset = _received(tmp_path, raw[start : (start + len(raw)) // 2], syntax)
    with pytest.raises(MalformedDataset, match="encapsulated pixel data"):
        parse_dataset(cut, offset, syntax)


def test_a_deflate_bomb_is_refused_not_inflated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(structure, "MAX_INFLATED_BYTES", 16 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = b"".join(compressor.compress(bytes(1 << 20)) for _ in range(17)) + compressor.flush()
    assert len(bomb) < 64 << 10
    path, offset = _received(tmp_path, bomb, DeflatedExplicitVRLittleEndian)

    with pytest.raises(MalformedDataset, match="inflates beyond"):
        parse_dataset(path, offset, DeflatedExplicitVRLittleEndian)


def test_an_undefined_length_un_sequence_is_read_as_implicit_vr(tmp_path: Path) -> None:
    item = struct.pack("<HHI", 0x0008, 0x0100, 4) + b"T123"  # implicit VR inside
    sequence = (
        struct.pack("<HH2sxxI", 0x0009, 0x1010, b"UN", 0xFFFFFFFF)
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + item
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    path, offset = _received(tmp_path, sequence, ExplicitVRLittleEndian)

    assert not parse_dataset(path, offset, ExplicitVRLittleEndian).has_pixel_data


def test_an_icon_with_encapsulated_pixel_data_is_valid(tmp_path: Path) -> None:
    fragments = (
        struct.pack("<HHI", 0xFFFE, 0xE000, 0)  # empty basic offset table
        + struct.pack("<HHI", 0xFFFE, 0xE000, 4)
        + b"\xff\xd8\xff\xd9"
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    icon = (
        struct.pack("<HH2sxxI", 0x0088, 0x0200, b"SQ", 0xFFFFFFFF)  # Icon Image Sequence
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
        + struct.pack("<HH2sxxI", 0x7FE0, 0x0010, b"OB", 0xFFFFFFFF)
        + fragments
        + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    syntax = "1.2.840.10008.1.2.4.50"
    path, offset = _received(tmp_path, icon, syntax)

    parsed = parse_dataset(path, offset, syntax)

    assert not parsed.has_pixel_data  # the icon's pixel data is not the image's


def test_a_non_image_with_an_element_of_no_known_vr_after_its_last_is_refused(
    tmp_path: Path,
) -> None:
    """The header scan alone must not vouch for it: an upper-case pair of letters is not a VR."""
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0]
    del dataset.PixelData, dataset.Rows
    tail = struct.pack("<HH2sH", 0x7FE1, 0x0010, b"GA", 2) + b"ab"
    path, offset = _received(tmp_path, _encoded_dataset(dataset) + tail, ExplicitVRLittleEndian)
    data = path.read_bytes()

    with pytest.raises(InputRejected, match="no VR") as raised:
        checked_header(path, data, len(data), offset, ExplicitVRLittleEndian)
    assert raised.value.status == StoreStatus.CANNOT_UNDERSTAND


def _encoded_dataset(dataset: Dataset) -> bytes:
    encoded = encode(dataset, False, True)
    assert encoded is not None
    return encoded
