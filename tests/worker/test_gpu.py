"""GPU slots: at most N jobs per device across processes; the CPU needs none."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from worker.gpu import device_slot


def _is_locked(path: Path) -> bool:
    handle = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
    return False


def test_cpu_takes_no_slot(tmp_path: Path) -> None:
    with device_slot(tmp_path / "locks", "cpu", 1) as slot:
        assert slot is None
    assert not (tmp_path / "locks").exists()


def test_slots_are_exclusive_and_released(tmp_path: Path) -> None:
    locks = tmp_path / "locks"
    with device_slot(locks, "cuda:0", 2) as first:
        assert first == 0 and _is_locked(locks / "cuda-0.0.lock")
        with device_slot(locks, "cuda:0", 2) as second:
            assert second == 1 and _is_locked(locks / "cuda-0.1.lock")
        assert not _is_locked(locks / "cuda-0.1.lock")
    assert not _is_locked(locks / "cuda-0.0.lock")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_each_device_has_its_own_slots(tmp_path: Path, device: str) -> None:
    with device_slot(tmp_path, device, 1):
        assert [path.name for path in tmp_path.iterdir()] == [f"{device.replace(':', '-')}.0.lock"]
