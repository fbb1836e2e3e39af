"""DICOM Upper Layer PDUs on a stream socket (PS3.8 section 9.3).

:class:`PduReader` reads PDU and PDV headers through a small buffer and
large values straight into the caller's memory (no intermediate copies of
pixel data).  The short PDUs the Storage SCP sends (release response,
abort, reject, command fragments) are encoded here; the association
request and accept PDUs, which have many optional items, are decoded and
encoded by pynetdicom (see :mod:`dicom_node.scp.negotiation`).
"""

from __future__ import annotations

import socket
import struct
import time
from enum import IntEnum

_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")
#: Bytes of a PDV item header on the wire.
PDV_HEADER_SIZE = _PDV_HEADER.size
#: Bytes of a PDV item header counted in the item length (context id, control header).
PDV_OVERHEAD = 2
_READ_BUFFER = 1 << 16
#: How far past its deadline a read may end (see ``PduReader._before_read``).
DEADLINE_SLACK_SECONDS = 1.0


class PduType(IntEnum):
    """PDU types (PS3.8 Table 9-11)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


class AbortReason(IntEnum):
    """A-ABORT reasons of a service-provider abort (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0x00
    UNRECOGNIZED_PDU = 0x01
    UNEXPECTED_PDU = 0x02
    INVALID_PARAMETER_VALUE = 0x06


#: Body length of A-RELEASE-RQ, A-RELEASE-RP and A-ABORT PDUs.
SHORT_PDU_BODY = 4


def abort_reason(pdu_type: int) -> AbortReason:
    """Why a PDU of ``pdu_type`` is aborted where it is not expected (PS3.8 9.3.1, Table 9-26).

    A type the protocol does not define is unrecognized (1); a defined one in
    the wrong state is unexpected (2).
    """
    if pdu_type in PduType._value2member_map_:
        return AbortReason.UNEXPECTED_PDU
    return AbortReason.UNRECOGNIZED_PDU


class ConnectionClosed(ConnectionError):
    """The peer closed the connection in the middle of a PDU, or between PDUs."""


class ProtocolViolation(ValueError):
    """The peer sent something the Upper Layer protocol does not allow (abort)."""

    def __init__(self, message: str, reason: AbortReason = AbortReason.INVALID_PARAMETER_VALUE):
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Reads PDUs from one connection, within the socket's timeout and an optional deadline.

    Each read waits at most the socket's timeout for bytes; with a deadline
    set (:meth:`set_deadline`), all reads together end by then, however
    slowly the bytes trickle in (ARTIM, and the bound on receiving one PDU).
    Bytes are only ever read into memory that holds bytes already arrived.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._stream = sock.makefile("rb", buffering=_READ_BUFFER)
        self._deadline: float | None = None
        self._timeout = sock.gettimeout()
        self._shortened = False

    def set_timeout(self, seconds: float) -> None:
        """How long one read may wait for bytes when no deadline is nearer."""
        self._timeout = seconds
        self._shortened = False
        self._sock.settimeout(seconds)

    def set_deadline(self, seconds: float | None) -> None:
        """End every read ``seconds`` from now (TimeoutError), or no deadline with None."""
        self._deadline = None if seconds is None else time.monotonic() + seconds
        if self._shortened:
            self.set_timeout(self._timeout)  # type: ignore[arg-type]

    def _before_read(self) -> None:
        """Shorten the socket's timeout to the deadline once it is clearly nearer.

        Setting a socket's timeout is a system call: it is only done once the
        deadline is more than :data:`DEADLINE_SLACK_SECONDS` nearer than the
        timeout, so a PDU that arrives at once costs none, and a deadline is
        kept to within that slack.
        """
        if self._deadline is None:
            return
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        if self._timeout is None or remaining < self._timeout - DEADLINE_SLACK_SECONDS:
            self._sock.settimeout(remaining)
            self._shortened = True

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the connection.

        Raises
        ------
        ConnectionClosed
            If the connection ends first.
        TimeoutError
            If no byte comes within the timeout, or the deadline passes.
        """
        filled = 0
        while filled < len(view):
            if self._deadline is not None:
                self._before_read()
            got = self._stream.readinto1(view[filled:])
            if not got:
                raise ConnectionClosed("connection closed by the peer")
            filled += got

    def read(self, length: int) -> bytes:
        """Read exactly ``length`` bytes, growing the result only as they arrive."""
        if length == 0:
            return b""
        if self._deadline is not None:
            self._before_read()
        buffered = self._stream.peek(1)  # one read of up to a buffer's worth when empty
        if len(buffered) >= length:
            return self._stream.read1(length)  # the usual small read: all of it is here
        data = bytearray()
        while buffered:
            data += self._stream.read1(min(length - len(data), len(buffered)))
            if len(data) == length:
                return bytes(data)
            if self._deadline is not None:
                self._before_read()
            buffered = self._stream.peek(1)
        raise ConnectionClosed("connection closed by the peer")

    def pdu_header(self) -> tuple[int, int]:
        """The next PDU's type and length (of what follows the 6-byte header)."""
        return _PDU_HEADER.unpack(self.read(_PDU_HEADER.size))  # type: ignore[return-value]

    def pdv_header(self) -> tuple[int, int, bool, bool]:
        """The next PDV item's value length, context id, and its command and last-fragment bits."""
        length, context_id, control = _PDV_HEADER.unpack(self.read(_PDV_HEADER.size))
        if length < PDV_OVERHEAD:
            raise ProtocolViolation(f"PDV item length {length} is too short")
        return length - PDV_OVERHEAD, context_id, bool(control & 0x01), bool(control & 0x02)

    def close(self) -> None:
        """Release the reader (not the socket)."""
        self._stream.close()


def _pdu(pdu_type: PduType, body: bytes) -> bytes:
    return _PDU_HEADER.pack(pdu_type, len(body)) + body


def command_pdus(context_id: int, command: bytes, peer_max_pdu: int) -> list[bytes]:
    """P-DATA-TF PDUs carrying a command set, fragmented to the peer's maximum PDU length."""
    room = peer_max_pdu - _PDV_HEADER.size if peer_max_pdu else len(command)
    room = max(room, 1)
    pdus = []
    for start in range(0, len(command), room):
        fragment = command[start : start + room]
        control = 0x01 | (0x02 if start + room >= len(command) else 0x00)
        item = _PDV_HEADER.pack(len(fragment) + PDV_OVERHEAD, context_id, control) + fragment
        pdus.append(_pdu(PduType.P_DATA_TF, item))
    return pdus


def release_response() -> bytes:
    """An A-RELEASE-RP PDU."""
    return _pdu(PduType.A_RELEASE_RP, bytes(4))


def abort(reason: AbortReason) -> bytes:
    """An A-ABORT PDU from the service provider with ``reason``."""
    return _pdu(PduType.A_ABORT, bytes([0, 0, 0x02, reason]))


def associate_reject(result: int, source: int, diagnostic: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 Table 9-21)."""
    return _pdu(PduType.A_ASSOCIATE_RJ, bytes([0, result, source, diagnostic]))
