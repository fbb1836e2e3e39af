"""Several receiver processes sharing the DICOM port (``SO_REUSEPORT``).

The Storage SCP serves each association in a thread of one process, so
concurrent associations share one GIL.  With ``AINODE_RECEIVER_PROCESSES=N`` the node
runs the Storage SCP in ``N`` processes: the service's own SCP plus ``N - 1``
children, each binding the same address with ``SO_REUSEPORT`` so the kernel
spreads incoming connections over them.  Every child does exactly what the
main SCP does (same handlers, spool, database); it tells the parent about each
recorded study through a pipe so the stability monitor wakes up as it would
for an instance received in the main process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from core.config import Settings

log = logging.getLogger(__name__)


def reuse_port_supported() -> bool:
    """Whether this platform has ``SO_REUSEPORT``."""
    return hasattr(socket, "SO_REUSEPORT")


def _child_main(settings_json: str, port: int, notify: Connection) -> None:
    """Entry point of a receiver child: one more Storage SCP on the shared port."""
    from core.db.session import make_engine, make_session_factory
    from dicom_node.server import StorageSCP

    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s receiver %(process)d %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    engine = make_engine(settings.effective_database_url)
    lock = threading.Lock()

    def recorded(study_id: int) -> None:
        with lock, contextlib.suppress(OSError):
            notify.send(study_id)

    scp = StorageSCP(
        settings.model_copy(update={"port": port}),
        make_session_factory(engine),
        on_recorded=recorded,
        reuse_port=True,
        clean_spool=False,
    )
    scp.start()
    notify.send(READY)
    # Exit with the parent: a closed pipe ends the wait as well as SIGTERM.
    watcher = threading.Thread(target=_wait_parent, args=(notify, stop), daemon=True)
    watcher.start()
    stop.wait()
    scp.stop()
    engine.dispose()


def _wait_parent(connection: Connection, stop: threading.Event) -> None:
    with contextlib.suppress(EOFError, OSError):
        while not stop.is_set():
            connection.recv()  # the parent never sends; EOF means it is gone
    stop.set()


#: What a child sends once it listens.
READY = "ready"
#: Seconds a child may take to start listening.
START_TIMEOUT_SECONDS = 60.0


class ReceiverPool:
    """The ``N - 1`` extra receiver processes of a node (started after the main SCP)."""

    def __init__(self, settings: Settings, on_recorded: Callable[[int], None]) -> None:
        self.settings = settings
        self._on_recorded = on_recorded
        self._context = multiprocessing.get_context("spawn")
        self._children: list[tuple[BaseProcess, Connection]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def pids(self) -> list[int]:
        """Process ids of the running children."""
        return [process.pid for process, _ in self._children if process.pid is not None]

    def start(self, port: int, count: int) -> None:
        """Start ``count`` children listening on ``port`` (already bound by the parent).

        Returns once every child listens (or failed to start, which is logged).
        """
        settings_json = self.settings.model_dump_json()
        for _ in range(count):
            parent_end, child_end = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_child_main,
                args=(settings_json, port, child_end),
                name="ainode-receiver",
                daemon=True,
            )
            process.start()
            child_end.close()
            self._await_ready(process, parent_end)
            self._children.append((process, parent_end))
            thread = threading.Thread(
                target=self._relay, args=(process, parent_end), name="receiver-relay", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("started %d extra receiver processes on port %d", count, port)

    def _await_ready(self, process: BaseProcess, connection: Connection) -> None:
        """Wait until a child listens, so that the port is served once ``start`` returns."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with contextlib.suppress(EOFError, OSError):
            while connection.poll(max(0.0, deadline - time.monotonic())):
                if self._deliver(connection.recv()):
                    return
        log.error("receiver process %s did not start listening", process.pid)

    def _deliver(self, message: Any) -> bool:
        """Pass a recorded study id on to ``on_recorded``; True for the child's READY."""
        if message == READY:
            return True
        self._on_recorded(int(message))
        return False

    def _relay(self, process: BaseProcess, connection: Connection) -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                self._deliver(connection.recv())
        if not self._stopping.is_set():
            process.join(1)
            log.error(
                "receiver process %s exited (code %s); the other receivers take its connections",
                process.pid,
                process.exitcode,
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``timeout``)."""
        self._stopping.set()
        for process, _ in self._children:
            if process.is_alive():
                process.terminate()
        for process, connection in self._children:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
            connection.close()
        self._children.clear()
        self._threads.clear()
