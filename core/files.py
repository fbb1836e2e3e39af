"""Durable file writes: write to a partial file, fsync, rename, fsync the folder.

After :func:`commit_file` returns, the file is on disk under its final name;
a crash before that leaves at most a ``*.partial`` file that start-up removes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PARTIAL_SUFFIX = ".partial"


def partial_path(final: Path) -> Path:
    """A unique hidden temp name next to ``final`` (same folder, same file system)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename is durable only after this)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit_file(partial: Path, final: Path) -> int:
    """Make ``partial`` (already fsynced) the durable ``final``; returns its size."""
    os.chmod(partial, 0o600)
    size = partial.stat().st_size
    os.replace(partial, final)
    fsync_dir(final.parent)
    return size


def write_durably(final: Path, write: Callable[[BinaryIO], None]) -> int:
    """Write a file through ``write(handle)`` durably; returns its size in bytes.

    No partial file is left behind if ``write`` or the disk fails.
    """
    final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = partial_path(final)
    try:
        with partial.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        return commit_file(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
