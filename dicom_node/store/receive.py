"""The file a C-STORE dataset is received into, on the spool's file system.

A dataset is never decoded or held in memory while it arrives: its encoded
bytes go from the socket through one buffer into a Part-10 file (a file meta
header written from the command, then the dataset exactly as sent), so the
durable store is an fsync and a rename.  The buffer is the association's,
reused for each of its instances, and the file's first bytes are kept from
it so that the header is scanned without reading the file back.  Each time
the buffer fills, its bytes are written and their writeback started
(:mod:`dicom_node.store.writeback`), so the disk works while the rest arrives.  A write
error (a full disk) does not interrupt the association: the file frees what
it wrote and remembers the error, the rest of the dataset is read and
dropped, and the SCP answers 0xA700 (out of resources) so that the sender
may retry.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
import time
from pathlib import Path

from core.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.store.writeback import start_writeback

RECEIVE_SUFFIX = ".receiving"
#: Bytes gathered before each write to the file, whose writeback then starts at once.
#: Measured (README, *Performance*): with 256 KiB chunks and early writeback one
#: association stored 633-662 CT slices of 526 KB a second, against 569-576 with one
#: write per instance through a 1 MiB buffer; 192, 384 and 512 KiB did no better.
WRITE_BUFFER_BYTES = 256 << 10
#: Bytes at the start of a received file kept in memory for its header scan.
HEAD_BYTES = 1 << 16

_file_numbers = itertools.count()


def _meta_element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian file meta element (every VR used here has a 2-byte length)."""
    return struct.pack("<HH2sH", 0x0002, tag, vr, len(value)) + value


def _even(value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    return raw + pad if len(raw) % 2 else raw


def part10_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str
) -> bytes:
    """Preamble, ``DICM`` and file meta information of a received instance (PS3.10 7.1).

    Encoded directly (it is built for every instance, and a general dataset
    writer costs more than the rest of the receive path); the tests read it
    back with pydicom.
    """
    elements = [
        struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\0\1",
        _meta_element(0x0002, b"UI", _even(sop_class_uid, b"\0")),
        _meta_element(0x0003, b"UI", _even(sop_instance_uid, b"\0")),
        _meta_element(0x0010, b"UI", _even(transfer_syntax_uid, b"\0")),
        _meta_element(0x0012, b"UI", _even(IMPLEMENTATION_CLASS_UID, b"\0")),
        _meta_element(0x0013, b"SH", _even(IMPLEMENTATION_VERSION_NAME, b" ")),
    ]
    if source_ae:
        elements.append(_meta_element(0x0016, b"AE", _even(source_ae, b" ")))
    body = b"".join(elements)
    length = _meta_element(0x0000, b"UL", struct.pack("<I", len(body)))
    return b"\0" * 128 + b"DICM" + length + body


def new_receive_file(folder: Path) -> tuple[int, Path]:
    """Create an empty, private receive file in ``folder``: its descriptor and path.

    Named after the process and a counter (a name left by an earlier process
    with the same id is skipped), which costs less than a random name.
    """
    while True:
        path = folder / f"{os.getpid()}-{next(_file_numbers)}{RECEIVE_SUFFIX}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue


class ReceiveFile:
    """A write-only temp file that gathers writes in a buffer and records write failures.

    Parameters
    ----------
    folder:
        Where the file is created (the spool's receive folder).
    header:
        The first bytes of the file (see :func:`part10_header`).
    buffer:
        Where writes are gathered: an association passes the same buffer for
        each of its instances (one file at a time); by default a new one.
    """

    def __init__(self, folder: Path, header: bytes, buffer: bytearray | None = None) -> None:
        self._fd, self.path = new_receive_file(folder)
        self.error: OSError | None = None
        self._stored = False
        self._view = memoryview(buffer if buffer is not None else bytearray(WRITE_BUFFER_BYTES))
        self._filled = 0
        self._head: bytes | None = None
        #: Bytes received into the file so far (written or buffered).
        self.size = 0
        #: Where the dataset begins in the file (after the header).
        self.dataset_offset = len(header)
        self._append(memoryview(header))

    @property
    def head(self) -> bytes:
        """The file's first bytes, up to :data:`HEAD_BYTES` (all of them for a small file)."""
        if self._head is not None:
            return self._head
        return bytes(self._view[: min(self._filled, HEAD_BYTES)])

    def _append(self, data: memoryview) -> None:
        while data:
            space = self.free_space()
            take = min(len(space), len(data))
            space[:take] = data[:take]
            self.commit(take)
            data = data[take:]

    def free_space(self) -> memoryview:
        """The unfilled part of the buffer; fill a prefix, then call :meth:`commit`.

        A full buffer is written out first and its writeback started.
        """
        if self._filled == len(self._view):
            self.flush()
            if self.error is None:
                start_writeback(self._fd)
        return self._view[self._filled :]

    def commit(self, count: int) -> None:
        """Mark ``count`` bytes at the start of :meth:`free_space` as filled."""
        self._filled += count
        self.size += count

    def flush(self) -> None:
        """Write the buffered bytes to the file (after a failure: drop them)."""
        if self._head is None and self._filled:
            self._head = self.head
        self._write(self._view[: self._filled])
        self._filled = 0

    def _write(self, view: memoryview) -> None:
        while self.error is None and view:
            try:
                view = view[os.write(self._fd, view) :]
            except OSError as exc:
                self.error = exc
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)

    def sync(self) -> None:
        """Flush and fsync: the bytes are on disk when this returns (raises OSError if not)."""
        self.flush()
        if self.error is not None:
            raise self.error
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the descriptor (idempotent); the file stays where it is."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def moved(self) -> None:
        """The file now lives elsewhere (stored): :meth:`discard` must not delete its old name.

        Another association may already have a new receive file under that name.
        """
        self._stored = True

    def discard(self) -> None:
        """Close and delete the file (an aborted or rejected instance); only close a stored one."""
        self.close()
        if not self._stored:
            self.path.unlink(missing_ok=True)


def remove_stale(folder: Path, older_than_seconds: float) -> int:
    """Delete receive files left by a crash; returns how many were removed."""
    cutoff = time.time() - older_than_seconds
    removed = 0
    for path in folder.glob(f"*{RECEIVE_SUFFIX}"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
