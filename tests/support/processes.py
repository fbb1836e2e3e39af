"""Background server processes that are always stopped by PID / process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self


def tail(path: Path, max_bytes: int = 4000) -> str:
    """Return the last ``max_bytes`` of a text file (empty if it does not exist).

    Parameters
    ----------
    path : Path
        File to read.
    max_bytes : int
        Maximum number of bytes from the end of the file.

    Returns
    -------
    str
        The decoded tail (undecodable bytes replaced).
    """
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""


class BackgroundProcess:
    """A subprocess in its own session whose output goes to a log file.

    Parameters
    ----------
    argv : sequence of str
        Command line.
    log_path : Path
        File receiving stdout and stderr.
    env : mapping, optional
        Extra environment variables (added to the current environment).
    cwd : Path, optional
        Working directory.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None if not started."""
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Start the process in a new session (its own process group)."""
        if self.proc is not None:
            raise RuntimeError(f"already started: {self.argv[0]} (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,
            )

    def poll(self) -> int | None:
        """Return the exit code if the process has exited, else None."""
        if self.proc is None:
            raise RuntimeError("not started")
        return self.proc.poll()

    def log_tail(self, max_bytes: int = 4000) -> str:
        """Return the tail of the process log."""
        return tail(self.log_path, max_bytes)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Terminate the process group, then kill it if it does not exit in time.

        Safe to call more than once and on a process that already exited.

        Parameters
        ----------
        timeout : float
            Seconds to wait after SIGTERM before sending SIGKILL.

        Returns
        -------
        int or None
            The exit code, or None if the process was never started.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
        return proc.returncode


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to process group ``pgid``, ignoring a group that is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ScopedPeer(ABC):
    """A peer a test runs for one ``with`` block: started on entry, torn down on exit.

    Teardown runs whatever the block raised, so no server outlives its test.
    """

    @abstractmethod
    def start(self) -> Self:
        """Start the peer; returns it once it serves."""

    @abstractmethod
    def teardown(self) -> None:
        """Stop the peer by PID and remove what it owns."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.teardown()
