"""Early writeback: found on Linux, harmless to the data, silent on a bad descriptor."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dicom_node.store import writeback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_linux_has_the_call() -> None:
    assert writeback._SYNC_FILE_RANGE is not None


def test_writeback_started_midway_leaves_the_file_as_written(tmp_path: Path) -> None:
    path = tmp_path / "instance.receiving"
    first, second = os.urandom(300_000), os.urandom(1_234)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, first)
        writeback.start_writeback(fd)
        os.write(fd, second)
        os.fsync(fd)
    finally:
        os.close(fd)

    assert path.read_bytes() == first + second


def test_a_failure_is_left_to_the_fsync() -> None:
    # no such descriptor: the call fails (EBADF), and says nothing
    writeback.start_writeback(-1)
