"""The Storage SCP: an AE built from the settings, started and stopped as one object.

It accepts Verification and every Storage SOP class in any transfer syntax;
datasets are received straight to a file on the spool's file system
(pynetdicom's chunked receive) and never decoded in the association thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pydicom import uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.tls import server_context
from dicom_node import fastpath
from dicom_node.group_commit import GroupCommitRecorder
from dicom_node.handlers import bound_handlers
from dicom_node.receive import receive_into, remove_stale
from dicom_node.spool import InstanceSpool

log = logging.getLogger(__name__)


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom options: stream to disk, log no identifiers (no PHI)."""
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    fastpath.apply()


def preferred_transfer_syntaxes() -> list[str]:
    """Every transfer syntax, in the order the SCP prefers them when a sender offers several.

    Lossless compression first (a sender offering it already holds the
    compressed bytes; accepting them avoids transcoding and is bit-exact),
    then uncompressed, then everything else (lossy syntaxes last, so the
    node never asks a sender to compress lossily what it holds uncompressed).
    """
    lossless = [
        uid.JPEGLosslessSV1,
        uid.JPEGLossless,
        uid.JPEGLSLossless,
        uid.JPEG2000Lossless,
        uid.RLELossless,
    ]
    uncompressed = [
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
    ]
    first = [*lossless, *uncompressed]
    return first + [syntax for syntax in ALL_TRANSFER_SYNTAXES if syntax not in first]


def build_ae(settings: Settings) -> AE:
    """An AE that accepts C-ECHO and C-STORE of every storage class and transfer syntax."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.network_timeout = settings.network_timeout_seconds
    ae.dimse_timeout = settings.network_timeout_seconds
    ae.acse_timeout = settings.acse_timeout_seconds
    ae.maximum_associations = settings.max_associations
    ae.require_called_aet = True
    ae.require_calling_aet = [caller.ae_title for caller in settings.allowed_callers]
    syntaxes = preferred_transfer_syntaxes()
    ae.add_supported_context(Verification, syntaxes)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, syntaxes)
    return ae


class NodeAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, refusing TCP connections from hosts not on the allow-list.

    When every allow-list entry names a host, a connection from any other
    address is closed before association negotiation; the AE title check
    (A-ASSOCIATE-RJ) and the per-entry host check follow for the rest.
    """

    allowed_hosts: frozenset[str] | None = None

    def verify_request(self, request: object, client_address: object) -> bool:
        """Whether to serve a new TCP connection from ``client_address``."""
        if self.allowed_hosts is None:
            return True
        host = client_address[0] if isinstance(client_address, tuple) else ""
        if host in self.allowed_hosts:
            return True
        log.warning("refused connection from %s: host not allowed", host)
        return False


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
    session_factory:
        Where received instances are recorded.
    on_recorded:
        Called with the study id after each instance is recorded (the
        stability monitor uses it to wake up).
    reuse_port:
        Bind with ``SO_REUSEPORT`` so that other receiver processes can
        listen on the same port (see :mod:`dicom_node.receivers`).
    clean_spool:
        Remove partial files left by an earlier run at start-up; false for
        extra receiver processes, which start while the main one is receiving.
    """

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        on_recorded: Callable[[int], None] = lambda _study_id: None,
        *,
        reuse_port: bool = False,
        clean_spool: bool = True,
    ) -> None:
        self.settings = settings
        self.spool = InstanceSpool(settings.incoming_dir)
        self.recorder = GroupCommitRecorder(session_factory)
        self._on_recorded = on_recorded
        self._server: ThreadedAssociationServer | None = None
        self._reuse_port = reuse_port
        self._clean_spool = clean_spool

    @property
    def port(self) -> int:
        """The TCP port actually listened on (useful when the settings ask for port 0)."""
        if self._server is None:
            raise RuntimeError("the SCP is not running")
        return int(self._server.server_address[1])

    @property
    def receive_dir(self) -> Path:
        """Folder on the spool's file system where datasets are received before storing."""
        return self.settings.spool_path / "tmp"

    def start(self) -> None:
        """Start listening in background threads."""
        configure_pynetdicom()
        receive_into(self.receive_dir)
        if self._clean_spool:
            removed = self.spool.remove_partials() + remove_stale(self.receive_dir, 0)
            if removed:
                log.info("removed %d partial files left by an earlier run", removed)
        ae = build_ae(self.settings)
        handlers = bound_handlers(
            self.spool, self.recorder, self.settings.allowed_callers, self._on_recorded
        )
        handlers.append((evt.EVT_CONN_OPEN, fastpath.set_nodelay))
        if self._reuse_port:
            from dicom_node.receivers import ReusePortAssociationServer

            server_class: type[NodeAssociationServer] = ReusePortAssociationServer
        else:
            server_class = NodeAssociationServer
        server = ae.make_server(
            (self.settings.host, self.settings.port),
            evt_handlers=handlers,
            ssl_context=server_context(self.settings),
            server_class=server_class,
        )
        server.allowed_hosts = allowed_hosts(self.settings)
        ae._servers.append(server)  # as AE.start_server does; shutdown() removes it
        threading.Thread(target=server.serve_forever, name="scp-acceptor", daemon=True).start()
        self._server = server
        log.info(
            "Storage SCP %s listening on %s:%d (TLS %s)",
            self.settings.ae_title,
            self.settings.host,
            self.port,
            "on" if self.settings.tls_enabled else "off",
        )

    def stop(self) -> None:
        """Stop accepting associations and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
