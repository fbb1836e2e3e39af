"""Group commit of received-instance rows: one transaction for what arrives together.

Each instance still gets its answer only after its row is committed, but
rows that arrive while a commit is in progress (other associations, other
threads) are committed together in the next transaction: one database flush
(SQLite ``synchronous=FULL`` fsync, PostgreSQL WAL flush) for many instances
instead of one each.  With a single association nothing changes (batches of
one).  If a batch fails, its rows are recorded one by one so that only the
instance at fault gets the error (see :meth:`InstanceRecorder.record_batch`).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.recording.received import ReceivedInstance
from dicom_node.recording.recorder import InstanceRecorder

#: Most rows in one transaction.
MAX_BATCH = 64


class GroupCommitRecorder(InstanceRecorder):
    """An :class:`InstanceRecorder` whose ``record`` joins the next group commit.

    Leader and followers, without a thread of its own: the caller that gets
    the commit lock commits every row waiting at that moment (its own
    included); the others wait for the lock and find their row committed, or
    lead the next commit.  A lone association therefore commits in its own
    thread, with no hand-over between threads.
    """

    def __init__(
        self, session_factory: sessionmaker[Session], store_identifiers: bool = True
    ) -> None:
        super().__init__(session_factory, store_identifiers)
        self._pending: queue.SimpleQueue[tuple[ReceivedInstance, Future[int]]] = queue.SimpleQueue()
        self._leader = threading.Lock()

    def record(self, received: ReceivedInstance) -> int:
        """Record ``received`` (with others arriving meanwhile); returns its study id."""
        future: Future[int] = Future()
        self._pending.put((received, future))
        while not future.done():
            with self._leader:
                if future.done():
                    break
                batch = []
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._pending.get_nowait())
                    except queue.Empty:
                        break
                self._commit(batch)
        return future.result()

    def _commit(self, batch: list[tuple[ReceivedInstance, Future[int]]]) -> None:
        outcomes = self.record_batch([item for item, _ in batch])
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
