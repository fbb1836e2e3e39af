"""Instance rows of receiver children, recorded by the main process in batches.

Receiver children (:mod:`dicom_node.receivers.pool`) do not write to the database
themselves.  Each sends the row of every instance it has stored through a pipe
to the main process and answers the C-STORE once the main process replies that
the row is committed.  One thread of the main process waits on the pipes of all
children, takes every row that has arrived and records them in one
transaction, so rows arriving together from several processes share one flush.
Writing from each process instead made them queue on SQLite's single write lock
(whose busy handler sleeps for milliseconds) and cost one flush per row; a
thread, a queue and a future per row in the main process cost as much CPU as
recording the row.

Messages on the pipe: child → main ``(request id, ReceivedInstance)``, a
:class:`~dicom_node.recording.received.Refusal` (counted by the main process's
recorder, never answered) and the notices of :mod:`dicom_node.receivers.pool`;
main → child ``(request id, study id, None)`` or ``(request id, None, reason)``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from dicom_node.recording.received import (
    ReceivedInstance,
    RecordingFailed,
    Refusal,
    recording_failure_reason,
)

log = logging.getLogger(__name__)

#: What a child is told when recording failed for a reason other than the database
#: (a fault of the node, logged in the main process); a database failure's own text is passed on.
RECORDING_ERROR = "recording failed in the main process"
#: Why a child's row fails when its pipe to the main process has closed.
MAIN_PROCESS_GONE = "the node's main process is gone"


class RemoteRecorder:
    """A child's ``Recorder``: the main process records the rows, this one waits for replies.

    The association threads waiting for replies read them themselves, one
    thread at a time, and hand each reply to the thread it belongs to; a lone
    association (the usual case, see :mod:`dicom_node.receivers.handoff`) thus reads its
    own reply, without a hand-over between threads.

    Parameters
    ----------
    connection:
        The child's end of its pipe to the main process.
    on_closed:
        Called once when the pipe is found closed or unusable, by the thread
        that was reading (the main process is gone).
    """

    def __init__(self, connection: Connection, on_closed: Callable[[], None]) -> None:
        self._connection = connection
        self._on_closed = on_closed
        self._send_lock = threading.Lock()
        # guards what follows; notified whenever a reply arrives or the pipe closes
        self._state = threading.Condition()
        self._waiting: set[int] = set()
        self._replies: dict[int, tuple[int | None, str | None]] = {}
        self._reading = False
        self._closed = False
        self._ids = itertools.count()

    def send(self, message: Any) -> None:
        """Send something else to the main process (e.g. that this child serves)."""
        with self._send_lock:
            self._connection.send(message)

    def record(self, received: ReceivedInstance) -> int:
        """Have the main process record ``received``; its study id once committed.

        Raises
        ------
        RecordingFailed
            If the main process could not record it, or is gone.
        """
        with self._state:
            if self._closed:
                raise RecordingFailed(MAIN_PROCESS_GONE)
            request_id = next(self._ids)
            self._waiting.add(request_id)
        try:
            with self._send_lock:
                self._connection.send((request_id, received))
        except OSError as exc:
            with self._state:
                self._waiting.discard(request_id)
                self._close()
            raise RecordingFailed(MAIN_PROCESS_GONE) from exc
        study_id, reason = self._reply(request_id)
        if reason is not None:
            raise RecordingFailed(reason)
        assert study_id is not None
        return study_id

    def refused(self, refusal: Refusal) -> None:
        """Have the main process count ``refusal``; no reply is awaited, nothing is raised."""
        try:
            self.send(refusal)
        except Exception:
            log.warning("cannot pass a refused instance's count to the node's main process")

    def _reply(self, request_id: int) -> tuple[int | None, str | None]:
        """Wait for the reply to ``request_id``, reading replies while no other thread does."""
        with self._state:
            try:
                while request_id not in self._replies:
                    if self._closed:
                        raise RecordingFailed(MAIN_PROCESS_GONE)
                    if self._reading:
                        self._state.wait()
                    else:
                        self._read_one()
                return self._replies.pop(request_id)
            finally:
                self._waiting.discard(request_id)

    def _read_one(self) -> None:
        """Read the next reply with the lock released; called with it held."""
        self._reading = True
        self._state.release()
        try:
            reply = self._connection.recv()
        except (EOFError, OSError):
            reply = None
        except Exception:
            log.exception("unreadable reply from the node's main process")
            reply = None
        finally:
            self._state.acquire()
            self._reading = False
        if isinstance(reply, tuple) and len(reply) == 3 and reply[0] in self._waiting:
            request_id, study_id, reason = reply
            self._replies[request_id] = (study_id, reason)
            self._state.notify_all()
            return
        if reply is not None:
            # a reply this child cannot match: treat the channel as broken, never hang
            log.error("reply to an unknown request from the node's main process")
        self._close()

    def _close(self) -> None:
        """The pipe is closed or unusable: fail the waiting rows and say so once (lock held)."""
        if not self._closed:
            self._closed = True
            self._on_closed()
        self._state.notify_all()


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

    def refused(self, refusal: Refusal) -> None:
        """Count a child's refused instance (never raises, never waits for the database)."""
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

    def _take(
        self,
        channel: ChildChannel,
        rows: list[tuple[Connection, int, ReceivedInstance]],
        selector: selectors.BaseSelector,
    ) -> None:
        """Read one message of ``channel``: a row joins ``rows``, a refusal is counted.

        A closed pipe is dropped.
        """
        try:
            message = channel.connection.recv()
        except (EOFError, OSError):
            selector.unregister(channel.connection)
            channel.on_closed()
            return
        if isinstance(message, tuple):
            rows.append((channel.connection, *message))
        elif isinstance(message, Refusal):
            self._recorder.refused(message)
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
                reason = recording_failure_reason(outcome, row.sop_instance_uid, RECORDING_ERROR)
                reply = (request_id, None, reason)
            else:
                # before the reply, as for the main process's own instances
                self._on_recorded(outcome)
                reply = (request_id, outcome, None)
            with contextlib.suppress(OSError):
                connection.send(reply)
