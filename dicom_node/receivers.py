"""Several receiver processes sharing the DICOM port.

The Storage SCP serves each association in a thread of one process, so
concurrent associations share one GIL.  With ``AINODE_RECEIVER_PROCESSES=N`` (N > 1)
the node runs the Storage SCP in ``N`` child processes that inherit the main
process's listening socket (the pre-fork model of web servers); the main process
only listens and records.  Each child waits in a blocking ``accept`` on that one
socket; the kernel hands each new connection to the process that has waited
longest, so connections are spread evenly over the children (``SO_REUSEPORT``
would hash them onto per-process sockets instead, and 4 associations often land
3 + 1 on 2 processes).  A child does what a single-process SCP does (same
handlers, same spool) except writing to the database: it sends each instance's
row to the main process, which records the rows of all children together (see
:mod:`dicom_node.remote_recording`) and wakes the stability monitor.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from core.config import Settings
from dicom_node.recorder import Recorder
from dicom_node.remote_recording import RecordingServer, RemoteRecorder

log = logging.getLogger(__name__)


def _child_main(settings_json: str, listener: socket.socket, connection: Connection) -> None:
    """Entry point of a receiver child: one more Storage SCP on the shared socket."""
    from dicom_node.server import StorageSCP

    settings = Settings.model_validate_json(settings_json)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s receiver %(process)d %(name)s: %(message)s",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    # Exit with the parent: a closed pipe ends the wait as well as SIGTERM.
    recorder = RemoteRecorder(connection, on_closed=stop.set)
    scp = StorageSCP(settings, recorder, listener=listener, clean_spool=False)
    scp.start()
    recorder.send(READY)
    stop.wait()
    scp.stop()


#: What a child sends once it accepts connections.
READY = "ready"
#: Seconds a child may take to start accepting.
START_TIMEOUT_SECONDS = 60.0


class ReceiverPool:
    """The receiver processes of a node (started once the main process listens).

    Parameters
    ----------
    settings:
        The node's settings (the children get the same).
    recorder:
        The main process's recorder: it records the children's rows too.
    on_recorded:
        Called with the study id of each row recorded for a child.
    """

    def __init__(
        self, settings: Settings, recorder: Recorder, on_recorded: Callable[[int], None]
    ) -> None:
        self.settings = settings
        self._server = RecordingServer(recorder, on_recorded, settings.max_associations)
        self._context = multiprocessing.get_context("spawn")
        self._children: list[tuple[BaseProcess, Connection]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    @property
    def pids(self) -> list[int]:
        """Process ids of the running children."""
        return [process.pid for process, _ in self._children if process.pid is not None]

    def start(self, listener: socket.socket, count: int) -> None:
        """Start ``count`` children accepting on ``listener`` (the parent's listening socket).

        Returns once every child accepts (or failed to start, which is logged).
        """
        settings_json = self.settings.model_dump_json()
        for _ in range(count):
            parent_end, child_end = self._context.Pipe(duplex=True)
            process = self._context.Process(
                target=_child_main,
                args=(settings_json, listener, child_end),
                name="ainode-receiver",
                daemon=True,
            )
            process.start()
            child_end.close()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._serve,
                args=(process, parent_end, ready),
                name="receiver-rows",
                daemon=True,
            )
            thread.start()
            if not ready.wait(START_TIMEOUT_SECONDS) or not process.is_alive():
                log.error("receiver process %s did not start accepting", process.pid)
            self._children.append((process, parent_end))
            self._threads.append(thread)
        log.info("started %d receiver processes on port %d", count, listener.getsockname()[1])

    def _serve(self, process: BaseProcess, connection: Connection, ready: threading.Event) -> None:
        self._server.serve(connection, on_other=lambda message: ready.set())
        ready.set()  # a child that died before it accepted is not waited for
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
        for process, _ in self._children:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(timeout)
        # A child's pipe ends with it: its last rows are handed to the recording
        # pool before the pool is closed, and its pipe is closed after it was read.
        for thread in self._threads:
            thread.join(timeout)
        for _, connection in self._children:
            connection.close()
        self._server.close()
        self._children.clear()
        self._threads.clear()
