"""Handing an accepted connection to another process's socket: it keeps working there."""

from __future__ import annotations

import socket

import pytest

from dicom_node.receivers.handoff import HandoffClosed, hand_over, handoff_pair, take_over


def test_a_connection_handed_over_is_served_through_the_new_descriptor() -> None:
    main_end, receiver_end = handoff_pair()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.create_connection(listener.getsockname(), timeout=5)
        accepted, _ = listener.accept()
        hand_over(main_end, accepted, active=3)
        accepted.close()  # the main process's copy
        taken, active = take_over(receiver_end)
        with peer, taken:
            assert active == 3
            assert taken.getpeername() == peer.getsockname()
            peer.sendall(b"ping")
            assert taken.recv(4) == b"ping"
            taken.sendall(b"pong")
            assert peer.recv(4) == b"pong"
    main_end.close()
    receiver_end.close()


def test_either_end_learns_that_the_other_is_gone() -> None:
    main_end, receiver_end = handoff_pair()
    main_end.close()
    with pytest.raises(HandoffClosed):
        take_over(receiver_end)
    receiver_end.close()

    main_end, receiver_end = handoff_pair()
    receiver_end.close()
    with socket.socket() as unconnected, pytest.raises(HandoffClosed):
        hand_over(main_end, unconnected, active=0)
    main_end.close()
