"""Handing accepted connections from the main process to a receiver process.

The main process accepts every connection and passes its descriptor over a
Unix socket to the receiver process with the fewest open associations
(``SCM_RIGHTS``), so associations are spread evenly however fast they arrive.
Letting the children race for ``accept`` on a shared socket did not: when
several connections were waiting, the first child to wake took them all
(4 associations on one of 4 processes).  The message carries how many
associations the node has open besides this one, for the association limit.
"""

from __future__ import annotations

import socket
import struct

_ACTIVE = struct.Struct("<I")


class HandoffClosed(ConnectionError):
    """The other end of the hand-over channel is gone."""


def handoff_pair() -> tuple[socket.socket, socket.socket]:
    """The two ends of a hand-over channel: (main process's end, receiver's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def hand_over(channel: socket.socket, connection: socket.socket, active: int) -> None:
    """Send ``connection`` through ``channel``; the caller then closes its own copy.

    Raises
    ------
    HandoffClosed
        If the receiving process is gone.
    """
    try:
        socket.send_fds(channel, [_ACTIVE.pack(active)], [connection.fileno()])
    except OSError as exc:
        raise HandoffClosed("the receiver process is gone") from exc


def take_over(channel: socket.socket) -> tuple[socket.socket, int]:
    """The next connection handed over on ``channel`` and the node's other open associations.

    Raises
    ------
    HandoffClosed
        If the main process is gone (the channel closed).
    """
    try:
        data, fds, _flags, _address = socket.recv_fds(channel, _ACTIVE.size, 1)
    except OSError as exc:
        raise HandoffClosed("the main process is gone") from exc
    if len(data) != _ACTIVE.size or len(fds) != 1:
        for fd in fds:
            socket.close(fd)
        raise HandoffClosed("the main process is gone")
    return socket.socket(fileno=fds[0]), _ACTIVE.unpack(data)[0]
