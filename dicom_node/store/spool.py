"""Durable storage of received instances: receive file, fsync, rename, fsync the folder.

An instance is only answered with success once its bytes are on disk under
their final name; a crash or a full disk leaves either the previous file or
nothing, never a half-written one.  File names come from UIDs only when they
are plain DICOM UIDs, otherwise from a hash, so no UID can escape the spool.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.files import PARTIAL_SUFFIX, commit_file, fsync_dir, partial_path
from dicom_node.store.receive import ReceiveFile

_PLAIN_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
#: Series folders remembered as present (the memory starts over when full).
MAX_REMEMBERED_FOLDERS = 10_000


def safe_component(uid: str) -> str:
    """A path component for ``uid``: the UID itself if it is a plain UID, else a hash."""
    if len(uid) <= 64 and _PLAIN_UID.match(uid):
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True)
class SpooledFile:
    """Where an instance was stored, relative to the spool root, and its size."""

    relative_path: PurePosixPath
    size_bytes: int


class InstanceSpool:
    """The folder tree ``<root>/<study>/<series>/<sop>.dcm`` of received instances."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Folders this spool made durable or found: not looked up again for each instance.
        self._folders: set[str] = set()

    def relative_path(self, study_uid: str, series_uid: str, sop_uid: str) -> PurePosixPath:
        """The spool-relative path an instance with these UIDs is stored under."""
        return PurePosixPath(
            safe_component(study_uid), safe_component(series_uid), safe_component(sop_uid) + ".dcm"
        )

    def absolute(self, relative: PurePosixPath | str) -> Path:
        """The absolute path of a spool-relative path."""
        return self.root / relative

    def holds(self, relative: PurePosixPath | str) -> bool:
        """Whether a file is stored under the spool-relative path ``relative``."""
        return os.path.exists(os.path.join(self.root, relative))

    def commit(self, received: ReceiveFile, relative: PurePosixPath) -> SpooledFile:
        """Make a received Part-10 file durable at its place in the spool.

        The file is fsynced, renamed into place (copied when the receive
        folder is on another file system) and the folder fsynced; a folder
        created for a new study or series is made durable in its parent too.

        Raises
        ------
        OSError
            When the file cannot be written (``ENOSPC`` for a full disk); no
            partial file is left behind.
        """
        final = os.path.join(self.root, relative)
        folder = os.path.dirname(final)
        self._ensure_folder(folder)
        received.sync()
        try:
            self._move(received, final)
        except FileNotFoundError:
            if os.path.isdir(folder):
                raise
            # The folder was removed since it was remembered: make it again.
            self._folders.discard(folder)
            self._ensure_folder(folder)
            self._move(received, final)
        fsync_dir(folder)
        return SpooledFile(relative_path=relative, size_bytes=received.size)

    def _ensure_folder(self, folder: str) -> None:
        if folder not in self._folders:
            self._make_folders(Path(folder))
            if len(self._folders) >= MAX_REMEMBERED_FOLDERS:
                self._folders.clear()
            self._folders.add(folder)

    def _move(self, received: ReceiveFile, final: str) -> None:
        """Rename the received file to ``final`` (copy it across file systems)."""
        try:
            os.replace(received.path, final)
            received.moved()
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            self._copy(received.path, Path(final))

    @staticmethod
    def _make_folders(folder: Path) -> None:
        """Create ``folder`` (and missing parents) durably: each new entry's parent is fsynced."""
        missing = []
        path = folder
        while not path.exists():
            missing.append(path)
            path = path.parent
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)
            fsync_dir(path.parent)

    @staticmethod
    def _copy(received: Path, final: Path) -> None:
        partial = partial_path(final)
        try:
            with received.open("rb") as src, partial.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            commit_file(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def remove_partials(self) -> int:
        """Delete partial files a crash left behind; returns how many were removed."""
        removed = 0
        for path in self.root.rglob(f"*{PARTIAL_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed
