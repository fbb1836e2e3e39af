"""Reading received files: unreadable data and missing UIDs get their own statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataelem import DataElement

from core.errors import InputRejected, StoreStatus
from dicom_node.storage import read_received
from pipelines.phantom import generate_ct_phantom


def test_unreadable_file_cannot_be_understood(tmp_path: Path) -> None:
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"this is not a DICOM Part 10 file")

    with pytest.raises(InputRejected) as raised:
        read_received(path)

    assert raised.value.status == StoreStatus.CANNOT_UNDERSTAND


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID"])
def test_missing_uid(tmp_path: Path, keyword: str) -> None:
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0]
    delattr(dataset, keyword)
    dataset.preamble = b"\0" * 128
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=False)

    with pytest.raises(InputRejected, match=f"missing {keyword}") as raised:
        read_received(path)

    assert raised.value.status == StoreStatus.MISSING_UIDS


def test_uids_read_from_the_dataset(tmp_path: Path) -> None:
    dataset = generate_ct_phantom(slices=1, rows=8, columns=8).datasets[0]
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)

    _, uids = read_received(path)

    assert uids == {
        "StudyInstanceUID": dataset.StudyInstanceUID,
        "SeriesInstanceUID": dataset.SeriesInstanceUID,
        "SOPInstanceUID": dataset.SOPInstanceUID,
        "SOPClassUID": dataset.SOPClassUID,
    }


def _saved(tmp_path: Path, dataset, truncate_by: int = 0) -> Path:
    path = tmp_path / "image.dcm"
    dataset.save_as(path, enforce_file_format=True)
    if truncate_by:
        data = path.read_bytes()
        path.write_bytes(data[:-truncate_by])
    return path


def test_truncated_pixel_data_is_rejected_at_receive(tmp_path: Path) -> None:
    dataset = generate_ct_phantom(slices=1, rows=16, columns=16).datasets[0]
    with pytest.raises(InputRejected, match="pixel data cut short") as raised:
        read_received(_saved(tmp_path, dataset, truncate_by=100))
    assert raised.value.status == StoreStatus.CANNOT_UNDERSTAND


def test_absurd_dimensions_are_rejected_at_receive(tmp_path: Path) -> None:
    dataset = generate_ct_phantom(slices=1, rows=16, columns=16).datasets[0]
    dataset.Rows = dataset.Columns = 65535
    with pytest.raises(InputRejected, match="pixel data shorter than declared"):
        read_received(_saved(tmp_path, dataset))


def test_unreadable_image_attributes_are_rejected(tmp_path: Path) -> None:
    dataset = generate_ct_phantom(slices=1, rows=16, columns=16).datasets[0]
    dataset["Rows"] = DataElement(0x00280010, "LO", "abc")
    with pytest.raises(InputRejected, match="unreadable image attributes"):
        read_received(_saved(tmp_path, dataset))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
def test_complete_images_pass_the_check(tmp_path: Path, syntax: str) -> None:
    dataset = generate_ct_phantom(
        slices=1, rows=64, columns=64, transfer_syntax_uid=syntax
    ).datasets[0]
    _, uids = read_received(_saved(tmp_path, dataset))
    assert uids["SOPInstanceUID"] == dataset.SOPInstanceUID


def test_implicit_vr_short_pixel_data_is_rejected(tmp_path: Path) -> None:
    dataset = generate_ct_phantom(
        slices=1, rows=64, columns=64, transfer_syntax_uid="1.2.840.10008.1.2"
    ).datasets[0]
    dataset.Rows = 4000
    with pytest.raises(InputRejected, match="pixel data shorter than declared"):
        read_received(_saved(tmp_path, dataset))


def test_part10_header_matches_pydicom(tmp_path: Path) -> None:
    from io import BytesIO

    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info

    from core.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
    from dicom_node.receive import part10_header

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
