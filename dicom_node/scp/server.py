"""The Storage SCP: a listening socket and a thread per association, as one object.

It accepts Verification and every Storage SOP class in any transfer syntax.
Each connection is served by a :class:`dicom_node.scp.association.StorageAssociation`
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
import time
from collections.abc import Callable
from pathlib import Path

from core.tls import server_context
from dicom_node.commitment.inbox import CommitmentInbox
from dicom_node.recording.received import Recorder
from dicom_node.scp.association import StorageAssociation
from dicom_node.scp.negotiation import AssociationPolicy
from dicom_node.scp.settings import ScpSettings
from dicom_node.store.c_store import InstanceStore
from dicom_node.store.receive import remove_stale
from dicom_node.store.spool import InstanceSpool

log = logging.getLogger(__name__)

#: Connections waiting to be accepted before the kernel refuses more.
LISTEN_BACKLOG = 128
#: How long a thread may hold the GIL while others wait (CPython's default is 5 ms).
#: Association threads mostly wait on sockets and fsync and need the GIL back
#: for a moment after each wait; with several associations the default lets
#: one thread's CPU work stall the others' replies.  Measured on 2 cores with
#: 4 associations: ~560 instances/s at 5 ms, ~700 at 1 ms.
GIL_SWITCH_INTERVAL_SECONDS = 0.001
#: The least time a request gets after a TLS handshake that used up the ACSE timeout
#: (a socket timeout of 0 would make the socket non-blocking, not expire it).
MIN_ACSE_LEFT_SECONDS = 0.01


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
    hand_over:
        Where accepted connections go instead of being served here: the
        receiver processes (see :mod:`dicom_node.receivers.pool`).  Called with
        each connection, which it owns from then on.
    clean_spool:
        Remove partial files left by an earlier run at start-up; false for
        receiver processes, which start once the main process has done it.
    on_commitment_report:
        Called after a Storage Commitment report is kept in :attr:`commitment`.
    """

    def __init__(
        self,
        settings: ScpSettings,
        recorder: Recorder,
        on_recorded: Callable[[int], None] = lambda _study_id: None,
        *,
        hand_over: Callable[[socket.socket], None] | None = None,
        clean_spool: bool = True,
        on_commitment_report: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.spool = InstanceSpool(settings.incoming_dir)
        self.recorder = recorder
        self.store = InstanceStore(self.spool, self.recorder, on_recorded)
        self.commitment = CommitmentInbox(settings.spool_path / "commitment", on_commitment_report)
        self._policy = AssociationPolicy(settings)
        self._tls: ssl.SSLContext | None = None
        self._allowed_hosts = settings.allowed_hosts
        self._listener: socket.socket | None = None
        self._hand_over = hand_over
        self._connections: set[socket.socket] = set()
        # Connections that have not negotiated an association yet (oldest first), and those
        # that have: only these count against the association limit.
        self._pending: dict[socket.socket, str] = {}
        self._associated: set[socket.socket] = set()
        self._serving: dict[socket.socket, StorageAssociation] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._admission = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._clean_spool = clean_spool

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful when the settings ask for port 0)."""
        if self._listener is None:
            raise RuntimeError("the SCP is not listening")
        return int(self._listener.getsockname()[1])

    @property
    def receive_dir(self) -> Path:
        """Folder on the spool's file system where datasets are received before storing."""
        return self.settings.spool_path / "tmp"

    def start(self, listen: bool = True) -> None:
        """Start listening, and accepting connections in a background thread.

        Without ``listen`` the SCP only serves the connections given to
        :meth:`serve` (a receiver process, to which the main process hands them).
        """
        self.receive_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._clean_spool:
            removed = self.spool.remove_partials() + remove_stale(self.receive_dir, 0)
            if removed:
                log.info("removed %d partial files left by an earlier run", removed)
        self._tls = server_context(self.settings)
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_INTERVAL_SECONDS))
        if not listen:
            return
        self._listener = socket.create_server(
            (self.settings.host, self.settings.port), backlog=LISTEN_BACKLOG
        )
        acceptor = threading.Thread(target=self._accept_loop, name="scp-acceptor", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)
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
            try:
                if self._hand_over is None:
                    self.serve(connection, host)
                else:
                    self._hand_over(connection)
            except Exception:
                # one connection that cannot be served never stops the acceptor
                log.exception("cannot serve a connection from %s", host)
                connection.close()

    def serve(
        self,
        connection: socket.socket,
        host: str,
        active_elsewhere: int | None = None,
        on_end: Callable[[], None] = lambda: None,
        on_negotiated: Callable[[], None] = lambda: None,
    ) -> None:
        """Serve ``connection`` (from ``host``) in a thread of its own; the SCP owns it now.

        ``active_elsewhere`` is the node's count of other open associations
        when they are not all in this process; ``on_negotiated`` is called
        when the connection has negotiated an association, ``on_end`` when
        the connection is over.
        """
        active = self._associations if active_elsewhere is None else lambda: active_elsewhere
        with self._lock:
            self._connections.add(connection)
            self._pending[connection] = host
            if len(self._pending) > self.settings.max_pending_connections:
                self._drop_oldest_pending()
            self._threads = [thread for thread in self._threads if thread.is_alive()]
            thread = threading.Thread(
                target=self._serve,
                args=(connection, host, active, on_end, on_negotiated),
                name="scp-association",
                daemon=True,
            )
            self._threads.append(thread)
        thread.start()

    def _associations(self) -> int:
        """Associations open in this SCP: connections that have negotiated one."""
        with self._lock:
            return len(self._associated)

    def _drop_oldest_pending(self) -> None:
        """Close the oldest connection still waiting to negotiate (caller holds the lock).

        Idle or trickling sockets count apart from associations, up to as many
        as the association limit; past that the oldest goes, so they can never
        lock a real sender out.
        """
        oldest = next(iter(self._pending))
        host = self._pending.pop(oldest)
        log.warning("dropped an un-negotiated connection from %s: too many waiting", host)
        with contextlib.suppress(OSError):
            oldest.shutdown(socket.SHUT_RDWR)

    def _negotiated(self, connection: socket.socket, on_negotiated: Callable[[], None]) -> None:
        with self._lock:
            self._pending.pop(connection, None)
            self._associated.add(connection)
        on_negotiated()

    def _serve(
        self,
        connection: socket.socket,
        host: str,
        active: Callable[[], int],
        on_end: Callable[[], None],
        on_negotiated: Callable[[], None],
    ) -> None:
        sock = connection
        connected = time.monotonic()
        try:
            if self._tls is not None:
                # The handshake as a whole is bounded by the socket timeout (CPython's deadline).
                connection.settimeout(self.settings.acse_timeout_seconds)
                sock = self._tls.wrap_socket(connection, server_side=True)
            # ARTIM runs from the connection: the handshake's time is taken from the request's.
            acse_left = self.settings.acse_timeout_seconds - (time.monotonic() - connected)
            association = StorageAssociation(
                sock,
                host,
                self._policy,
                self.store,
                self.receive_dir,
                acse_timeout=max(MIN_ACSE_LEFT_SECONDS, acse_left),
                network_timeout=self.settings.network_timeout_seconds,
                active_count=active,
                on_negotiated=lambda: self._negotiated(connection, on_negotiated),
                admission=self._admission,
                commitment=self.commitment,
                stopping=self._stopping,
            )
            with self._lock:
                self._serving[connection] = association
            if not self._stopping.is_set():
                association.run()
        except (OSError, ssl.SSLError) as exc:
            log.warning("connection from %s failed: %s", host, type(exc).__name__)
        finally:
            with self._lock:
                self._connections.discard(connection)
                self._pending.pop(connection, None)
                self._associated.discard(connection)
                self._serving.pop(connection, None)
            with contextlib.suppress(OSError):
                sock.close()
            on_end()

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting at once; let instances in progress finish, end the rest.

        Connections idle between messages (or not negotiated yet) are closed
        now; an association in the middle of a message is answered, then
        aborted.  Those still running after ``grace`` seconds (by default the
        network timeout, the bound on a stalled sender) are cut off.
        """
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the acceptor
            listener.close()
        with self._lock:
            connections = list(self._connections)
            serving = dict(self._serving)
            threads = list(self._threads)
        for connection in connections:
            association = serving.get(connection)
            if association is None or not association.in_message:
                _shut(connection)
        if grace is None:
            grace = self.settings.network_timeout_seconds
        deadline = time.monotonic() + grace
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)
        for thread in threads:
            thread.join(1.0)
        self._threads.clear()


def _shut(connection: socket.socket) -> None:
    """End a connection now (wakes the thread reading from it)."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
