"""A small process supervisor for ``ainode run``: start children, restart crashes, stop all.

Each child is a separate process (the SCP/scheduler and the worker), so a
crash in one never takes the other down; a child that exits unexpectedly is
restarted with a growing delay, and SIGTERM/SIGINT stop the whole group.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 20.0
MAX_RESTART_DELAY_SECONDS = 30.0


@dataclass
class Child:
    """One supervised command and its current process."""

    name: str
    argv: Sequence[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        """Start (or restart) the command."""
        self.process = subprocess.Popen(list(self.argv))
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


class ProcessGroup:
    """Runs children until told to stop; restarts any that exit on their own."""

    def __init__(
        self, children: Sequence[Child], stop_timeout: float = STOP_TIMEOUT_SECONDS
    ) -> None:
        self.children = list(children)
        self.stop_timeout = stop_timeout
        self._stopping = threading.Event()

    def request_stop(self, *_args: object) -> None:
        """Ask the group to stop (signal handler)."""
        self._stopping.set()

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit code for the CLI."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for child in self.children:
            child.start()
        while not self._stopping.wait(0.5):
            for child in self.children:
                self._restart_if_exited(child)
        self.stop()
        return 0

    def _restart_if_exited(self, child: Child) -> None:
        assert child.process is not None
        code = child.process.poll()
        if code is None:
            return
        if time.monotonic() - child.started_at > 60:
            child.restarts = 0
        delay = min(MAX_RESTART_DELAY_SECONDS, 2.0**child.restarts)
        log.error("%s exited with code %s; restarting in %.0fs", child.name, code, delay)
        if self._stopping.wait(delay):
            return
        child.restarts += 1
        child.start()

    def stop(self) -> None:
        """Terminate every child, then kill those still running after a grace period."""
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", child.name)
                child.process.kill()
                child.process.wait()
