"""Where pynetdicom writes a dataset while it is being received.

pynetdicom's chunked receive writes each incoming dataset to a temporary
file.  Two things matter to the node: the file must lie on the spool's file
system (so the durable store is a rename, not a copy), and a full disk must
not crash the association thread (pynetdicom would abort the association and
leave a partial file behind).  :class:`ReceiveFile` gives both: it swallows
the write error, frees what it wrote and remembers why, so the C-STORE
handler can answer 0xA700 (out of resources) and the sender may retry.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pynetdicom import dimse_messages

RECEIVE_SUFFIX = ".receiving"


class ReceiveFile:
    """A write-only temp file that records (instead of raising) write failures.

    It offers what pynetdicom uses of a ``NamedTemporaryFile``: ``name``,
    ``write``, ``file.flush`` and ``close``.  Writes go straight to the file
    descriptor (no buffer that could fail later, at close).
    """

    def __init__(self, folder: Path) -> None:
        self._fd, self.name = tempfile.mkstemp(suffix=RECEIVE_SUFFIX, dir=folder)
        self.error: OSError | None = None

    @property
    def file(self) -> ReceiveFile:
        """pynetdicom flushes through ``.file``."""
        return self

    def write(self, data: bytes) -> int:
        """Write ``data``; after a failure, discard everything and keep the error."""
        view = memoryview(data)
        while self.error is None and view:
            try:
                view = view[os.write(self._fd, view) :]
            except OSError as exc:
                self.error = exc
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, 0)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered: writes are already with the OS."""

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def receive_error(request: Any) -> OSError | None:
    """The write error met while receiving ``request``'s dataset, if any."""
    handle = getattr(request, "_dataset_file", None)
    return getattr(handle, "error", None)


def receive_into(folder: Path) -> None:
    """Make pynetdicom receive every C-STORE dataset into ``folder`` as a ReceiveFile."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def factory(*_args: Any, **_kwargs: Any) -> ReceiveFile:
        return ReceiveFile(folder)

    dimse_messages.NamedTemporaryFile = factory  # type: ignore[attr-defined,assignment]


def remove_stale(folder: Path, older_than_seconds: float) -> int:
    """Delete receive files left by aborted associations; returns how many were removed."""
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
