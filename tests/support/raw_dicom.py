"""A minimal DICOM upper-layer client built on a plain socket, for fault injection.

pynetdicom always sends well-formed, complete messages; fault tests need the
opposite: a dataset cut off in the middle, an A-ABORT or a TCP reset between
two fragments of one P-DATA PDU, and random bytes where PDUs belong.  This
module encodes just enough of PS3.8 (A-ASSOCIATE-RQ, P-DATA-TF, A-RELEASE,
A-ABORT) and of PS3.7 (C-STORE-RQ / C-ECHO-RQ command sets, implicit VR) to do
that deterministically.  Loopback only.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .ports import LOOPBACK

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS = "1.2.826.0.1.3680043.9.7433.1.1"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"

SUCCESS = 0x0000


class RawProtocolError(RuntimeError):
    """The peer answered something this client did not expect."""


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def associate_rq(
    called_ae: str,
    calling_ae: str,
    contexts: list[tuple[int, str, list[str]]],
    max_pdu: int = 0,
) -> bytes:
    """Encode an A-ASSOCIATE-RQ PDU with ``(context id, abstract syntax, [syntaxes])``."""
    header = struct.pack(">HH", 1, 0)
    header += called_ae.ljust(16).encode("ascii")[:16]
    header += calling_ae.ljust(16).encode("ascii")[:16]
    header += b"\x00" * 32
    items = _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
    for context_id, abstract, syntaxes in contexts:
        body = struct.pack(">BBBB", context_id, 0, 0, 0)
        body += _item(0x30, abstract.encode("ascii"))
        for syntax in syntaxes:
            body += _item(0x40, syntax.encode("ascii"))
        items += _item(0x20, body)
    user = _item(0x51, struct.pack(">I", max_pdu))
    user += _item(0x52, IMPLEMENTATION_CLASS.encode("ascii"))
    items += _item(0x50, user)
    return _pdu(0x01, header + items)


def pdv(context_id: int, data: bytes, command: bool, last: bool) -> bytes:
    """One presentation data value item (length, context id, control header, data)."""
    control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def p_data(context_id: int, data: bytes, command: bool, last: bool) -> bytes:
    """A P-DATA-TF PDU carrying one PDV."""
    return _pdu(0x04, pdv(context_id, data, command, last))


def a_release_rq() -> bytes:
    """An A-RELEASE-RQ PDU."""
    return _pdu(0x05, b"\x00" * 4)


def a_abort(source: int = 0, reason: int = 0) -> bytes:
    """An A-ABORT PDU (source 0 = service user)."""
    return _pdu(0x07, struct.pack(">BBBB", 0, 0, source, reason))


def _element(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def command_set(elements: list[tuple[int, bytes]]) -> bytes:
    """An implicit-VR command set (group 0000) with its group length first."""
    body = b"".join(_element(0x0000, tag, value) for tag, value in sorted(elements))
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def c_store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """The command set of a C-STORE-RQ with a dataset."""
    return command_set(
        [
            (0x0002, _uid(sop_class)),
            (0x0100, struct.pack("<H", 0x0001)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0700, struct.pack("<H", 0)),
            (0x0800, struct.pack("<H", 0x0000)),
            (0x1000, _uid(sop_instance)),
        ]
    )


def c_echo_rq(message_id: int) -> bytes:
    """The command set of a C-ECHO-RQ."""
    return command_set(
        [
            (0x0002, _uid(VERIFICATION)),
            (0x0100, struct.pack("<H", 0x0030)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0800, struct.pack("<H", 0x0101)),
        ]
    )


def _parse_command(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        out[(group << 16) | element] = data[offset : offset + length]
        offset += length
    return out


@dataclass(frozen=True)
class Part10:
    """A Part-10 file split into what goes on the wire: UIDs and the dataset bytes."""

    sop_class: str
    sop_instance: str
    transfer_syntax: str
    dataset: bytes

    @classmethod
    def read(cls, path: Path) -> Part10:
        """Split a Part-10 file written with a File Meta group length (pydicom does)."""
        from pydicom import dcmread

        raw = Path(path).read_bytes()
        if raw[128:132] != b"DICM":
            raise ValueError(f"{path} is not a Part-10 file")
        group, element = struct.unpack_from("<HH", raw, 132)
        if (group, element) != (0x0002, 0x0000):
            raise ValueError(f"{path} has no File Meta group length")
        (length,) = struct.unpack_from("<I", raw, 140)
        start = 144 + length
        meta = dcmread(path, stop_before_pixels=True).file_meta
        return cls(
            sop_class=str(meta.MediaStorageSOPClassUID),
            sop_instance=str(meta.MediaStorageSOPInstanceUID),
            transfer_syntax=str(meta.TransferSyntaxUID),
            dataset=raw[start:],
        )


class RawAssociation:
    """One association over a plain socket; every step is explicit.

    Parameters
    ----------
    port:
        The SCP's port on 127.0.0.1.
    called_ae, calling_ae:
        AE titles.
    abstract_syntaxes:
        SOP classes to propose (each with Explicit and Implicit VR LE).
    timeout:
        Socket timeout in seconds.
    """

    def __init__(
        self,
        port: int,
        called_ae: str = "AINODE",
        calling_ae: str = "RAWSCU",
        abstract_syntaxes: tuple[str, ...] = (VERIFICATION,),
        transfer_syntaxes: tuple[str, ...] = (EXPLICIT_VR_LE, IMPLICIT_VR_LE),
        timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.called_ae = called_ae
        self.calling_ae = calling_ae
        self.proposed = {
            2 * index + 1: uid for index, uid in enumerate(dict.fromkeys(abstract_syntaxes))
        }
        self.transfer_syntaxes = list(transfer_syntaxes)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.accepted: dict[str, tuple[int, str]] = {}
        self.peer_max_pdu = 0
        self._message_id = 0

    # ------------------------------------------------------------------ wire
    def connect(self) -> RawAssociation:
        """Open the TCP connection and negotiate the association."""
        self.sock = socket.create_connection((LOOPBACK, self.port), timeout=self.timeout)
        contexts = [
            (cid, uid, self.transfer_syntaxes) for cid, uid in sorted(self.proposed.items())
        ]
        self.sock.sendall(associate_rq(self.called_ae, self.calling_ae, contexts))
        pdu_type, body = self.read_pdu()
        if pdu_type != 0x02:
            raise RawProtocolError(f"association not accepted: PDU type 0x{pdu_type:02X}")
        self._parse_ac(body)
        return self

    def _parse_ac(self, body: bytes) -> None:
        offset = 68
        while offset + 4 <= len(body):
            item_type, _, length = struct.unpack_from(">BBH", body, offset)
            value = body[offset + 4 : offset + 4 + length]
            offset += 4 + length
            if item_type == 0x21:
                context_id, _, result, _ = struct.unpack_from(">BBBB", value, 0)
                syntax = ""
                if len(value) > 8 and value[4] == 0x40:
                    (sub_length,) = struct.unpack_from(">H", value, 6)
                    syntax = value[8 : 8 + sub_length].decode("ascii").rstrip("\x00 ")
                if result == 0 and context_id in self.proposed:
                    self.accepted[self.proposed[context_id]] = (context_id, syntax)
            elif item_type == 0x50:
                sub = 0
                while sub + 4 <= len(value):
                    sub_type, _, sub_length = struct.unpack_from(">BBH", value, sub)
                    if sub_type == 0x51:
                        (self.peer_max_pdu,) = struct.unpack_from(">I", value, sub + 4)
                    sub += 4 + sub_length

    def _recv_exact(self, count: int) -> bytes:
        assert self.sock is not None
        chunks = []
        while count:
            chunk = self.sock.recv(min(count, 1 << 16))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def read_pdu(self) -> tuple[int, bytes]:
        """Read one PDU: (type, body)."""
        pdu_type, _, length = struct.unpack(">BBI", self._recv_exact(6))
        return pdu_type, self._recv_exact(length)

    def send(self, data: bytes) -> None:
        """Write raw bytes."""
        assert self.sock is not None
        self.sock.sendall(data)

    def _next_id(self) -> int:
        self._message_id = (self._message_id + 1) % 0x10000 or 1
        return self._message_id

    def _fragments(self, context_id: int, data: bytes, fragment: int) -> Iterator[bytes]:
        limit = fragment
        if self.peer_max_pdu:
            limit = min(limit, self.peer_max_pdu - 6)
        for start in range(0, len(data), limit):
            chunk = data[start : start + limit]
            yield p_data(context_id, chunk, command=False, last=start + limit >= len(data))

    # ------------------------------------------------------------------ DIMSE
    def context_for(self, sop_class: str) -> int:
        """The accepted presentation context id for ``sop_class``."""
        if sop_class not in self.accepted:
            raise RawProtocolError(f"no accepted presentation context for {sop_class}")
        return self.accepted[sop_class][0]

    def read_status(self) -> int:
        """Read PDUs until a complete command arrives; return its Status (0000,0900)."""
        command = b""
        while True:
            pdu_type, body = self.read_pdu()
            if pdu_type != 0x04:
                raise RawProtocolError(f"expected P-DATA, got PDU type 0x{pdu_type:02X}")
            offset = 0
            while offset + 6 <= len(body):
                (length,) = struct.unpack_from(">I", body, offset)
                control = body[offset + 5]
                command += body[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x03 == 0x03:
                    elements = _parse_command(command)
                    return struct.unpack("<H", elements[0x00000900][:2])[0]

    def c_echo(self) -> int:
        """C-ECHO; returns the status."""
        self.send(p_data(self.context_for(VERIFICATION), c_echo_rq(self._next_id()), True, True))
        return self.read_status()

    def c_store(self, item: Part10, fragment: int = 16384) -> int:
        """C-STORE a whole instance in fragments; returns the status."""
        context_id = self.context_for(item.sop_class)
        command = c_store_rq(self._next_id(), item.sop_class, item.sop_instance)
        self.send(p_data(context_id, command, command=True, last=True))
        for pdu in self._fragments(context_id, item.dataset, fragment):
            self.send(pdu)
        return self.read_status()

    def c_store_bytes(self, sop_class: str, sop_instance: str, dataset: bytes) -> int:
        """C-STORE arbitrary dataset bytes (as the last fragment); returns the status."""
        context_id = self.context_for(sop_class)
        command = c_store_rq(self._next_id(), sop_class, sop_instance)
        self.send(p_data(context_id, command, command=True, last=True))
        self.send(p_data(context_id, dataset, command=False, last=True))
        return self.read_status()

    def c_store_partial(self, item: Part10, fraction: float = 0.5, fragment: int = 4096) -> None:
        """Send the command and complete fragments covering ``fraction`` of the dataset.

        No final fragment is sent: the SCP holds an incomplete dataset.
        """
        context_id = self.context_for(item.sop_class)
        command = c_store_rq(self._next_id(), item.sop_class, item.sop_instance)
        self.send(p_data(context_id, command, command=True, last=True))
        cut = max(1, int(len(item.dataset) * fraction))
        for start in range(0, cut, fragment):
            chunk = item.dataset[start : min(start + fragment, cut)]
            self.send(p_data(context_id, chunk, command=False, last=False))

    def send_truncated_pdu(self, item: Part10, fraction: float = 0.5) -> None:
        """Send the command, then a P-DATA PDU whose header promises more than is sent."""
        context_id = self.context_for(item.sop_class)
        command = c_store_rq(self._next_id(), item.sop_class, item.sop_instance)
        self.send(p_data(context_id, command, command=True, last=True))
        pdu = p_data(context_id, item.dataset, command=False, last=True)
        self.send(pdu[: max(12, int(len(pdu) * fraction))])

    # ------------------------------------------------------------------ endings
    def release(self) -> None:
        """A-RELEASE-RQ, wait for the reply, close."""
        try:
            self.send(a_release_rq())
            self.read_pdu()
        finally:
            self.close()

    def abort(self) -> None:
        """A-ABORT, then close."""
        try:
            self.send(a_abort())
        finally:
            self.close()

    def reset(self) -> None:
        """Close with SO_LINGER (on, 0 s): the peer sees a TCP RST, not a FIN."""
        if self.sock is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> RawAssociation:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- fuzzing
def fuzz_payloads(seed: int, count: int, called_ae: str = "AINODE") -> Iterator[bytes]:
    """``count`` deterministic junk byte strings shaped like (broken) PDUs.

    A mix of: pure random bytes; random PDU types with lying length fields;
    mutated A-ASSOCIATE-RQs; a valid A-ASSOCIATE-RQ followed by a garbage
    P-DATA-TF (the caller must read the A-ASSOCIATE-AC in between, see
    :func:`fuzz_connection`); huge declared lengths with little data.
    """
    rng = random.Random(seed)
    valid_rq = associate_rq(
        called_ae,
        "FUZZ",
        [(1, VERIFICATION, [IMPLICIT_VR_LE]), (3, "1.2.840.10008.5.1.4.1.1.2", [EXPLICIT_VR_LE])],
    )
    for index in range(count):
        kind = index % 6
        if kind == 0:
            yield rng.randbytes(rng.randint(1, 2048))
        elif kind == 1:
            pdu_type = rng.choice([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, rng.randint(0, 255)])
            length = rng.choice([0, 1, 5, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.randint(0, 4096)])
            body = rng.randbytes(rng.randint(0, 512))
            yield struct.pack(">BBI", pdu_type, rng.randint(0, 255), length) + body
        elif kind == 2:
            mutated = bytearray(valid_rq)
            for _ in range(rng.randint(1, 12)):
                position = rng.randrange(len(mutated))
                mutated[position] = rng.randint(0, 255)
            yield bytes(mutated)
        elif kind == 3:
            cut = rng.randint(1, len(valid_rq) - 1)
            yield valid_rq[:cut]
        elif kind == 4:
            yield b"\x00" + rng.randbytes(rng.randint(0, 64))
        else:
            # Marker: a valid association, then garbage inside P-DATA (see fuzz_connection).
            yield b"ASSOC+" + rng.randbytes(rng.randint(1, 1024))


def fuzz_connection(port: int, payload: bytes, timeout: float = 0.5) -> None:
    """Send one fuzz payload on a fresh connection and close it; never raises on I/O errors."""
    try:
        if payload.startswith(b"ASSOC+"):
            garbage = payload[len(b"ASSOC+") :]
            association = RawAssociation(
                port, abstract_syntaxes=(VERIFICATION, "1.2.840.10008.5.1.4.1.1.2"), timeout=timeout
            )
            try:
                association.connect()
                context_id = association.accepted.get(VERIFICATION, (1, ""))[0]
                control = garbage[0] & 0x03
                association.send(
                    _pdu(0x04, struct.pack(">IBB", len(garbage) + 2, context_id, control) + garbage)
                )
                association.send(_pdu(0x04, garbage))
            finally:
                association.reset()
            return
        with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
            sock.sendall(payload)
            sock.settimeout(0.05)
            with contextlib.suppress(OSError):
                sock.recv(1024)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (OSError, RawProtocolError, struct.error):
        return
