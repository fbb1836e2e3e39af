"""A running job's heartbeat and watchdog.

The heartbeat is proof in the database that the job's worker is alive: the
recovery sweep re-queues a ``running`` job whose heartbeat is older than
``job_stale_seconds`` (its worker was killed or lost).  The watchdog covers
the opposite case, a worker alive but stuck: past the job's time limit it
calls ``on_timeout`` (which records the failure and ends the worker process,
since a solo-pool worker cannot interrupt its own task).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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
        self,
        session_factory: sessionmaker[Session],
        job_id: int,
        interval: float,
        time_limit: float | None = None,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._job_id = job_id
        self._interval = interval
        self._time_limit = time_limit
        self._on_timeout = on_timeout
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
        started = time.monotonic()
        while not self._stop.wait(self._interval):
            if self._time_limit is not None and time.monotonic() - started > self._time_limit:
                log.error("job %d exceeded its time limit of %.0fs", self._job_id, self._time_limit)
                if self._on_timeout is not None:
                    self._on_timeout()
                return
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
