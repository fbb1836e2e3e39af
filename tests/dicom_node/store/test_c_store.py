"""Reading received files: unreadable data and missing UIDs get their own statuses.

Every check runs twice: through the SCP's header scan (``scan``) and through
the full parse of the file (``pydicom``: no offset given, what the scan falls
back to, dicom_node/store/structure.py); both must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info
from pydicom.sequence import Sequence

from core.dicom_status import StoreStatus
from core.errors import InputRejected
from dicom_node.recording.received import StudyIdentifiers
from dicom_node.store.c_store import InstanceHeader, checked_header
from dicom_node.store.header import scan_header
from dicom_node.store.receive import HEAD_BYTES
from pipelines.phantom import generate_ct_phantom


def read_received(
    path: Path, dataset_offset: int | None = None, transfer_syntax: str | None = None
) -> InstanceHeader:
    """The header check as the SCP runs it on the file's first bytes (full parse without offset)."""
    head = path.read_bytes()[:HEAD_BYTES] if dataset_offset is not None else b""
    return checked_header(path, head, path.stat().st_size, dataset_offset, transfer_syntax)


def _dataset_start(path: Path) -> tuple[int, str]:
    """Where the dataset begins in a Part-10 file, and its transfer syntax."""
    with path.open("rb") as handle:
        handle.seek(132)
        meta = _read_file_meta_info(handle)
        return handle.tell(), str(meta.TransferSyntaxUID)


@pytest.fixture(params=["scan", "pydicom"])
def read(request: pytest.FixtureRequest) -> Callable[[Path], InstanceHeader]:
    """``read(path)`` by one of the two readers."""
    if request.param == "pydicom":
        return read_received
    return lambda path: read_received(path, *_dataset_start(path))


def test_unreadable_file_cannot_be_understood(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"this is not a DICOM Part 10 file")

    with pytest.raises(InputRejected) as raised:
        read_received(path)

    assert raised.value.status == StoreStatus.CANNOT_UNDERSTAND


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
def test_missing_uid(tmp_path: Path, keyword: str, read: Callable[[Path], InstanceHeader]) -> None:
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0]
    delattr(dataset, keyword)
    dataset.preamble = b"\0" * 128
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=False)

    with pytest.raises(InputRejected, match=f"missing {keyword}") as raised:
        read(path)

    assert raised.value.status == StoreStatus.MISSING_UIDS


def test_uids_read_from_the_dataset(tmp_path: Path, read: Callable[[Path], InstanceHeader]) -> None:
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0]
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)

    header = read(path)

    assert header.modality == "CT"
    assert header.body_part == "CHEST"
    assert header.series_description == "Chest phantom"
    assert header.transfer_syntax_uid == dataset.file_meta.TransferSyntaxUID
    assert header.uids == {
        "StudyInstanceUID": dataset.StudyInstanceUID,
        "SeriesInstanceUID": dataset.SeriesInstanceUID,
        "SOPInstanceUID": dataset.SOPInstanceUID,
        "SOPClassUID": dataset.SOPClassUID,
    }


def test_order_context_read_from_the_dataset(
    tmp_path: Path, read: Callable[[Path], InstanceHeader]
) -> None:
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8, patient_id="PID-7").datasets[0]
    dataset.AccessionNumber, dataset.StudyDate = "ACC-42", "20261201"
    dataset.StudyDescription = "CT THORAX"
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)
    without_procedure = read(path).identifiers

    dataset.RequestedProcedureDescription = "CT Thorax nativ"
    dataset.save_as(path, enforce_file_format=True)

    assert without_procedure == StudyIdentifiers("ACC-42", "PID-7", "20261201", "CT THORAX")
    assert read(path).identifiers == StudyIdentifiers(
        "ACC-42", "PID-7", "20261201", "CT Thorax nativ"
    )


def test_scan_decodes_free_text_in_the_datasets_character_set(tmp_path: Path) -> None:
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0]
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.RequestedProcedureDescription = "Schädel nativ"
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)
    start, syntax = _dataset_start(path)

    assert scan_header(path.read_bytes(), start, syntax, complete=True) is not None
    header = read_received(path, start, syntax)
    assert header == read_received(path)
    assert header.identifiers.requested_procedure == "Schädel nativ"


def _saved(tmp_path: Path, dataset, truncate_by: int = 0) -> Path:
    path = tmp_path / "image.dcm"
    dataset.save_as(path, enforce_file_format=True)
    if truncate_by:
        data = path.read_bytes()
        path.write_bytes(data[:-truncate_by])
    return path


def test_truncated_pixel_data_is_rejected_at_receive(
    tmp_path: Path, read: Callable[[Path], InstanceHeader]
) -> None:
    dataset = generate_ct_phantom(slices=1, rows=16, columns=16).datasets[0]
    with pytest.raises(InputRejected, match="pixel data cut short") as raised:
        read(_saved(tmp_path, dataset, truncate_by=100))
    assert raised.value.status == StoreStatus.CANNOT_UNDERSTAND


def test_absurd_dimensions_are_rejected_at_receive(
    tmp_path: Path, read: Callable[[Path], InstanceHeader]
) -> None:
    dataset = generate_ct_phantom(slices=1, rows=16, columns=16).datasets[0]
    dataset.Rows = dataset.Columns = 65535
    with pytest.raises(InputRejected, match="pixel data shorter than declared"):
        read(_saved(tmp_path, dataset))


def test_unreadable_image_attributes_are_rejected(
    tmp_path: Path, read: Callable[[Path], InstanceHeader]
) -> None:
    dataset = generate_ct_phantom(slices=1, rows=16, columns=16).datasets[0]
    dataset["Rows"] = DataElement(0x00280010, "LO", "abc")
    with pytest.raises(InputRejected, match="unreadable image attributes"):
        read(_saved(tmp_path, dataset))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
def test_complete_images_pass_the_check(
    tmp_path: Path, syntax: str, read: Callable[[Path], InstanceHeader]
) -> None:
    dataset = generate_ct_phantom(
        slices=1, rows=64, columns=64, transfer_syntax_uid=syntax
    ).datasets[0]
    header = read(_saved(tmp_path, dataset))
    assert header.uids["SOPInstanceUID"] == dataset.SOPInstanceUID


def test_implicit_vr_short_pixel_data_is_rejected(
    tmp_path: Path, read: Callable[[Path], InstanceHeader]
) -> None:
    dataset = generate_ct_phantom(
        slices=1, rows=64, columns=64, transfer_syntax_uid="1.2.840.10008.1.2"
    ).datasets[0]
    dataset.Rows = 4000
    with pytest.raises(InputRejected, match="pixel data shorter than declared"):
        read(_saved(tmp_path, dataset))


def test_part10_header_matches_pydicom(tmp_path: Path) -> None:
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    from core.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
    from dicom_node.store.receive import part10_header

    for source_ae in ("SCU", "MODALITY1", ""):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = "1.2.3.45"
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        if source_ae:
            meta.SourceApplicationEntityTitle = source_ae
        expected = BytesIO()
        write_file_meta_info(expected, meta, enforce_standard=True)  # type: ignore[arg-type]

        header = part10_header(
            "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45", "1.2.840.10008.1.2.4.90", source_ae
        )

        assert header == b"\0" * 128 + b"DICM" + expected.getvalue()


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
def test_scan_reads_phantoms_and_nested_sequences_as_pydicom_does(
    tmp_path: Path, syntax: str
) -> None:
    dataset = generate_ct_phantom(
        slices=1, rows=32, columns=32, transfer_syntax_uid=syntax
    ).datasets[0]
    inner = Dataset()
    inner.CodeValue = "T-D3000"
    inner.CodeMeaning = "Chest"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    dataset.ReferencedImageSequence = Sequence([item, Dataset()])
    dataset.add_new(0x00091010, "LO", "private")
    path = _saved(tmp_path, dataset)
    start, transfer_syntax = _dataset_start(path)

    scanned = scan_header(path.read_bytes(), start, transfer_syntax, complete=True)

    assert scanned is not None, "the scan fell back to pydicom on an ordinary image"
    assert read_received(path, start, transfer_syntax) == read_received(path)
    assert scanned.values["Rows"] == 32 and scanned.has_pixel_data
    assert scanned.pixel_data_end == path.stat().st_size


@pytest.mark.parametrize(
    "syntax",
    ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"],  # big endian, deflated
)
def test_scan_leaves_big_endian_and_deflate_to_pydicom(syntax: str) -> None:
    assert scan_header(b"\0" * 64, 0, syntax, complete=True) is None


def test_scan_is_unsure_of_a_header_cut_off(tmp_path: Path) -> None:
    path = _saved(tmp_path, generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0])
    start, syntax = _dataset_start(path)
    head = path.read_bytes()[: start + 200]

    assert scan_header(head, start, syntax, complete=False) is None
