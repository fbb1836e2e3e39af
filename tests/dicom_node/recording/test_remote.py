"""Rows of receiver children recorded by the main process: replies, failures, a vanished parent."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.connection import Connection

import pytest

from dicom_node.recording.received import ReceivedInstance, RecordingFailed, Refusal
from dicom_node.recording.remote import (
    RECORDING_ERROR,
    ChildChannel,
    RecordingServer,
    RemoteRecorder,
)
from tests.support.rows import received_instance

ROW = received_instance()


class FakeRecorder:
    """Study id 7 for every row; fails for SOP Instance UIDs ending in ``.bad`` or ``.bug``.

    The batch that holds a row ending in ``.hold`` waits for :attr:`release`.
    """

    def __init__(self) -> None:
        self.batches: list[list[ReceivedInstance]] = []
        self.refusals: list[Refusal] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def record_batch(self, rows: Sequence[ReceivedInstance]) -> list[int | Exception]:
        if any(row.sop_instance_uid.endswith(".hold") for row in rows):
            self.holding.set()
            assert self.release.wait(10)
        self.batches.append(list(rows))
        return [self._outcome(row) for row in rows]

    def refused(self, refusal: Refusal) -> None:
        self.refusals.append(refusal)

    @staticmethod
    def _outcome(row: ReceivedInstance) -> int | Exception:
        if row.sop_instance_uid.endswith(".bad"):
            return RecordingFailed("database unavailable (OperationalError)")
        if row.sop_instance_uid.endswith(".bug"):
            return RuntimeError("a fault of the node")
        if row.sop_instance_uid.endswith(".own"):
            return 100 + int(row.sop_instance_uid.split(".")[-2])  # a study id per row
        return 7

    @property
    def rows(self) -> list[ReceivedInstance]:
        return [row for batch in self.batches for row in batch]


@contextmanager
def channel(recorder: FakeRecorder) -> Iterator[tuple[RemoteRecorder, list[int], list[object]]]:
    """A child's RemoteRecorder talking to a RecordingServer over a real pipe."""
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    recorded: list[int] = []
    others: list[object] = []
    child_closed, parent_closed = threading.Event(), threading.Event()
    server = RecordingServer(recorder, recorded.append)
    serving = threading.Thread(
        target=server.serve, args=([ChildChannel(parent_end, others.append, parent_closed.set)],)
    )
    serving.start()
    remote = RemoteRecorder(child_end, on_closed=child_closed.set)
    try:
        yield remote, recorded, others
    finally:
        # The server is blocked in a wait in another thread, which close() would not wake.
        socket.socket(fileno=os.dup(child_end.fileno())).shutdown(socket.SHUT_RDWR)
        serving.join(10)
        assert parent_closed.is_set()
        # the child learns it when it next needs the main process
        with pytest.raises(RecordingFailed):
            remote.record(ROW)
        assert child_closed.is_set()
        parent_end.close()
        child_end.close()


def test_rows_are_recorded_by_the_main_process_and_answered_with_their_study_id() -> None:
    recorder = FakeRecorder()
    with channel(recorder) as (remote, recorded, others):
        remote.send("ready")
        assert remote.record(ROW) == 7
        assert recorder.rows == [ROW]
        assert recorded == [7]
        assert others == ["ready"]


def test_a_childs_refusals_are_counted_by_the_main_process_without_a_reply() -> None:
    recorder = FakeRecorder()
    refusal = Refusal(0xC001, "invalid-instance", "SCU")
    with channel(recorder) as (remote, _recorded, others):
        remote.refused(refusal)
        remote.refused(refusal)
        assert remote.record(ROW) == 7  # no reply to a refusal stands in the row's way
        assert recorder.refusals == [refusal, refusal]
        assert others == []


def test_a_refusal_is_dropped_without_an_error_when_the_main_process_is_gone() -> None:
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    parent_end.close()
    RemoteRecorder(child_end, on_closed=lambda: None).refused(
        Refusal(0xC000, "invalid-instance", None)
    )
    child_end.close()


def test_rows_arriving_during_a_commit_are_recorded_together() -> None:
    recorder = FakeRecorder()
    child_end, parent_end = multiprocessing.Pipe(duplex=True)
    server = RecordingServer(recorder, lambda _study_id: None)
    serving = threading.Thread(
        target=server.serve,
        args=([ChildChannel(parent_end, lambda _message: None, lambda: None)],),
    )
    serving.start()
    child_end.send((0, replace(ROW, sop_instance_uid="1.2.3.1.1.0.hold")))
    assert recorder.holding.wait(10)
    # both rows are on the pipe while the first batch is being committed
    child_end.send((1, replace(ROW, sop_instance_uid="1.2.3.1.1.1")))
    child_end.send((2, replace(ROW, sop_instance_uid="1.2.3.1.1.2")))
    recorder.release.set()
    assert sorted(child_end.recv() for _ in range(3)) == [(0, 7, None), (1, 7, None), (2, 7, None)]
    assert [len(batch) for batch in recorder.batches] == [1, 2]
    child_end.close()
    serving.join(10)
    parent_end.close()


def test_each_association_of_a_child_gets_its_own_reply() -> None:
    """Several threads wait at once; whichever reads a reply hands it to its owner."""
    recorder = FakeRecorder()
    rows = [replace(ROW, sop_instance_uid=f"1.2.3.1.1.{n}.own") for n in range(8)]
    with channel(recorder) as (remote, _recorded, _others):
        results: dict[str, int] = {}
        threads = [
            threading.Thread(
                target=lambda r=r: results.__setitem__(r.sop_instance_uid, remote.record(r))
            )
            for r in rows
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert results == {row.sop_instance_uid: 100 + n for n, row in enumerate(rows)}


def test_a_failure_to_record_reaches_the_child_as_recording_failed() -> None:
    recorder = FakeRecorder()
    with channel(recorder) as (remote, recorded, _others):
        # the child answers with the same cause as a single-process SCP would
        with pytest.raises(RecordingFailed, match=r"^database unavailable \(OperationalError\)$"):
            remote.record(replace(ROW, sop_instance_uid="1.2.3.1.1.9.bad"))
        with pytest.raises(RecordingFailed, match=RECORDING_ERROR):
            remote.record(replace(ROW, sop_instance_uid="1.2.3.1.1.9.bug"))
        assert recorded == []
        assert remote.record(ROW) == 7  # the channel still works


def _close(parent_end: Connection, _request_id: int) -> None:
    parent_end.close()


@pytest.mark.parametrize(
    "answer",
    [
        _close,
        lambda parent_end, request_id: parent_end.send((request_id + 1000, 7, None)),
        lambda parent_end, _request_id: parent_end.send("not a reply"),
    ],
    ids=["main process gone", "reply to an unknown request", "malformed reply"],
)
def test_a_waiting_row_fails_and_the_child_is_told_when_no_usable_reply_can_come(
    answer: Callable[[Connection, int], None],
) -> None:
    """The pipe closed or a reply the child cannot match: the channel breaks, nothing hangs."""
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
    request_id, row = parent_end.recv()
    assert row == ROW  # the row was sent; what comes back is of no use
    answer(parent_end, request_id)
    waiting.join(10)
    assert closed.wait(10)
    assert len(failures) == 1
    with pytest.raises(RecordingFailed):
        remote.record(ROW)
    parent_end.close()
    child_end.close()
