"""A private, non-persistent ``redis-server`` on a free loopback port, stopped by PID.

Fault tests that stop the broker use this instead of the shared Redis on 6379,
so no other test (or developer) ever loses its queues.  ``stop()`` then
``start()`` gives an empty server on the same port: what a broker that lost
its memory looks like.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .ports import LOOPBACK, free_port
from .processes import BackgroundProcess, ScopedPeer
from .services import ServiceUnavailable, redis_ping
from .waiting import WaitTimeout, wait_until


class PrivateRedis(ScopedPeer):
    """``redis-server --port P --bind 127.0.0.1 --save "" --appendonly no`` in a temp dir."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ainode-redis-"))
        self._process: BackgroundProcess | None = None
        self._starts = 0

    @property
    def pid(self) -> int | None:
        """PID of the running server, or None."""
        return self._process.pid if self._process is not None else None

    def url(self, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>``."""
        return f"redis://{LOOPBACK}:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        """Start an empty server and wait until it answers PING."""
        if self._process is not None:
            raise RuntimeError(f"redis-server already running (pid {self.pid})")
        self._starts += 1
        argv = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
        ]
        process = BackgroundProcess(argv, self.workdir / f"redis-{self._starts}.log")
        process.start()
        self._process = process

        def ready() -> bool:
            if process.poll() is not None:
                raise ServiceUnavailable(f"redis-server exited: {process.log_tail()}")
            return redis_ping(LOOPBACK, self.port)

        try:
            wait_until(ready, timeout, 0.02)
        except WaitTimeout as exc:
            self.stop()
            raise ServiceUnavailable(f"redis-server did not answer: {process.log_tail()}") from exc
        return self

    def stop(self) -> None:
        """Stop the server by PID (its data is gone: no persistence)."""
        if self._process is not None:
            self._process.stop(timeout=10)
            self._process = None

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    teardown = destroy
