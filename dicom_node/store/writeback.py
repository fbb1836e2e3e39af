"""Starting a receive file's writeback early, so that its fsync finds the data on its way.

An instance arrives in chunks; each full chunk is written to the receive file
and handed to the disk at once (Linux ``sync_file_range`` with
``SYNC_FILE_RANGE_WRITE``: start writing the dirty pages, do not wait) while
the rest of the dataset is still arriving.  The fsync that makes the instance
durable then waits for the last chunk and the metadata instead of the whole
file.  The call is advice: the fsync alone decides durability and reports
write errors, and where the call is missing (not Linux) nothing happens.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

#: ``sync_file_range`` flag: start writeback of the range's dirty pages, without waiting.
SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range``, or None where there is none."""
    try:
        # ctypes releases the GIL during the call: other associations go on meanwhile.
        function = ctypes.CDLL(None).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages to disk now, without waiting for them.

    A failure is ignored on purpose: the file's fsync, which follows, reports it.
    """
    if _SYNC_FILE_RANGE is not None:
        # offset 0 and length 0: the whole file, up to its end
        _SYNC_FILE_RANGE(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
