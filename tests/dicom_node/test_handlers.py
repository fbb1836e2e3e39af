"""Reading received files: unreadable data and missing UIDs get their own statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputRejected, StoreStatus
from dicom_node.handlers import read_received
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
