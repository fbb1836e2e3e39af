"""Routing a stable study into jobs, and re-enqueueing from the database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Job, JobState, Study, StudyState, utcnow
from core.routing import RoutingRule
from pipelines.phantom import PhantomStudy
from scheduler.dispatch import Dispatcher
from tests.worker.conftest import RecordingApp, SpoolStudy
from worker.queues import RUN_JOB


def _later(settings: Settings):
    return utcnow() + timedelta(seconds=settings.stability_seconds + 1)


def test_not_routed_before_stable(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    study_id = spool_study(small_phantom)
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    assert dispatcher.route_study(study_id, now=utcnow()) is None
    assert recording_app.sent == []


def test_stable_ct_study_gets_one_ct_lungs_job(
    settings: Settings,
    session_factory: sessionmaker[Session],
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
) -> None:
    study_id = spool_study(small_phantom)
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    outcome = dispatcher.route_study(study_id, now=_later(settings))
    assert outcome is not None and len(outcome.new_job_ids) == 1
    with session_factory() as session:
        job = session.get_one(Job, outcome.new_job_ids[0])
        assert (job.pipeline, job.state, job.queue, job.rule_name) == (
            "ct-lungs",
            JobState.QUEUED,
            "cpu",
            "ct-default",
        )
        assert [event.state for event in job.events] == ["queued"]
        assert session.get_one(Study, study_id).state == StudyState.ROUTED
    assert recording_app.sent == [(RUN_JOB, [job.id], "cpu")]
    assert dispatcher.route_study(study_id, now=_later(settings)) is None


def test_resent_study_is_not_processed_twice(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    first = dispatcher.route_study(spool_study(small_phantom), now=_later(settings))
    again = dispatcher.route_study(spool_study(small_phantom), now=_later(settings))
    assert first is not None and again is not None
    assert again.new_job_ids == [] and again.existing_job_ids == first.new_job_ids
    assert len(recording_app.sent) == 1


def test_new_instances_make_a_new_job(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    first = dispatcher.route_study(spool_study(small_phantom, skip=(23,)), now=_later(settings))
    second = dispatcher.route_study(spool_study(small_phantom), now=_later(settings))
    assert first is not None and second is not None
    assert len(second.new_job_ids) == 1 and second.new_job_ids != first.new_job_ids


def test_unmatched_and_unknown_pipeline_notes(
    settings: Settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    rules = [
        RoutingRule(name="mr-only", pipeline="ct-lungs", modality={"MR"}),
        RoutingRule(name="typo", pipeline="ct-lugns", modality={"CT"}),
    ]
    routed = settings.model_copy(update={"routing_rules": rules})
    dispatcher = Dispatcher(recording_app, session_factory, routed)
    study_id = spool_study(small_phantom)
    outcome = dispatcher.route_study(study_id, now=_later(settings))
    assert outcome is not None and outcome.new_job_ids == []
    with session_factory() as session:
        study = session.get_one(Study, study_id)
        assert study.state == StudyState.UNROUTED
        assert "unknown pipeline 'ct-lugns'" in (study.routing_note or "")
    assert recording_app.sent == []


def test_recover_at_startup_resends_every_queued_job(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    outcome = dispatcher.route_study(spool_study(small_phantom), now=_later(settings))
    assert outcome is not None
    recording_app.sent.clear()
    assert dispatcher.recover().resent_jobs == []
    assert dispatcher.recover(startup=True).resent_jobs == outcome.new_job_ids
    assert recording_app.sent == [(RUN_JOB, outcome.new_job_ids, "cpu")]


def _running_job(dispatcher: Dispatcher, factory, study_id: int, settings, attempts: int) -> int:
    outcome = dispatcher.route_study(study_id, now=_later(settings))
    assert outcome is not None
    (job_id,) = outcome.new_job_ids
    long_ago = utcnow() - timedelta(seconds=settings.job_stale_seconds + 5)
    with factory() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                state=JobState.RUNNING,
                attempts=attempts,
                heartbeat_at=long_ago,
                started_at=long_ago,
                worker="w1",
            )
        )
        session.commit()
    return job_id


def test_running_job_without_heartbeat_is_requeued(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    job_id = _running_job(dispatcher, session_factory, spool_study(small_phantom), settings, 1)
    recording_app.sent.clear()

    report = dispatcher.recover()

    assert report.resent_jobs == [job_id] and report.failed_jobs == []
    assert recording_app.sent == [(RUN_JOB, [job_id], "cpu")]
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.QUEUED
        assert "worker w1 lost" in (job.events[-1].message or "")


def test_job_that_keeps_losing_its_worker_fails(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    attempts = settings.job_max_attempts
    job_id = _running_job(
        dispatcher, session_factory, spool_study(small_phantom), settings, attempts
    )
    report = dispatcher.recover()
    assert report.failed_jobs == [job_id]
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.FAILED
        assert f"gave up after {attempts} attempts" in (job.error or "")


def test_running_job_with_fresh_heartbeat_is_left_alone(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    job_id = _running_job(dispatcher, session_factory, spool_study(small_phantom), settings, 1)
    with session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow()))
        session.commit()
    assert not dispatcher.recover().any


def test_queued_job_waiting_too_long_is_sent_again(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    outcome = dispatcher.route_study(spool_study(small_phantom), now=_later(settings))
    assert outcome is not None
    later = utcnow() + timedelta(seconds=settings.job_requeue_seconds + 10)
    assert dispatcher.recover(now=later).resent_jobs == outcome.new_job_ids
    assert dispatcher.recover(now=later).resent_jobs == []
