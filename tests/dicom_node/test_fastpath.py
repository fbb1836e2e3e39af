"""The receive-path changes keep pynetdicom's contracts."""

from __future__ import annotations

import socket
import threading

from dicom_node import fastpath


class _Holder:
    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock


def test_fast_recv_reads_exactly_and_stops_at_close() -> None:
    left, right = socket.socketpair()
    payload = bytes(range(256)) * 5000  # larger than one recv
    sender = threading.Thread(target=lambda: (right.sendall(payload), right.close()))
    sender.start()
    holder = _Holder(left)
    assert bytes(fastpath.fast_recv(holder, 1000)) == payload[:1000]  # type: ignore[arg-type]
    rest = fastpath.fast_recv(holder, len(payload))  # type: ignore[arg-type]
    sender.join()
    assert bytes(rest) == payload[1000:]  # connection closed: what was there, no more
    left.close()


def test_only_poll_sleeps_are_shortened(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(fastpath.time, "sleep", slept.append)
    shim = fastpath._ShortSleepTime()
    shim.sleep(0.001)
    shim.sleep(0.0001)
    shim.sleep(0.1)
    shim.sleep(0.01)
    assert slept == [fastpath.REACTOR_SLEEP_SECONDS, 0.0001, 0.1, 0.01]
    assert shim.monotonic is fastpath.time.monotonic
