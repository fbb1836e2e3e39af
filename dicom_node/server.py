"""The Storage SCP: a listening socket and a thread per association, as one object.

It accepts Verification and every Storage SOP class in any transfer syntax.
Each connection is served by a :class:`dicom_node.association.StorageAssociation`
(the node's own acceptor: datasets go straight from the socket to a file on
the spool's file system and are never decoded in the association thread).
Connections from hosts off the allow-list are closed at accept, before any
byte is read; DICOM TLS wraps the connection before negotiation.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from core.config import Settings
from core.tls import server_context
from dicom_node.association import StorageAssociation
from dicom_node.negotiation import AssociationPolicy
from dicom_node.receive import remove_stale
from dicom_node.recorder import Recorder
from dicom_node.spool import InstanceSpool
from dicom_node.storage import InstanceStore

log = logging.getLogger(__name__)

#: Connections waiting to be accepted before the kernel refuses more.
LISTEN_BACKLOG = 128
#: How long a thread may hold the GIL while others wait (CPython's default is 5 ms).
#: Association threads mostly wait on sockets and fsync and need the GIL back
#: for a moment after each wait; with several associations the default lets
#: one thread's CPU work stall the others' replies.  Measured on 2 cores with
#: 4 associations: ~560 instances/s at 5 ms, ~700 at 1 ms.
GIL_SWITCH_INTERVAL_SECONDS = 0.001


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """Hosts that may connect at all, or None when any host may (then AE titles decide)."""
    callers = settings.allowed_callers
    if not callers or any(caller.host is None for caller in callers):
        return None
    return frozenset(caller.host for caller in callers if caller.host is not None)


class StorageSCP:
    """The node's DICOM listener: C-ECHO and C-STORE into the spool and the database.

    Parameters
    ----------
    settings:
        AE title, port, allow-list and timeouts.
    recorder:
        Where received instances are recorded: a :class:`GroupCommitRecorder`
        on the database, or in a receiver child the main process.
    on_recorded:
        Called with the study id after each instance is recorded (the
        stability monitor uses it to wake up).
    listener:
        A listening socket shared with other receiver processes (see
        :mod:`dicom_node.receivers`): served instead of binding one, and left
        listening for the others when this SCP stops.
    clean_spool:
        Remove partial files left by an earlier run at start-up; false for
        receiver processes, which start once the main process has done it.
    """

    def __init__(
        self,
        settings: Settings,
        recorder: Recorder,
        on_recorded: Callable[[int], None] = lambda _study_id: None,
        *,
        listener: socket.socket | None = None,
        clean_spool: bool = True,
    ) -> None:
        self.settings = settings
        self.spool = InstanceSpool(settings.incoming_dir)
        self.recorder = recorder
        self.store = InstanceStore(self.spool, self.recorder, on_recorded)
        self._policy = AssociationPolicy(settings)
        self._tls: ssl.SSLContext | None = None
        self._allowed_hosts = allowed_hosts(settings)
        self._listener: socket.socket | None = None
        self._shared_listener = listener
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._acceptor: threading.Thread | None = None
        self._clean_spool = clean_spool

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful when the settings ask for port 0)."""
        return int(self.listener.getsockname()[1])

    @property
    def listener(self) -> socket.socket:
        """The listening socket, to share with other receiver processes."""
        if self._listener is None:
            raise RuntimeError("the SCP is not running")
        return self._listener

    @property
    def receive_dir(self) -> Path:
        """Folder on the spool's file system where datasets are received before storing."""
        return self.settings.spool_path / "tmp"

    def start(self, accept: bool = True) -> None:
        """Start listening, and accepting connections in background threads.

        With ``accept`` false the socket listens but connections are left to
        the receiver processes that share it (:mod:`dicom_node.receivers`).
        """
        self.receive_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._clean_spool:
            removed = self.spool.remove_partials() + remove_stale(self.receive_dir, 0)
            if removed:
                log.info("removed %d partial files left by an earlier run", removed)
        self._tls = server_context(self.settings)
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_SECONDS))
        self._listener = self._shared_listener or socket.create_server(
            (self.settings.host, self.settings.port), backlog=LISTEN_BACKLOG
        )
        if accept:
            self._acceptor = threading.Thread(
                target=self._accept_loop, name="scp-acceptor", daemon=True
            )
            self._acceptor.start()
            self._threads.append(self._acceptor)
        log.info(
            "Storage SCP %s listening on %s:%d (TLS %s)",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            "on" if self._tls is not None else "off",
        )

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                connection, address = listener.accept()
            except OSError:
                return  # the listener was shut down
            host = str(address[0])
            if self._allowed_hosts is not None and host not in self._allowed_hosts:
                log.warning("refused connection from %s: host not allowed", host)
                connection.close()
                continue
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._connections.add(connection)
                self._threads = [thread for thread in self._threads if thread.is_alive()]
                thread = threading.Thread(
                    target=self._serve, args=(connection, host), name="scp-association", daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def _active_besides_one(self) -> int:
        with self._lock:
            return len(self._connections) - 1

    def _serve(self, connection: socket.socket, host: str) -> None:
        sock = connection
        try:
            if self._tls is not None:
                connection.settimeout(self.settings.acse_timeout_seconds)
                sock = self._tls.wrap_socket(connection, server_side=True)
            StorageAssociation(
                sock,
                host,
                self._policy,
                self.store,
                self.receive_dir,
                acse_timeout=self.settings.acse_timeout_seconds,
                network_timeout=self.settings.network_timeout_seconds,
                active_count=self._active_besides_one,
            ).run()
        except (OSError, ssl.SSLError) as exc:
            log.warning("connection from %s failed: %s", host, type(exc).__name__)
        finally:
            with self._lock:
                self._connections.discard(connection)
            with contextlib.suppress(OSError):
                sock.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, end the open associations and wait for their threads."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        shared = listener is self._shared_listener
        if not shared:
            # Wakes the acceptor.  A shared socket stays listening for the other
            # processes; this one's acceptor ends with the process.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        with self._lock:
            connections = list(self._connections)
            threads = [
                thread for thread in self._threads if not (shared and thread is self._acceptor)
            ]
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout)
        self._threads.clear()
