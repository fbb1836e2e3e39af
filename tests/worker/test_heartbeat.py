"""The heartbeat stamps a running job; the watchdog fires once past the time limit."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import update

from core.db.models import Job, JobState, utcnow
from scheduler.dispatch import Dispatcher
from tests.support.waiting import wait_until
from worker.heartbeat import Heartbeat

from .conftest import SpoolStudy


def _running_job(settings, factory, app, spool_study: SpoolStudy, phantom) -> int:
    now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(app, factory, settings).route_study(spool_study(phantom), now=now)
    assert outcome is not None
    (job_id,) = outcome.new_job_ids
    with factory() as session:
        session.execute(update(Job).values(state=JobState.RUNNING))
        session.commit()
    return job_id


def test_heartbeat_stamps_the_running_job(
    settings, session_factory, recording_app, spool_study, small_phantom
) -> None:
    job_id = _running_job(settings, session_factory, recording_app, spool_study, small_phantom)
    with Heartbeat(session_factory, job_id, interval=0.05):
        stamped = wait_until(lambda: session_factory().get(Job, job_id).heartbeat_at, timeout=5)
    assert stamped is not None


def test_watchdog_fires_after_the_time_limit(
    settings, session_factory, recording_app, spool_study, small_phantom
) -> None:
    job_id = _running_job(settings, session_factory, recording_app, spool_study, small_phantom)
    fired = threading.Event()
    with Heartbeat(session_factory, job_id, 0.05, time_limit=0.2, on_timeout=fired.set):
        assert fired.wait(timeout=5)
