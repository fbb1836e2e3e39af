"""Instance rows of receiver children, recorded by the main process's group commit.

Receiver children (:mod:`dicom_node.receivers`) do not write to the database
themselves.  Each sends the row of every instance it has stored through a pipe
to the main process and answers the C-STORE once the main process replies that
the row is committed.  One thread of the main process waits on the pipes of all
children, takes every row that has arrived and records them in one
transaction, so rows arriving together from several processes share one flush.
Writing from each process instead made them queue on SQLite's single write lock
(whose busy handler sleeps for milliseconds) and cost one flush per row; a
thread, a queue and a future per row in the main process cost as much CPU as
recording the row.

Messages on the pipe: child → main ``(request id, ReceivedInstance)``; main →
child ``(request id, study id, None)`` or ``(request id, None, reason)``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from dicom_node.received import ReceivedInstance, RecordingFailed

log = logging.getLogger(__name__)

#: What a child is told when the main process could not record its row.
DATABASE_UNAVAILABLE = "database unavailable"
#: ... and when recording failed for another reason (a fault of the node, logged there).
RECORDING_ERROR = "recording failed in the main process"


class RemoteRecorder:
    """A child's :class:`~dicom_node.recorder.Recorder`: the main process records, this one waits.

    Parameters
    ----------
    connection:
        The child's end of its pipe to the main process; its replies are read
        by a thread of this object.
    on_closed:
        Called once when the main process is gone (the pipe closed).
    """

    def __init__(self, connection: Connection, on_closed: Callable[[], None]) -> None:
        self._connection = connection
        self._on_closed = on_closed
        self._lock = threading.Lock()
        self._waiting: dict[int, Future[int]] = {}
        self._ids = itertools.count()
        self._closed = False
        self._reader = threading.Thread(
            target=self._read_replies, name="record-replies", daemon=True
        )
        self._reader.start()

    def send(self, message: Any) -> None:
        """Send something else to the main process (e.g. that this child listens)."""
        with self._lock:
            self._connection.send(message)

    def record(self, received: ReceivedInstance) -> int:
        """Have the main process record ``received``; its study id once committed.

        Raises
        ------
        RecordingFailed
            If the main process could not record it, or is gone.
        """
        future: Future[int] = Future()
        with self._lock:
            if self._closed:
                raise RecordingFailed("the node's main process is gone")
            request_id = next(self._ids)
            self._waiting[request_id] = future
            try:
                self._connection.send((request_id, received))
            except OSError as exc:
                del self._waiting[request_id]
                raise RecordingFailed("the node's main process is gone") from exc
        return future.result()

    def _read_replies(self) -> None:
        try:
            while True:
                request_id, study_id, reason = self._connection.recv()
                with self._lock:
                    future = self._waiting.pop(request_id)
                if reason is None:
                    future.set_result(study_id)
                else:
                    future.set_exception(RecordingFailed(reason))
        except (EOFError, OSError):
            pass
        except Exception:
            # a reply this child cannot match: treat the channel as broken, never hang
            log.exception("unusable reply from the node's main process")
        with self._lock:
            self._closed = True
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.set_exception(RecordingFailed("the node's main process is gone"))
        self._on_closed()


@dataclass
class ChildChannel:
    """The main process's end of one child's pipe, and what to do with what is not a row."""

    connection: Connection
    on_message: Callable[[Any], None]
    on_closed: Callable[[], None]


class BatchRecorder(Protocol):
    """What records the children's rows: a whole batch at once, each row with its outcome."""

    def record_batch(self, rows: Sequence[ReceivedInstance]) -> list[int | Exception]:
        """Each row's study id, or the exception that kept it from being recorded."""
        ...


class RecordingServer:
    """The main process's side: records what the children send, in batches.

    One thread (:meth:`serve`) waits on every child's pipe at once, takes all
    the rows that have arrived, records them in one transaction and replies.
    Rows that arrive during a commit form the next batch, so concurrent
    associations share commits without a thread, a queue or a future per row.

    Parameters
    ----------
    recorder:
        The main process's recorder.
    on_recorded:
        Called with the study id after each row is committed (wakes the
        stability monitor as an instance received in the main process does).
    """

    def __init__(self, recorder: BatchRecorder, on_recorded: Callable[[int], None]) -> None:
        self._recorder = recorder
        self._on_recorded = on_recorded

    def serve(self, channels: Sequence[ChildChannel]) -> None:
        """Record the rows arriving on ``channels`` until every one of them has closed."""
        with selectors.DefaultSelector() as selector:
            for channel in channels:
                selector.register(channel.connection, selectors.EVENT_READ, channel)
            while selector.get_map():
                rows: list[tuple[Connection, int, ReceivedInstance]] = []
                events = selector.select()
                while events:  # take every message there is, then record them together
                    for key, _ in events:
                        self._take(key.data, rows, selector)
                    events = selector.select(0) if selector.get_map() else []
                if rows:
                    self._record(rows)

    @staticmethod
    def _take(
        channel: ChildChannel,
        rows: list[tuple[Connection, int, ReceivedInstance]],
        selector: selectors.BaseSelector,
    ) -> None:
        """Read one message of ``channel``: a row joins ``rows``; a closed pipe is dropped."""
        try:
            message = channel.connection.recv()
        except (EOFError, OSError):
            selector.unregister(channel.connection)
            channel.on_closed()
            return
        if isinstance(message, tuple):
            rows.append((channel.connection, *message))
        else:
            channel.on_message(message)

    def _record(self, rows: list[tuple[Connection, int, ReceivedInstance]]) -> None:
        try:
            outcomes = self._recorder.record_batch([row for _, _, row in rows])
        except Exception as exc:
            # never leave the children's associations waiting for answers that will not come
            outcomes = [exc] * len(rows)
        for (connection, request_id, row), outcome in zip(rows, outcomes, strict=True):
            if isinstance(outcome, Exception):
                reply = (request_id, None, self._reason(row, outcome))
            else:
                # before the reply, as for the main process's own instances
                self._on_recorded(outcome)
                reply = (request_id, outcome, None)
            with contextlib.suppress(OSError):
                connection.send(reply)

    @staticmethod
    def _reason(row: ReceivedInstance, exc: Exception) -> str:
        """What the child is told, after logging why (UIDs only)."""
        if isinstance(exc, RecordingFailed):
            log.error("cannot record instance %s: %s", row.sop_instance_uid, exc)
            return DATABASE_UNAVAILABLE
        log.error("cannot record instance %s", row.sop_instance_uid, exc_info=exc)
        return RECORDING_ERROR
