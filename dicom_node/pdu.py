"""DICOM Upper Layer PDUs on a stream socket (PS3.8 section 9.3).

:class:`PduReader` reads PDU and PDV headers through a small buffer and
large values straight into the caller's memory (no intermediate copies of
pixel data).  The short PDUs the Storage SCP sends (release response,
abort, reject, command fragments) are encoded here; the association
request and accept PDUs, which have many optional items, are decoded and
encoded by pynetdicom (see :mod:`dicom_node.negotiation`).
"""

from __future__ import annotations

import socket
import struct
from enum import IntEnum

_PDU_HEADER = struct.Struct(">BxI")
_PDV_HEADER = struct.Struct(">IBB")
#: Bytes of a PDV item header on the wire.
PDV_HEADER_SIZE = _PDV_HEADER.size
#: Bytes of a PDV item header counted in the item length (context id, control header).
PDV_OVERHEAD = 2
_READ_BUFFER = 1 << 16


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


class ConnectionClosed(ConnectionError):
    """The peer closed the connection in the middle of a PDU, or between PDUs."""


class ProtocolViolation(ValueError):
    """The peer sent something the Upper Layer protocol does not allow (abort)."""

    def __init__(self, message: str, reason: AbortReason = AbortReason.INVALID_PARAMETER_VALUE):
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Reads PDUs from one connection; every read blocks up to the socket's timeout."""

    def __init__(self, sock: socket.socket) -> None:
        self._stream = sock.makefile("rb", buffering=_READ_BUFFER)

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the connection.

        Raises
        ------
        ConnectionClosed
            If the connection ends first.
        """
        filled = 0
        while filled < len(view):
            got = self._stream.readinto(view[filled:])
            if not got:
                raise ConnectionClosed("connection closed by the peer")
            filled += got

    def read(self, length: int) -> bytearray:
        """Read exactly ``length`` bytes."""
        data = bytearray(length)
        self.read_into(memoryview(data))
        return data

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
