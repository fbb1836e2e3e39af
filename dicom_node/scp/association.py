"""One association of the Storage SCP, from A-ASSOCIATE-RQ to release or abort.

The node runs its own acceptor loop instead of pynetdicom's state machine
(pynetdicom stays the node's SCU and its PDU codec): pixel data goes from the
socket into the receive file's buffer with ``readinto`` and is never copied,
decoded or queued between threads; a C-STORE costs a few dozen Python
operations plus the durable write, which is what lets one association keep
up with dcmtk's ``storescu``.  The association is synchronous (one
operation at a time, no asynchronous operations window is offered).

Whatever goes wrong with one association (a protocol error, a timeout, the
peer vanishing mid-instance) ends that association only: its partial receive
file is deleted and nothing of it is recorded.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from pynetdicom.sop_class import StorageCommitmentPushModel

from core.dicom_status import GeneralStatus, StoreStatus, VerificationStatus
from dicom_node.commitment.inbox import MAX_REPORT_BYTES, CommitmentInbox
from dicom_node.scp import pdu
from dicom_node.scp.dimse import (
    Command,
    CommandField,
    MalformedCommand,
    decode_command,
    encode_response,
)
from dicom_node.scp.negotiation import Accepted, AcceptedContext, AssociationPolicy
from dicom_node.store.c_store import InstanceStore
from dicom_node.store.receive import WRITE_BUFFER_BYTES, ReceiveFile, part10_header

log = logging.getLogger(__name__)

#: Largest command set accepted (a C-STORE-RQ is a few hundred bytes).
MAX_COMMAND_BYTES = 1 << 16
#: Largest association request PDU accepted (128 contexts of every syntax take ~200 KB).
MAX_REQUEST_BYTES = 1 << 20
#: Smallest: the fixed fields of an A-ASSOCIATE-RQ (PS3.8 Table 9-11).
MIN_REQUEST_BYTES = 68
#: Largest P-DATA-TF PDU when the node announces no maximum length (0, "unlimited").
MAX_UNLIMITED_PDU = 1 << 31
#: Slowest transfer a PDU may take (bytes per second) on top of the network timeout:
#: a 500 MB PDU may take 60 s + 500 s, a 16 KB one trickled at 1 byte/s ends after 60 s.
MIN_RECEIVE_RATE = 1 << 20


class _Discard:
    """Where the dataset of a request the SCP will not perform goes: nowhere."""

    def __init__(self) -> None:
        self._buffer = memoryview(bytearray(1 << 16))

    def free_space(self) -> memoryview:
        return self._buffer

    def commit(self, count: int) -> None:
        """Nothing is kept."""


class _Report:
    """Where the event information of an N-EVENT-REPORT is gathered (it is small)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._space = memoryview(bytearray(1 << 16))

    def free_space(self) -> memoryview:
        return self._space

    def commit(self, count: int) -> None:
        """Append the ``count`` bytes just read into :meth:`free_space`."""
        if len(self.data) + count > MAX_REPORT_BYTES:
            raise pdu.ProtocolViolation("N-EVENT-REPORT dataset too long")
        self.data += self._space[:count]


class StorageAssociation:
    """Serves one accepted TCP connection as a Storage and Verification SCP.

    Parameters
    ----------
    sock:
        The connection (plain or TLS), already accepted.
    peer_host:
        The peer's IP address, for the allow-list and the log.
    policy:
        Decides whether to accept the association.
    store:
        Stores each received instance and says which status to answer.
    receive_folder:
        Where datasets are received (on the spool's file system).
    acse_timeout, network_timeout:
        Seconds for the whole association request to arrive (ARTIM), and to
        wait for any later PDU; the body of a PDU must arrive within the
        network timeout plus its length at :data:`MIN_RECEIVE_RATE`.
    active_count:
        How many other associations are open (for the association limit).
    on_negotiated:
        Called once the association is accepted (until then the connection
        counts as an un-negotiated one, not as an association).
    admission:
        Held, by every association of the SCP, while the limit is checked and
        the association counted: two requests at once cannot both take the
        last free place.
    stopping:
        Set when the node stops: the message in progress is finished and
        answered, then the association is aborted.
    commitment:
        Where Storage Commitment reports (N-EVENT-REPORT) go; without it they
        are answered as an unsupported operation.
    """

    def __init__(
        self,
        sock: socket.socket,
        peer_host: str,
        policy: AssociationPolicy,
        store: InstanceStore,
        receive_folder: Path,
        *,
        acse_timeout: float,
        network_timeout: float,
        active_count: Callable[[], int],
        commitment: CommitmentInbox | None = None,
        on_negotiated: Callable[[], None] = lambda: None,
        admission: threading.Lock | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.sock = sock
        self._commitment = commitment
        self.peer_host = peer_host
        self._policy = policy
        self._store = store
        self._receive_folder = receive_folder
        self._acse_timeout = acse_timeout
        self._network_timeout = network_timeout
        self._active_count = active_count
        self._on_negotiated = on_negotiated
        self._admission = admission or threading.Lock()
        self._stopping = stopping or threading.Event()
        self._reader = pdu.PduReader(sock)
        self._calling_ae = ""
        self._accepted: Accepted | None = None
        self._command = bytearray()
        self._request: Command | None = None
        self._request_context = 0
        self._dataset: ReceiveFile | _Report | _Discard | None = None
        # Where each received dataset is gathered before it is written (one at a time).
        self._write_buffer: bytearray | None = None

    def run(self) -> None:
        """Negotiate, then serve requests until release, abort or error; never raises."""
        try:
            # ARTIM: the whole association request arrives within the ACSE timeout.
            self._reader.set_timeout(self._acse_timeout)
            self._reader.set_deadline(self._acse_timeout)
            if self._negotiate():
                self._reader.set_timeout(self._network_timeout)
                self._serve()
        except pdu.ProtocolViolation as exc:
            log.warning("aborting association from %s: %s", self._peer(), exc)
            self._discard_partial()
            self._send(pdu.abort(exc.reason))
        except (pdu.ConnectionClosed, TimeoutError, OSError) as exc:
            # Closed by the node as it stops: expected, not a warning.
            level = logging.INFO if self._stopping.is_set() else logging.WARNING
            log.log(level, "association from %s ended: %s", self._peer(), type(exc).__name__)
        except Exception:
            log.exception("association from %s failed", self._peer())
            self._discard_partial()
            self._send(pdu.abort(pdu.AbortReason.NOT_SPECIFIED))
        finally:
            self._discard_partial()
            self._reader.close()

    @property
    def in_message(self) -> bool:
        """Whether a request has begun to arrive and is not answered yet."""
        return self._request is not None or bool(self._command)

    def _discard_partial(self) -> None:
        """Delete the receive file of an instance that will not be completed."""
        if isinstance(self._dataset, ReceiveFile):
            self._dataset.discard()
        self._dataset = None

    def _peer(self) -> str:
        return f"{self._calling_ae or '?'}@{self.peer_host}"

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            log.debug("cannot send to %s: %s", self._peer(), type(exc).__name__)

    # ------------------------------------------------------------------ negotiation
    def _negotiate(self) -> bool:
        pdu_type, length = self._reader.pdu_header()
        if pdu_type != pdu.PduType.A_ASSOCIATE_RQ:
            raise pdu.ProtocolViolation(
                f"expected A-ASSOCIATE-RQ, got PDU type {pdu_type:#04x}", pdu.abort_reason(pdu_type)
            )
        if not MIN_REQUEST_BYTES <= length <= MAX_REQUEST_BYTES:
            raise pdu.ProtocolViolation(f"A-ASSOCIATE-RQ of {length} bytes")
        request = bytes([pdu_type, 0]) + length.to_bytes(4, "big") + self._reader.read(length)
        with self._admission:
            decision = self._policy.negotiate(request, self.peer_host, self._active_count())
            if isinstance(decision, Accepted):
                self._on_negotiated()  # counted as an association before the peer can act on it
        self._calling_ae = decision.calling_ae
        if not isinstance(decision, Accepted):
            # Logged before the answer goes out, so the record exists once the peer has it.
            log.warning("rejected association from %s: %s", self._peer(), decision.reason)
            self.sock.sendall(decision.response)
            return False
        self.sock.sendall(decision.response)
        self._accepted = decision
        log.info("accepted association from %s (%d contexts)", self._peer(), len(decision.contexts))
        return True

    # ------------------------------------------------------------------ data transfer
    def _serve(self) -> None:
        while True:
            if self._stopping.is_set() and not self.in_message:
                log.info("ending association from %s: the node is stopping", self._peer())
                self._send(pdu.abort(pdu.AbortReason.NOT_SPECIFIED))
                return
            # Each read of the header waits up to the network timeout (idle between PDUs);
            # the body then arrives within a bound, however slowly it trickles.
            self._reader.set_deadline(None)
            pdu_type, length = self._reader.pdu_header()
            self._check_length(pdu_type, length)
            self._reader.set_deadline(self._network_timeout + length / MIN_RECEIVE_RATE)
            if pdu_type == pdu.PduType.P_DATA_TF:
                self._receive_pdata(length)
            elif pdu_type == pdu.PduType.A_RELEASE_RQ:
                self._reader.read(length)
                if self._request is not None:
                    raise pdu.ProtocolViolation("release requested in the middle of a message")
                self.sock.sendall(pdu.release_response())
                log.info("association from %s released", self._peer())
                return
            else:  # A-ABORT
                self._reader.read(length)
                log.warning("association from %s aborted by the peer", self._peer())
                return

    def _check_length(self, pdu_type: int, length: int) -> None:
        """Refuse a PDU the association cannot take, or longer than its type allows, unread."""
        if pdu_type == pdu.PduType.P_DATA_TF:
            limit = self._policy.max_pdu or MAX_UNLIMITED_PDU
            if length > limit:
                raise pdu.ProtocolViolation(f"P-DATA-TF of {length} bytes (maximum {limit})")
        elif pdu_type in (pdu.PduType.A_RELEASE_RQ, pdu.PduType.A_ABORT):
            if length != pdu.SHORT_PDU_BODY:
                raise pdu.ProtocolViolation(f"PDU type {pdu_type:#04x} of {length} bytes")
        else:
            raise pdu.ProtocolViolation(
                f"unexpected PDU type {pdu_type:#04x}", pdu.abort_reason(pdu_type)
            )

    def _context(self, context_id: int) -> AcceptedContext:
        assert self._accepted is not None
        context = self._accepted.contexts.get(context_id)
        if context is None:
            raise pdu.ProtocolViolation(f"presentation context {context_id} was not accepted")
        return context

    def _receive_pdata(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            value_length, context_id, is_command, is_last = self._reader.pdv_header()
            remaining -= pdu.PDV_HEADER_SIZE + value_length
            if remaining < 0:
                raise pdu.ProtocolViolation("PDV item runs past the end of its PDU")
            self._context(context_id)
            if is_command:
                self._receive_command(context_id, value_length, is_last)
            else:
                self._receive_data(context_id, value_length, is_last)

    def _receive_command(self, context_id: int, length: int, is_last: bool) -> None:
        if self._request is not None:
            raise pdu.ProtocolViolation("command fragment while a dataset is expected")
        if len(self._command) + length > MAX_COMMAND_BYTES:
            raise pdu.ProtocolViolation("command set too long")
        self._command += self._reader.read(length)
        if not is_last:
            return
        try:
            request = decode_command(self._command)
        except MalformedCommand as exc:
            raise pdu.ProtocolViolation(f"malformed command set: {exc}") from exc
        self._command.clear()
        if request.has_dataset:
            self._request, self._request_context = request, context_id
            self._dataset = self._open_dataset(request, context_id)
        else:
            self._answer(request, context_id)

    def _open_dataset(self, request: Command, context_id: int) -> ReceiveFile | _Report | _Discard:
        context = self._context(context_id)
        if (
            request.command_field == CommandField.N_EVENT_REPORT_RQ
            and self._commitment is not None
            and context.abstract_syntax == StorageCommitmentPushModel
        ):
            return _Report()
        if (
            request.command_field != CommandField.C_STORE_RQ
            or request.affected_sop_class_uid != context.abstract_syntax
        ):
            return _Discard()
        header = part10_header(
            request.affected_sop_class_uid,
            request.affected_sop_instance_uid,
            context.transfer_syntax,
            self._calling_ae,
        )
        if self._write_buffer is None:
            self._write_buffer = bytearray(WRITE_BUFFER_BYTES)
        return ReceiveFile(self._receive_folder, header, self._write_buffer)

    def _receive_data(self, context_id: int, length: int, is_last: bool) -> None:
        if self._request is None or self._dataset is None:
            raise pdu.ProtocolViolation("dataset fragment without a command")
        if context_id != self._request_context:
            raise pdu.ProtocolViolation("dataset fragment on another presentation context")
        sink = self._dataset
        while length:
            space = sink.free_space()
            take = min(length, len(space))
            self._reader.read_into(space[:take])
            sink.commit(take)
            length -= take
        if is_last:
            request, self._request = self._request, None
            dataset, self._dataset = self._dataset, None
            self._answer(request, context_id, dataset)

    # ------------------------------------------------------------------ responses
    def _answer(
        self,
        request: Command,
        context_id: int,
        dataset: ReceiveFile | _Report | _Discard | None = None,
    ) -> None:
        reason = ""
        if request.command_field == CommandField.C_CANCEL_RQ:
            return
        if request.command_field == CommandField.C_ECHO_RQ:
            status = int(VerificationStatus.SUCCESS)
        elif request.command_field == CommandField.C_STORE_RQ and isinstance(dataset, ReceiveFile):
            outcome = self._store.handle_store(
                dataset,
                request.affected_sop_instance_uid,
                self._calling_ae,
                self._context(context_id).transfer_syntax,
            )
            status, reason = int(outcome.status), outcome.reason
        elif request.command_field == CommandField.C_STORE_RQ:
            outcome = self._store.refuse_other_sop_class(self._calling_ae)
            status, reason = int(outcome.status), outcome.reason
        elif isinstance(dataset, _Report) and self._commitment is not None:
            status = self._commitment.receive(
                request.event_type_id,
                bytes(dataset.data),
                self._context(context_id).transfer_syntax,
                self._calling_ae,
            )
        else:
            status = GeneralStatus.UNRECOGNIZED_OPERATION
            reason = "operation not supported by this node"
        assert self._accepted is not None
        command = encode_response(request, status, reason)
        self.sock.sendall(
            b"".join(pdu.command_pdus(context_id, command, self._accepted.peer_max_pdu))
        )
        if status != StoreStatus.SUCCESS:
            log.debug(
                "answered %#06x to message %d from %s", status, request.message_id, self._peer()
            )
