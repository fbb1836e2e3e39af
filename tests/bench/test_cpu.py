"""The ingest bench's CPU accounting: ``/proc`` parsing and who is charged for what."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.cpu import CLOCK_TICKS_PER_SECOND, CpuAccount, MachineTimes, _process_times, tree_ticks


def _spin(cpu_seconds: float) -> None:
    """Burn ``cpu_seconds`` of this process's CPU."""
    end = time.process_time() + cpu_seconds
    while time.process_time() < end:
        pass


def test_machine_times_sum_busy_fields_and_keep_waits_apart() -> None:
    times = MachineTimes.parse("cpu  100 5 40 900 30 2 3 7 11 0\n")
    assert times == MachineTimes(busy=100 + 5 + 40 + 2 + 3, idle=900, iowait=30, stolen=7)
    assert times.total == 150 + 900 + 30 + 7


def test_machine_times_refuse_a_single_cores_line() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        MachineTimes.parse("cpu0 1 2 3 4 5 6 7 8 9 10")


def test_machine_times_difference_is_per_field() -> None:
    later = MachineTimes(busy=50, idle=40, iowait=9, stolen=1)
    earlier = MachineTimes(busy=20, idle=10, iowait=4, stolen=1)
    assert later - earlier == MachineTimes(busy=30, idle=30, iowait=5, stolen=0)


def test_process_stat_with_parentheses_in_the_command_name() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    line = "4242 (odd) (name)) S 17 4242 4242 0 -1 4194304 10 0 0 0 120 30 5 2 20 0 1 0"
    assert _process_times(line) == (4242, 17, 120 + 30 + 5 + 2)


def test_tree_counts_a_living_child_of_the_root() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        with open(f"/proc/{child.pid}/stat", encoding="utf-8") as stat:
            _, _, own = _process_times(stat.read())
        with open(f"/proc/{os.getpid()}/stat", encoding="utf-8") as stat:
            _, _, mine = _process_times(stat.read())
        # Both were read before the tree: the tree cannot count less than them.
        assert tree_ticks(os.getpid()) >= mine + own
    finally:
        child.communicate(b"")


def test_account_charges_the_receiver_tree_and_the_reaped_senders() -> None:
    sender = [
        sys.executable,
        "-c",
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass",
    ]
    with CpuAccount(os.getpid()) as account:
        _spin(0.3)
        subprocess.run(sender, check=True)
    # 0.3 s of CPU each, counted in clock ticks (10 ms on Linux).
    assert account.receiver_ticks >= 0.25 * CLOCK_TICKS_PER_SECOND
    assert account.sender_seconds >= 0.25
    assert account.machine.busy >= account.receiver_ticks // 2
    figures = account.per_instance(10)
    assert figures["sender_ms"] >= 25
    assert figures["receiver_ms"] >= 25
    assert 0 < figures["busy"] <= 1
    assert figures["busy"] + figures["idle"] + figures["iowait"] <= 1.0001
