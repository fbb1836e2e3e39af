"""Routing a stable study into jobs, and re-enqueueing from the database."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Job, JobState, Study, StudyState, utcnow
from core.routing import RoutingRule
from pipelines.phantom import PhantomStudy
from worker.celery_app import RUN_JOB
from worker.dispatch import Dispatcher

from .conftest import RecordingApp, SpoolStudy


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


def test_recover_requeues_queued_jobs(
    settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    outcome = dispatcher.route_study(spool_study(small_phantom), now=_later(settings))
    assert outcome is not None
    recording_app.sent.clear()
    assert dispatcher.recover(jobs=True) == (1, 0)
    assert recording_app.sent == [(RUN_JOB, outcome.new_job_ids, "cpu")]
    with session_factory() as session:
        jobs = session.scalars(select(Job)).all()
        assert [job.state for job in jobs] == [JobState.QUEUED]
