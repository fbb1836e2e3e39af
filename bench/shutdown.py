"""How long an idle ``ainode run`` takes to exit after SIGTERM (target: under 5 s).

Starts ``ainode run`` (SCP + scheduler, a Celery worker and the console) in a
fresh folder, waits until the SCP listens and the worker has started, sends
SIGTERM to the supervisor and records when each child and the supervisor have
exited.  Brokers: the embedded one, and Redis on 127.0.0.1 unless
``BENCH_SHUTDOWN_BROKERS=embedded``.  ``python -m bench.shutdown``
(``BENCH_RUNS`` repetitions, medians reported); results go to
``bench/results/shutdown.json``.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.common import RESULTS_DIR, RUNS, median
from tests.support.node import NodeProcesses
from tests.support.waiting import wait_until

#: Brokers measured by default: the embedded one and Redis (a fresh database number).
BROKERS = {"embedded": "", "redis": "redis://127.0.0.1:6379/13"}


def _worker_started(node: NodeProcesses) -> bool:
    """The Celery worker has printed its banner's task list, so it consumes from its queues."""
    return "[tasks]" in node.logs()


def _alive(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie waiting to be reaped has exited)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _exit_times(
    supervisor: psutil.Process, children: dict[int, str], timeout: float = 60.0
) -> dict[str, float]:
    """Send SIGTERM to ``supervisor``; seconds until each child and the supervisor have exited.

    A process still running after ``timeout`` seconds fails the run, naming it.
    """
    waiting = {pid: psutil.Process(pid) for pid in children}
    exited: dict[str, float] = {}
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)

    def all_exited() -> bool:
        for pid, child in list(waiting.items()):
            if not _alive(child):
                exited[children[pid]] = time.monotonic() - started
                del waiting[pid]
        return not waiting and not _alive(supervisor)

    def still_running() -> str:
        names = [children[pid] for pid in waiting]
        if _alive(supervisor):
            names.append("ainode run")
        return f"still running {timeout:.0f} s after SIGTERM: {', '.join(names)}"

    wait_until(all_exited, timeout, 0.01, still_running)
    exited["ainode run"] = time.monotonic() - started
    return exited


def stop_once(broker_url: str, settle_seconds: float = 2.0) -> dict[str, float]:
    """One idle ``ainode run``, stopped by SIGTERM: seconds to exit per process, and its code."""
    env = {"AINODE_BROKER_URL": broker_url} if broker_url else {}
    with (
        tempfile.TemporaryDirectory(prefix="ainode-shutdown-") as folder,
        NodeProcesses(Path(folder), env=env) as node,
    ):
        process = node.start("run")
        node.wait_listening()
        wait_until(lambda: _worker_started(node), timeout=60, message="the worker never started")
        time.sleep(settle_seconds)
        assert process.pid is not None and process.proc is not None
        supervisor = psutil.Process(process.pid)
        children = {child.pid: child.cmdline()[-1] for child in supervisor.children()}
        times = _exit_times(supervisor, children)
        times["exit code"] = float(process.proc.wait(timeout=30))
        return times


def run(
    brokers: dict[str, str], runs: int = RUNS, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure ``runs`` stops per broker; each process's seconds to exit, every run and median."""
    results: dict[str, Any] = {}
    for name, url in brokers.items():
        stops = [stop_once(url) for _ in range(runs)]
        processes = [key for key in stops[0] if key != "exit code"]
        results[name] = {
            "runs": stops,
            "median_seconds": {key: median([stop[key] for stop in stops]) for key in processes},
        }
        log(f"{name}: {results[name]['median_seconds']}")
    return results


def main() -> None:
    """Run the bench on the configured brokers and write ``bench/results/shutdown.json``."""
    chosen = os.environ.get("BENCH_SHUTDOWN_BROKERS", ",".join(BROKERS)).split(",")
    results = run({name: BROKERS[name] for name in chosen})
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS_DIR / "shutdown.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
