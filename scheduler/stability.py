"""Study completeness: a study is stable once no instance arrived for ``stability_seconds``.

The monitor sleeps until the earliest study deadline (not a fixed polling
tick), routes each study that became quiet exactly once (the database claim
in :meth:`scheduler.dispatch.Dispatcher.route_study` makes that safe with
several monitors), and runs the recovery sweep on its own interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Study, StudyState, utcnow
from core.db.session import session_scope

log = logging.getLogger(__name__)

IDLE_WAKE_SECONDS = 5.0


class StabilityMonitor:
    """Finds studies that have been quiet long enough and hands them to ``on_stable``.

    Parameters
    ----------
    session_factory:
        Database with the studies' last-received times.
    stability_seconds:
        Quiet time after which a study is complete.
    on_stable:
        Called with a study id once it is due (routing).
    sweep:
        Called every ``sweep_seconds`` (the recovery sweep), optional.
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        stability_seconds: float,
        on_stable: Callable[[int], object],
        sweep: Callable[[], object] | None = None,
        sweep_seconds: float = 60.0,
    ) -> None:
        self._session_factory = session_factory
        self._stability = timedelta(seconds=stability_seconds)
        self._on_stable = on_stable
        self._sweep = sweep
        self._sweep_seconds = sweep_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = True
        self._thread: threading.Thread | None = None

    def notify(self, _study_id: int | None = None) -> None:
        """An instance arrived: wake the monitor if it is not already timing a study."""
        if self._idle:
            self._wake.set()

    def due(self, now: datetime) -> tuple[list[int], datetime | None]:
        """Ids of studies due now, and the next deadline among those still receiving."""
        cutoff = now - self._stability
        with session_scope(self._session_factory) as session:
            receiving = Study.state == StudyState.RECEIVING
            due_ids = list(
                session.scalars(
                    select(Study.id).where(receiving, Study.last_received_at <= cutoff)
                ).all()
            )
            earliest = session.scalar(
                select(func.min(Study.last_received_at)).where(
                    receiving, Study.last_received_at > cutoff
                )
            )
        if earliest is not None and earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=now.tzinfo)
        return due_ids, (earliest + self._stability if earliest is not None else None)

    def run_once(self, now: datetime | None = None) -> float:
        """Route every due study; returns how long to sleep before the next check."""
        started = time.monotonic()
        now = now or utcnow()
        due_ids, next_deadline = self.due(now)
        for study_id in due_ids:
            try:
                self._on_stable(study_id)
            except Exception:
                log.exception("routing study %d failed; it will be retried", study_id)
        if next_deadline is None:
            self._idle = True
            return IDLE_WAKE_SECONDS
        self._idle = False
        # Measured from ``now`` (which callers may pass), less the time routing took.
        remaining = (next_deadline - now).total_seconds() - (time.monotonic() - started)
        return max(0.05, remaining)

    def _loop(self) -> None:
        next_sweep = time.monotonic() + self._sweep_seconds
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception:
                log.exception("stability check failed (database unavailable?)")
                wait = IDLE_WAKE_SECONDS
            if self._sweep is not None and time.monotonic() >= next_sweep:
                try:
                    self._sweep()
                except Exception:
                    log.exception("recovery sweep failed")
                next_sweep = time.monotonic() + self._sweep_seconds
            if self._sweep is not None:
                wait = min(wait, max(0.05, next_sweep - time.monotonic()))
            self._wake.wait(wait)
            self._wake.clear()

    def start(self) -> None:
        """Run the monitor in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="stability", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
