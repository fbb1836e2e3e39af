"""The ingest bench's CPU accounting: the machine's times, the receiver's tree, the senders."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

from bench.cpu import CpuAccount, MachineTimes, process_seconds, tree_seconds


def _spin(cpu_seconds: float) -> None:
    """Burn ``cpu_seconds`` of this process's CPU."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_machine_times_sum_busy_fields_and_keep_waits_apart() -> None:
    fields = dict(user=100, nice=5, system=40, idle=900, iowait=30, irq=2, softirq=3, steal=7)
    times = MachineTimes.of(SimpleNamespace(guest=11, guest_nice=0, **fields))
    assert times == MachineTimes(busy=100 + 5 + 40 + 2 + 3, idle=900, iowait=30, stolen=7)
    assert times.total == 150 + 900 + 30 + 7


def test_machine_times_read_from_this_machine() -> None:
    times = MachineTimes.read()
    assert times.busy > 0
    assert times.total >= times.busy + times.idle


def test_machine_times_difference_is_per_field() -> None:
    later = MachineTimes(busy=50, idle=40, iowait=9, stolen=1)
    earlier = MachineTimes(busy=20, idle=10, iowait=4, stolen=1)
    assert later - earlier == MachineTimes(busy=30, idle=30, iowait=5, stolen=0)


def test_tree_counts_a_living_child_of_the_root() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        own = process_seconds(psutil.Process(child.pid))
        mine = process_seconds(psutil.Process(os.getpid()))
        # Both were read before the tree: the tree cannot count less than them.
        assert tree_seconds(os.getpid()) >= mine + own
    finally:
        child.communicate(b"")


def test_tree_of_a_receiver_that_is_gone_is_an_error() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    with pytest.raises(psutil.NoSuchProcess):
        tree_seconds(gone.pid)


def test_account_charges_the_receiver_tree_and_the_reaped_senders() -> None:
    sender = [
        sys.executable,
        "-c",
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
    ]
    with CpuAccount(os.getpid()) as account:
        _spin(0.3)
        subprocess.run(sender, check=True)
    # 0.3 s of CPU each; the kernel counts in clock ticks (10 ms on Linux).
    assert account.receiver_seconds >= 0.25
    assert account.sender_seconds >= 0.25
    assert account.machine.busy >= account.receiver_seconds / 2
    figures = account.per_instance(10)
    assert figures["sender_ms"] >= 25
    assert figures["receiver_ms"] >= 25
    assert 0 < figures["busy"] <= 1
    assert figures["busy"] + figures["idle"] + figures["iowait"] <= 1.0001
