"""A running job's heartbeat: proof in the database that its worker is alive.

The recovery sweep re-queues a ``running`` job whose heartbeat is older than
``job_stale_seconds`` (its worker was killed or lost), so a crash never
leaves a job running forever.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Job, JobState, utcnow
from core.db.session import session_scope

log = logging.getLogger(__name__)


class Heartbeat:
    """Context manager that stamps ``jobs.heartbeat_at`` every ``interval`` seconds."""

    def __init__(
        self, session_factory: sessionmaker[Session], job_id: int, interval: float
    ) -> None:
        self._session_factory = session_factory
        self._job_id = job_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def beat(self) -> None:
        """Stamp the heartbeat now (a database hiccup is logged, not raised)."""
        try:
            with session_scope(self._session_factory) as session:
                session.execute(
                    update(Job)
                    .where(Job.id == self._job_id, Job.state == JobState.RUNNING)
                    .values(heartbeat_at=utcnow())
                )
        except SQLAlchemyError as exc:
            log.warning("job %d heartbeat not recorded: %s", self._job_id, type(exc).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
