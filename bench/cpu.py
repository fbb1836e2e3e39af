"""Where the CPU went while a run was measured: the whole machine, the receiver, the senders.

On a machine with few cores the senders share them with the receiver, so a
receiver's rate over several associations is bound by the CPU every party
spends per instance and by how much of the time the cores are busy at all.
The ingest bench takes these figures in every run, beside the rates, so the
report says why a ratio is what it is, not only that it is.  Read from
``/proc`` and ``getrusage`` only (no third-party package), in clock ticks.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Self

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


@dataclass(frozen=True)
class MachineTimes:
    """The machine's cumulative CPU time over all cores, in clock ticks, by what the cores did."""

    busy: int
    idle: int
    iowait: int
    stolen: int

    @classmethod
    def parse(cls, line: str) -> MachineTimes:
        """From the aggregate ``cpu`` line of ``/proc/stat``.

        Busy is user, nice, system, irq and softirq (guest time is already in
        user); ``iowait`` is idle time with a task waiting for the disk.
        """
        name, *fields = line.split()
        if name != "cpu":
            raise ValueError(f"not the aggregate cpu line of /proc/stat: {line!r}")
        user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        return cls(user + nice + system + irq + softirq, idle, iowait, steal)

    @classmethod
    def read(cls) -> MachineTimes:
        """The machine's times now."""
        with open(PROC / "stat", encoding="ascii") as stat:
            return cls.parse(stat.readline())

    def __sub__(self, earlier: MachineTimes) -> MachineTimes:
        return MachineTimes(
            self.busy - earlier.busy,
            self.idle - earlier.idle,
            self.iowait - earlier.iowait,
            self.stolen - earlier.stolen,
        )

    @property
    def total(self) -> int:
        """Every core's ticks: wall time times the number of cores."""
        return self.busy + self.idle + self.iowait + self.stolen


def _process_times(stat: str) -> tuple[int, int, int]:
    """``(pid, ppid, CPU ticks of the process and of its reaped children)`` from a ``stat`` line."""
    pid, rest = stat.split(" (", 1)
    # The command name may hold spaces and parentheses; the fields follow its last ')'.
    fields = rest.rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return int(pid), int(fields[1]), utime + stime + cutime + cstime


def tree_ticks(root: int) -> int:
    """CPU ticks spent by ``root`` and every descendant alive now, and by their reaped children.

    A child that has exited and been waited for is counted in its parent's
    children's times, so a receiver that forks one process per association is
    counted whole.
    """
    ticks: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid, ppid, spent = _process_times((entry / "stat").read_text(encoding="utf-8"))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        ticks[pid] = spent
        children.setdefault(ppid, []).append(pid)
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += ticks.get(pid, 0)
        pending += children.get(pid, [])
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
        self.receiver_ticks = 0
        self.sender_seconds = 0.0

    def _receiver(self) -> int:
        return tree_ticks(self.receiver_pid) if self.receiver_pid else 0

    def __enter__(self) -> Self:
        self._start = (MachineTimes.read(), self._receiver(), _reaped_children_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        machine, receiver, senders = self._start
        self.machine = MachineTimes.read() - machine
        self.receiver_ticks = self._receiver() - receiver
        self.sender_seconds = _reaped_children_seconds() - senders

    def per_instance(self, instances: int) -> dict[str, float]:
        """CPU ms per instance (machine, receiver, senders) and the shares of the cores' time."""
        tick_ms = 1000 / CLOCK_TICKS_PER_SECOND / instances
        total = self.machine.total or 1
        return {
            "machine_ms": round(self.machine.busy * tick_ms, 3),
            "receiver_ms": round(self.receiver_ticks * tick_ms, 3),
            "sender_ms": round(self.sender_seconds * 1000 / instances, 3),
            "busy": round(self.machine.busy / total, 3),
            "iowait": round(self.machine.iowait / total, 3),
            "idle": round(self.machine.idle / total, 3),
        }
