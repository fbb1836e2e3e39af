"""Operator recovery: retry failed deliveries, replay a job's results, re-run a job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from core.db.models import Delivery, DeliveryState, Job, JobState, utcnow
from core.errors import ConfigurationError
from scheduler.dispatch import Dispatcher
from worker.queues import RUN_JOB, SEND_DELIVERY
from worker.runtime import WorkerRuntime
from worker.tasks.inference import execute_job

from .conftest import RecordingApp, SpoolStudy


@pytest.fixture
def done_job(
    make_settings,
    session_factory,
    spool_study: SpoolStudy,
    small_phantom,
    recording_app: RecordingApp,
) -> tuple[Dispatcher, int]:
    settings = make_settings(destinations="PACS@127.0.0.1:104")
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = dispatcher.route_study(spool_study(small_phantom), now=now)
    assert outcome is not None
    execute_job(WorkerRuntime.from_settings(settings), outcome.new_job_ids[0])
    recording_app.sent.clear()
    return dispatcher, outcome.new_job_ids[0]


def test_retry_deliveries_resets_failed_ones(done_job, session_factory, recording_app) -> None:
    dispatcher, _ = done_job
    with session_factory() as session:
        session.execute(update(Delivery).values(state=DeliveryState.FAILED, attempts=6))
        session.commit()
    ids = dispatcher.retry_deliveries()
    assert len(ids) == 2
    assert sorted(args[0] for _, args, _ in recording_app.sent) == sorted(ids)
    with session_factory() as session:
        for delivery in session.scalars(select(Delivery)):
            assert (delivery.state, delivery.attempts) == (DeliveryState.PENDING, 0)


def test_replay_resends_even_delivered_results(done_job, session_factory, recording_app) -> None:
    dispatcher, job_id = done_job
    with session_factory() as session:
        session.execute(update(Delivery).values(state=DeliveryState.SUCCEEDED, attempts=1))
        session.commit()
    planned = dispatcher.replay_job(job_id)
    assert len(planned) == 2
    assert {name for name, _, _ in recording_app.sent} == {SEND_DELIVERY}
    with session_factory() as session:
        assert len(session.scalars(select(Delivery)).all()) == 2


def test_rerun_requeues_the_job(done_job, session_factory, recording_app) -> None:
    dispatcher, job_id = done_job
    assert dispatcher.replay_job(job_id, rerun=True) == [job_id]
    assert recording_app.sent == [(RUN_JOB, [job_id], "cpu")]
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.QUEUED
        assert job.events[-1].message == "re-run requested by operator"


def test_replay_refuses_unknown_or_active_jobs(done_job, session_factory) -> None:
    dispatcher, job_id = done_job
    with pytest.raises(ConfigurationError):
        dispatcher.replay_job(999)
    with session_factory() as session:
        session.execute(update(Job).values(state=JobState.RUNNING))
        session.commit()
    with pytest.raises(ConfigurationError):
        dispatcher.replay_job(job_id)
