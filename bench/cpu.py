"""Where the CPU went while a run was measured: the whole machine, the receiver, the senders.

On a machine with few cores the senders share them with the receiver, so a
receiver's rate over several associations is bound by the CPU every party
spends per instance and by how much of the time the cores are busy at all.
The ingest bench takes these figures in every run, beside the rates, so the
report says why a ratio is what it is, not only that it is.  Read with psutil
(as the bench's RSS sampling) and ``getrusage``, in seconds.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass
from typing import Any, Self

import psutil

from bench.common import process_tree


@dataclass(frozen=True)
class MachineTimes:
    """The machine's cumulative CPU time over all cores, in seconds, by what the cores did."""

    busy: float
    idle: float
    iowait: float
    stolen: float

    @classmethod
    def of(cls, times: Any) -> MachineTimes:
        """From :func:`psutil.cpu_times` (Linux fields).

        Busy is user, nice, system, irq and softirq (guest time is already in
        user); ``iowait`` is idle time with a task waiting for the disk.
        """
        busy = times.user + times.nice + times.system + times.irq + times.softirq
        return cls(busy, times.idle, times.iowait, times.steal)

    @classmethod
    def read(cls) -> MachineTimes:
        """The machine's times now."""
        return cls.of(psutil.cpu_times())

    def __sub__(self, earlier: MachineTimes) -> MachineTimes:
        return MachineTimes(
            self.busy - earlier.busy,
            self.idle - earlier.idle,
            self.iowait - earlier.iowait,
            self.stolen - earlier.stolen,
        )

    @property
    def total(self) -> float:
        """Every core's time: wall time times the number of cores."""
        return self.busy + self.idle + self.iowait + self.stolen


def process_seconds(process: psutil.Process) -> float:
    """CPU seconds spent by ``process`` and by its children that it has waited for."""
    spent = process.cpu_times()
    return spent.user + spent.system + spent.children_user + spent.children_system


def tree_seconds(root: int) -> float:
    """CPU seconds spent by ``root`` and every descendant alive now, and by their reaped children.

    A child that has exited and been waited for is counted in its parent's
    children's times, so a receiver that forks one process per association is
    counted whole.  A receiver that has exited raises ``psutil.NoSuchProcess``
    (its figures would be wrong, not zero); a descendant that exits meanwhile
    is counted by its parent once reaped.
    """
    receiver, *descendants = process_tree(psutil.Process(root))
    total = process_seconds(receiver)
    for process in descendants:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process_seconds(process)
    return total


def _reaped_children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuAccount:
    """The CPU spent during a ``with`` block: machine, receiver's process tree, senders.

    The senders are this process's children that exit within the block (the
    ``storescu`` processes, waited for before it ends); the receiver is the
    process tree of ``receiver_pid`` (none for an in-process measurement).
    """

    def __init__(self, receiver_pid: int | None = None) -> None:
        self.receiver_pid = receiver_pid
        self.machine = MachineTimes(0, 0, 0, 0)
        self.receiver_seconds = 0.0
        self.sender_seconds = 0.0

    def _receiver(self) -> float:
        return tree_seconds(self.receiver_pid) if self.receiver_pid else 0.0

    def __enter__(self) -> Self:
        self._start = (MachineTimes.read(), self._receiver(), _reaped_children_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        machine, receiver, senders = self._start
        self.machine = MachineTimes.read() - machine
        self.receiver_seconds = self._receiver() - receiver
        self.sender_seconds = _reaped_children_seconds() - senders

    def per_instance(self, instances: int) -> dict[str, float]:
        """CPU ms per instance (machine, receiver, senders) and the shares of the cores' time."""
        ms = 1000 / instances
        total = self.machine.total or 1
        return {
            "machine_ms": round(self.machine.busy * ms, 3),
            "receiver_ms": round(self.receiver_seconds * ms, 3),
            "sender_ms": round(self.sender_seconds * ms, 3),
            "busy": round(self.machine.busy / total, 3),
            "iowait": round(self.machine.iowait / total, 3),
            "idle": round(self.machine.idle / total, 3),
        }
