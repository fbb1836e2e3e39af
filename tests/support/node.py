"""Running the real ``ainode`` command in subprocesses, isolated in a test folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from .ports import LOOPBACK, free_port, wait_for_port
from .processes import BackgroundProcess


class NodeProcesses:
    """``ainode`` processes (run, serve, worker) sharing one environment; stopped by PID.

    Parameters
    ----------
    workdir : Path
        Spool and logs go here.
    env : mapping
        ``AINODE_*`` settings on top of the test defaults (loopback, a free
        port, 1 s stability).
    """

    #: The module ``python -m`` runs as ``ainode``, and the folder it runs in (None: this one).
    entry_module = "app.cli"
    source_root: Path | None = None

    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            "AINODE_SPOOL_DIR": str(workdir / "var"),
            "AINODE_HOST": LOOPBACK,
            "AINODE_PORT": str(self.port),
            "AINODE_STABILITY_SECONDS": "1",
            "AINODE_LOG_LEVEL": "INFO",
            "AINODE_DELIVERY_BACKOFF_SECONDS": "0.5",
            # ``ainode run`` starts the console too: on a port of its own, never the default 8080.
            "AINODE_WEB_PORT": str(free_port()),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.processes: list[BackgroundProcess] = []

    def _environ(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("AINODE_")}
        return {**base, **self.env}

    def cli(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one ``ainode`` command to completion (``stdin``: text fed to it)."""
        proc = subprocess.run(
            [sys.executable, "-m", self.entry_module, *args],
            cwd=self.source_root,
            capture_output=True,
            text=True,
            env=self._environ(),
            timeout=120,
            check=False,
            input=stdin,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"ainode {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, *args: str) -> BackgroundProcess:
        """Start a long-running ``ainode`` command; its output goes to a log file."""
        name = "-".join(args)
        process = BackgroundProcess(
            [sys.executable, "-m", self.entry_module, *args],
            log_path=self.workdir / f"ainode-{name}-{len(self.processes)}.log",
            env=self._environ(),
            cwd=self.source_root,
        )
        process.start()
        self.processes.append(process)
        return process

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Wait until the SCP accepts connections (with the logs if it died).

        The node listens only once its receiver processes (if any) have started.
        """
        try:
            wait_for_port(LOOPBACK, self.port, timeout=timeout)
        except Exception as exc:
            raise AssertionError(f"node not listening: {exc}\n{self.logs()[-4000:]}") from exc

    def status(self) -> dict[str, Any]:
        """``ainode status --json`` as a dict."""
        return json.loads(self.cli("status", "--json", "--limit", "50").stdout)

    def logs(self) -> str:
        """Everything the node's processes have logged so far."""
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("ainode-*.log"))
        )

    def stop(self) -> None:
        """Stop every process (SIGTERM to its group, then SIGKILL)."""
        for process in reversed(self.processes):
            process.stop(timeout=20)
        self.processes.clear()

    def __enter__(self) -> NodeProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
