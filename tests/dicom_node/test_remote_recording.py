"""Rows of receiver children recorded by the main process: replies, failures, a vanished parent."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest
from sqlalchemy.exc import OperationalError

from dicom_node.recorder import ReceivedInstance, RecordingFailed
from dicom_node.remote_recording import (
    DATABASE_UNAVAILABLE,
    RECORDING_ERROR,
    RecordingServer,
    RemoteRecorder,
)
from tests.support.rows import received_instance

ROW = received_instance()


class FakeRecorder:
    """Study id 7 for every row; fails for SOP Instance UIDs ending in ``.bad`` or ``.bug``."""

    def __init__(self) -> None:
        self.rows: list[ReceivedInstance] = []
        self.both_waiting = threading.Barrier(2, timeout=10)

    def record(self, received: ReceivedInstance) -> int:
        if received.sop_instance_uid.endswith(".bad"):
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))
        if received.sop_instance_uid.endswith(".bug"):
            raise RuntimeError("a fault of the node")
        if received.sop_instance_uid.endswith(".together"):
            self.both_waiting.wait()  # two rows of one child are being recorded at once
        self.rows.append(received)
        return 7


@contextmanager
def channel(recorder: FakeRecorder) -> Iterator[tuple[RemoteRecorder, list[int], threading.Event]]:
    """A child's RemoteRecorder talking to a RecordingServer over a real pipe."""
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    recorded: list[int] = []
    others: list[object] = []
    closed = threading.Event()
    server = RecordingServer(recorder, recorded.append, max_concurrent=4)
    serving = threading.Thread(target=server.serve, args=(parent_end, others.append))
    serving.start()
    remote = RemoteRecorder(child_end, on_closed=closed.set)
    try:
        yield remote, recorded, closed
    finally:
        # Both ends are blocked in recv in other threads, which close() would not wake.
        socket.socket(fileno=os.dup(child_end.fileno())).shutdown(socket.SHUT_RDWR)
        serving.join(10)
        assert closed.wait(10)
        server.close()
        parent_end.close()
        child_end.close()


def test_rows_are_recorded_by_the_main_process_and_answered_with_their_study_id() -> None:
    recorder = FakeRecorder()
    with channel(recorder) as (remote, recorded, _closed):
        assert remote.record(ROW) == 7
        assert recorder.rows == [ROW]
        assert recorded == [7]


def test_rows_of_two_associations_of_one_child_are_recorded_concurrently() -> None:
    recorder = FakeRecorder()
    rows = [replace(ROW, sop_instance_uid=f"1.2.3.1.1.{n}.together") for n in (1, 2)]
    with channel(recorder) as (remote, _recorded, _closed):
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda r=r: results.append(remote.record(r))) for r in rows
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == [7, 7]


def test_a_failure_to_record_reaches_the_child_as_recording_failed() -> None:
    recorder = FakeRecorder()
    with channel(recorder) as (remote, recorded, _closed):
        with pytest.raises(RecordingFailed, match=DATABASE_UNAVAILABLE):
            remote.record(replace(ROW, sop_instance_uid="1.2.3.1.1.9.bad"))
        with pytest.raises(RecordingFailed, match=RECORDING_ERROR):
            remote.record(replace(ROW, sop_instance_uid="1.2.3.1.1.9.bug"))
        assert recorded == []
        assert remote.record(ROW) == 7  # the channel still works


def test_when_the_main_process_is_gone_records_fail_and_the_child_is_told() -> None:
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    closed = threading.Event()
    remote = RemoteRecorder(child_end, on_closed=closed.set)
    failures: list[BaseException] = []

    def record() -> None:
        try:
            remote.record(ROW)
        except RecordingFailed as exc:
            failures.append(exc)

    waiting = threading.Thread(target=record)
    waiting.start()
    assert parent_end.recv()[1] == ROW  # the row was sent, but no answer ever comes
    parent_end.close()
    waiting.join(10)
    assert closed.wait(10)
    assert len(failures) == 1
    with pytest.raises(RecordingFailed):
        remote.record(ROW)
    child_end.close()


def test_a_reply_the_child_cannot_match_breaks_the_channel_instead_of_hanging() -> None:
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    closed = threading.Event()
    remote = RemoteRecorder(child_end, on_closed=closed.set)
    failures: list[BaseException] = []

    def record() -> None:
        try:
            remote.record(ROW)
        except RecordingFailed as exc:
            failures.append(exc)

    waiting = threading.Thread(target=record)
    waiting.start()
    request_id = parent_end.recv()[0]
    parent_end.send((request_id + 1000, 7, None))  # answers a request that was never made
    waiting.join(10)
    assert closed.wait(10)
    assert len(failures) == 1
    parent_end.close()
    child_end.close()
