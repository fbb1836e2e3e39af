"""The PDU reader over a real socket pair: exact reads, however the bytes arrive."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from dicom_node.scp.pdu import ConnectionClosed, PduReader


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, PduReader]]:
    """A sender's socket and a reader on its peer (a 5 s read timeout)."""
    sender, receiver = socket.socketpair()
    receiver.settimeout(5)
    reader = PduReader(receiver)
    yield sender, reader
    reader.close()
    sender.close()
    receiver.close()


def test_a_read_of_nothing_returns_at_once(pair: tuple[socket.socket, PduReader]) -> None:
    _, reader = pair
    assert reader.read(0) == b""


def test_a_read_gathers_bytes_that_arrive_one_at_a_time(
    pair: tuple[socket.socket, PduReader],
) -> None:
    sender, reader = pair
    message = bytes(range(1, 41))

    def trickle() -> None:
        for index in range(len(message)):
            sender.sendall(message[index : index + 1])
            time.sleep(0.002)

    thread = threading.Thread(target=trickle)
    thread.start()
    assert reader.read(6) == message[:6]
    assert reader.read(34) == message[6:]
    thread.join()


def test_reads_of_buffered_bytes_return_them_in_order(
    pair: tuple[socket.socket, PduReader],
) -> None:
    sender, reader = pair
    sender.sendall(b"\x04\x00\x00\x00\x00\x0a" + b"x" * 10 + b"tail")
    assert reader.pdu_header() == (4, 10)
    assert reader.read(10) == b"x" * 10
    assert reader.read(4) == b"tail"


def test_a_connection_closed_mid_read_is_said(pair: tuple[socket.socket, PduReader]) -> None:
    sender, reader = pair
    sender.sendall(b"abc")
    sender.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionClosed):
        reader.read(6)


def test_a_read_ends_at_its_deadline(pair: tuple[socket.socket, PduReader]) -> None:
    sender, reader = pair
    sender.sendall(b"ab")
    reader.set_deadline(0.2)
    with pytest.raises(TimeoutError):
        reader.read(6)
