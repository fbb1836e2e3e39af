"""Instance rows of receiver children, recorded by the main process's group commit.

Receiver children (:mod:`dicom_node.receivers`) do not write to the database
themselves.  Each sends the row of every instance it has stored through a pipe
to the main process and answers the C-STORE once the main process replies that
the row is committed.  The main process records the rows of all children with
one :class:`~dicom_node.group_commit.GroupCommitRecorder`, so rows arriving
together from several processes share one transaction and one flush.
Writing from each process instead made them queue on SQLite's single write lock
(whose busy handler sleeps for milliseconds) and cost one flush per row.

Messages on the pipe: child → main ``(request id, ReceivedInstance)``; main →
child ``(request id, study id, None)`` or ``(request id, None, reason)``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from dicom_node.recorder import ReceivedInstance, Recorder, RecordingFailed

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


class RecordingServer:
    """The main process's side: records what children send with the shared recorder.

    Each child's pipe is read by one thread (:meth:`serve`); each row is
    recorded in a pool thread so that rows of several associations of one
    child can join the same group commit.

    Parameters
    ----------
    recorder:
        The main process's recorder.
    on_recorded:
        Called with the study id after each row is committed (wakes the
        stability monitor as an instance received in the main process does).
    max_concurrent:
        Most rows being recorded at once (the node's association limit).
    """

    def __init__(
        self, recorder: Recorder, on_recorded: Callable[[int], None], max_concurrent: int
    ) -> None:
        self._recorder = recorder
        self._on_recorded = on_recorded
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="child-rows")

    def serve(self, connection: Connection, on_other: Callable[[Any], None]) -> None:
        """Record the rows arriving on ``connection`` until it closes.

        Anything on the pipe that is not a row goes to ``on_other``.
        """
        lock = threading.Lock()
        with contextlib.suppress(EOFError, OSError):
            while True:
                message = connection.recv()
                if isinstance(message, tuple):
                    self._pool.submit(self._record, connection, lock, *message)
                else:
                    on_other(message)

    def _record(
        self, connection: Connection, lock: threading.Lock, request_id: int, row: ReceivedInstance
    ) -> None:
        try:
            study_id = self._recorder.record(row)
        except (SQLAlchemyError, RecordingFailed) as exc:
            log.error("cannot record instance %s: %s", row.sop_instance_uid, type(exc).__name__)
            reply: tuple[int, int | None, str | None] = (request_id, None, DATABASE_UNAVAILABLE)
        except Exception:
            # never leave the child's association waiting for an answer that will not come
            log.exception("cannot record instance %s", row.sop_instance_uid)
            reply = (request_id, None, RECORDING_ERROR)
        else:
            # before the reply, as for the main process's own instances
            self._on_recorded(study_id)
            reply = (request_id, study_id, None)
        with lock, contextlib.suppress(OSError):
            connection.send(reply)

    def close(self) -> None:
        """Finish the rows being recorded."""
        self._pool.shutdown(wait=True)
