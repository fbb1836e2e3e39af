"""Receive-path speed-ups for pynetdicom, applied once per process by the Storage SCP.

pynetdicom is correct but slow on the receive path of large instances; these
changes keep its state machine and every handler as they are and only touch
how bytes move and how long its threads sleep:

* :func:`fast_recv` reads a PDU body with ``recv_into`` straight into one
  buffer of the PDU's size (pynetdicom reads 4 KiB pieces and grows a
  ``bytearray``: ~130 calls and copies per 512 KiB slice);
* ``TCP_NODELAY`` on every accepted connection (what dcmtk does with
  ``TCP_NODELAY=1`` and Orthanc by itself): the C-STORE response leaves at once;
* a shorter idle sleep in the association and DUL reactor loops (pynetdicom
  polls its queues with 1 ms sleeps, several per instance).
"""

from __future__ import annotations

import socket
import time
import types
from typing import Any

from pynetdicom import association, dul, transport
from pynetdicom.events import Event

#: Idle sleep of pynetdicom's reactor loops while an association is open (seconds).
REACTOR_SLEEP_SECONDS = 0.0002

_RECV_CHUNK = 1 << 20
_applied = False


def fast_recv(self: transport.AssociationSocket, nr_bytes: int) -> bytearray:
    """``AssociationSocket.recv`` with ``recv_into`` one preallocated buffer.

    Same contract as pynetdicom's: blocks until ``nr_bytes`` are read and
    returns fewer only if the connection was closed.
    """
    sock = self.socket
    assert sock is not None
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    read = 0
    while read < nr_bytes:
        got = sock.recv_into(view[read:], min(nr_bytes - read, _RECV_CHUNK))
        if not got:
            del view
            return buffer[:read]
        read += got
    del view
    return buffer


class _ShortSleepTime(types.ModuleType):
    """``time`` as pynetdicom's reactors see it: the 1 ms poll sleeps are shortened.

    Longer, deliberate sleeps (the 0.1 s settle after an abort, 10 ms while
    a DUL stops) are kept as they are.
    """

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, REACTOR_SLEEP_SECONDS) if seconds <= 0.001 else seconds)


def apply() -> None:
    """Install the receive-path changes (idempotent, process-wide)."""
    global _applied
    if _applied:
        return
    transport.AssociationSocket.recv = fast_recv  # type: ignore[method-assign]
    association.time = _ShortSleepTime()  # type: ignore[attr-defined]
    dul.time = _ShortSleepTime()  # type: ignore[attr-defined]
    _applied = True


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm on the accepted connection."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
