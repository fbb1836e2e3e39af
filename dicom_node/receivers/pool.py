"""Several receiver processes behind the DICOM port.

The Storage SCP serves each association in a thread of one process, so
concurrent associations share one GIL.  With ``AINODE_RECEIVER_PROCESSES=N``
(N > 1) the node runs the Storage SCP in ``N`` child processes.  The main
process listens, accepts each connection (refusing hosts off the allow-list)
and hands it to the child with the fewest open associations (see
:mod:`dicom_node.receivers.handoff`); the children serve associations and the main
process records their rows.  A child (:mod:`dicom_node.receivers.process`) does
what a single-process SCP does (same handlers, same spool) except writing to
the database: it sends each instance's row to the main process, which records
the rows of all children together (see :mod:`dicom_node.recording.remote`) and
wakes the stability monitor.  Children are started as fresh interpreters that
load only the SCP's modules (≈ 45 MB each; the main process takes ≈ 120 MB).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from dicom_node.receivers.handoff import HandoffClosed, hand_over, handoff_pair
from dicom_node.receivers.process import (
    ASSOCIATION_ENDED,
    ASSOCIATION_NEGOTIATED,
    ASSOCIATION_RELEASED,
    READY,
)
from dicom_node.recording.remote import BatchRecorder, ChildChannel, RecordingServer
from dicom_node.scp.settings import ScpSettings

log = logging.getLogger(__name__)

#: Seconds a child may take to start.
START_TIMEOUT_SECONDS = 60.0


def _start_child(scp_settings: str) -> tuple[subprocess.Popen[bytes], Connection, socket.socket]:
    """Start a receiver process: the process, and the main process's ends of its channels."""
    rows_parent, rows_child = socket.socketpair()
    handoff_parent, handoff_child = handoff_pair()
    fds = (handoff_child.fileno(), rows_child.fileno())
    try:
        process = subprocess.Popen(
            # -P: the working folder is not put on the module path, so a folder the
            # node happens to be started from cannot shadow the node's own modules
            [sys.executable, "-P", "-m", "dicom_node.receivers.process", *map(str, fds)],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
        )
    finally:
        rows_child.close()
        handoff_child.close()
    rows = Connection(rows_parent.detach())
    with contextlib.suppress(OSError):  # a child that died at once is reported as it closes
        rows.send(scp_settings)
    return process, rows, handoff_parent


@dataclass
class _Child:
    """A receiver process as the main process sees it."""

    process: subprocess.Popen[bytes]
    rows: Connection
    handoff: socket.socket
    ready: threading.Event
    #: Connections it serves (for the balance) and those of them with an association.
    open_associations: int = 0
    associations: int = 0
    alive: bool = True


class ReceiverPool:
    """The receiver processes of a node, and the hand-over of connections to them.

    Parameters
    ----------
    settings:
        The Storage SCP's settings, which every child gets.
    recorder:
        The main process's recorder: it records the children's rows.
    on_recorded:
        Called with the study id of each row recorded for a child.
    """

    def __init__(
        self, settings: ScpSettings, recorder: BatchRecorder, on_recorded: Callable[[int], None]
    ) -> None:
        self.settings = settings
        self._server = RecordingServer(recorder, on_recorded)
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._recording: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def pids(self) -> list[int]:
        """Process ids of the running children."""
        return [child.process.pid for child in self._children]

    @property
    def open_associations(self) -> int:
        """Associations the children are serving now."""
        with self._lock:
            return sum(child.open_associations for child in self._children if child.alive)

    def start(self, count: int) -> None:
        """Start ``count`` children; returns once each serves (or failed to start, logged)."""
        scp_settings = self.settings.to_json()
        for _ in range(count):
            process, rows, handoff = _start_child(scp_settings)
            self._children.append(_Child(process, rows, handoff, threading.Event()))
        channels = [
            ChildChannel(
                child.rows,
                on_message=lambda message, child=child: self._message(child, message),
                on_closed=lambda child=child: self._closed(child),
            )
            for child in self._children
        ]
        self._recording = threading.Thread(
            target=self._server.serve, args=(channels,), name="child-rows", daemon=True
        )
        self._recording.start()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        for child in self._children:
            if not child.ready.wait(max(0.0, deadline - time.monotonic())) or not child.alive:
                log.error("receiver process %s did not start", child.process.pid)
        log.info("%d receiver processes started", count)

    def hand_over(self, connection: socket.socket) -> None:
        """Give an accepted connection to the live child with the fewest open associations."""
        try:
            while True:
                with self._lock:
                    live = [child for child in self._children if child.alive]
                    if not live:
                        log.error("no receiver process to serve a connection: closing it")
                        return
                    child = min(live, key=lambda candidate: candidate.open_associations)
                    # Only negotiated associations count against the limit: idle sockets do not.
                    active = sum(candidate.associations for candidate in live)
                    child.open_associations += 1
                try:
                    hand_over(child.handoff, connection, active)
                    return
                except HandoffClosed:
                    with self._lock:
                        child.alive = False
        finally:
            connection.close()  # the child has its own copy

    def _message(self, child: _Child, message: object) -> None:
        if message == ASSOCIATION_ENDED:
            with self._lock:
                child.open_associations -= 1
        elif message == ASSOCIATION_NEGOTIATED:
            with self._lock:
                child.associations += 1
        elif message == ASSOCIATION_RELEASED:
            with self._lock:
                child.associations -= 1
        elif message == READY:
            child.ready.set()

    def _closed(self, child: _Child) -> None:
        """A child's pipe closed: it has exited (or is about to)."""
        with self._lock:
            child.alive = False
        child.ready.set()  # a child that died before it served is not waited for
        if not self._stopping.is_set():
            threading.Thread(target=self._report_exit, args=(child.process,), daemon=True).start()

    @staticmethod
    def _report_exit(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1)
        log.error(
            "receiver process %s exited (code %s); the other receivers take its connections",
            process.pid,
            process.returncode,
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``timeout``)."""
        self._stopping.set()
        for child in self._children:
            if child.process.poll() is None:
                child.process.terminate()
        for child in self._children:
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                child.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout)
        # The recording thread ends when the last child's pipe has closed: the
        # children's last rows are recorded before their pipes are closed here.
        if self._recording is not None:
            self._recording.join(timeout)
        for child in self._children:
            child.rows.close()
            child.handoff.close()
        self._children.clear()
        self._recording = None
