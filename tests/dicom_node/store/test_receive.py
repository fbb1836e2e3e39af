"""Receive files: the bytes as sent, the association's buffer reused, the head kept in memory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from dicom_node.store.receive import HEAD_BYTES, RECEIVE_SUFFIX, ReceiveFile, new_receive_file


def receive(
    folder: Path, header: bytes, body: bytes, buffer: bytearray | None = None
) -> ReceiveFile:
    """A receive file filled as an association fills it: through its free space, in pieces."""
    received = ReceiveFile(folder, header, buffer)
    data = memoryview(body)
    while data:
        space = received.free_space()
        take = min(len(space), len(data), 7_919)
        space[:take] = data[:take]
        received.commit(take)
        data = data[take:]
    received.flush()
    return received


def test_a_file_larger_than_its_buffer_holds_exactly_what_was_received(tmp_path: Path) -> None:
    header, body = b"H" * 300, os.urandom(3 * HEAD_BYTES + 5)

    received = receive(tmp_path, header, body, bytearray(HEAD_BYTES))
    received.sync()
    received.close()

    assert received.path.read_bytes() == header + body
    assert received.size == len(header) + len(body)
    assert received.dataset_offset == len(header)
    # the first bytes are kept although the buffer has been written out and refilled since
    assert received.head == (header + body)[:HEAD_BYTES]


def test_a_small_file_is_whole_in_its_head(tmp_path: Path) -> None:
    received = receive(tmp_path, b"H" * 10, b"dataset")

    assert received.head == b"H" * 10 + b"dataset"
    assert received.size == len(received.head)


def test_an_association_buffer_serves_one_file_after_another(tmp_path: Path) -> None:
    buffer = bytearray(HEAD_BYTES)
    first = receive(tmp_path, b"first", os.urandom(HEAD_BYTES + 11), buffer)
    first.close()
    second = receive(tmp_path, b"second", b"short", buffer)
    second.close()

    assert first.path != second.path
    assert second.path.read_bytes() == b"secondshort"
    assert second.head == b"secondshort"
    assert first.path.read_bytes()[:5] == b"first"


def test_receive_files_get_new_private_names_past_leftovers(tmp_path: Path) -> None:
    fd, path = new_receive_file(tmp_path)
    os.close(fd)
    number = int(path.name.removesuffix(RECEIVE_SUFFIX).split("-")[1])
    # a file an earlier process with the same id left under the next name
    leftover = tmp_path / f"{os.getpid()}-{number + 1}{RECEIVE_SUFFIX}"
    leftover.write_bytes(b"old")

    fd, second = new_receive_file(tmp_path)
    os.close(fd)

    assert second not in (path, leftover)
    assert second.name.endswith(RECEIVE_SUFFIX)
    assert leftover.read_bytes() == b"old"
    assert second.stat().st_mode & 0o777 == 0o600


def test_each_full_buffer_starts_its_writeback_and_the_rest_is_left_to_the_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    monkeypatch.setattr("dicom_node.store.receive.start_writeback", started.append)
    header, body = b"H" * 300, os.urandom(3 * HEAD_BYTES + 5)

    received = receive(tmp_path, header, body, bytearray(HEAD_BYTES))
    received.sync()
    received.close()

    # the buffer filled three times; the last 305 bytes go out with the fsync
    assert len(started) == 3
    assert received.path.read_bytes() == header + body


def test_a_failed_write_starts_no_writeback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[int] = []
    monkeypatch.setattr("dicom_node.store.receive.start_writeback", started.append)

    def disk_full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dicom_node.store.receive.os.write", disk_full)

    received = receive(tmp_path, b"H", os.urandom(2 * HEAD_BYTES), bytearray(HEAD_BYTES))
    received.close()

    assert isinstance(received.error, OSError)
    assert received.error.errno == errno.ENOSPC
    assert started == []
