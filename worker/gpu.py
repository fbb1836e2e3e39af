"""At most N jobs at a time on one GPU, across every worker process of the machine.

Two worker processes sharing a GPU would otherwise both load their volume
onto it and run out of memory.  Each device has ``gpu_jobs_per_device``
slot files under ``<spool>/locks``; a job holds an exclusive ``flock`` on
one while it infers.  The kernel releases the lock when the holder dies, so
a crashed worker never leaves a slot taken.  CPU inference takes no slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["device_slot"]


@contextlib.contextmanager
def device_slot(locks_dir: Path, device: str, slots: int) -> Iterator[int | None]:
    """Hold one of the ``slots`` inference slots of ``device`` for the ``with`` block.

    Parameters
    ----------
    locks_dir:
        Folder of the slot files (created when missing).
    device:
        Torch device string; ``cpu`` needs no slot and yields None at once.
    slots:
        Concurrent jobs allowed on the device.

    Yields
    ------
    int or None
        The slot number held, None for the CPU.
    """
    if not device.startswith("cuda"):
        yield None
        return
    locks_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", device.lower())
    handles = [
        os.open(locks_dir / f"{name}.{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        for slot in range(slots)
    ]
    held = None
    try:
        for slot, handle in enumerate(handles):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            held = slot
            break
        if held is None:
            held = os.getpid() % slots
            fcntl.flock(handles[held], fcntl.LOCK_EX)
        yield held
    finally:
        for handle in handles:
            os.close(handle)
