"""Paused routing and paused destinations: nothing is lost, nothing is spent, resume goes on."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.control import ROUTING, destination_flag, set_paused
from core.db.models import Delivery, DeliveryState, Study, StudyState, utcnow
from core.db.session import session_scope
from scheduler.dispatch import Dispatcher
from tests.support.ports import free_port
from web.actions import Actions
from worker.queues import SEND_DELIVERY
from worker.runtime import WorkerRuntime
from worker.tasks.inference import execute_job
from worker.tasks.send import DeliveryOutcome, execute_delivery

from .conftest import RecordingApp, SpoolStudy


def test_paused_routing_leaves_stable_studies_waiting(
    settings,
    session_factory: sessionmaker[Session],
    spool_study: SpoolStudy,
    small_phantom,
    recording_app: RecordingApp,
) -> None:
    study_id = spool_study(small_phantom)
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    dispatcher = Dispatcher(recording_app, session_factory, settings)
    with session_scope(session_factory) as session:
        set_paused(session, ROUTING, True, "op")

    assert dispatcher.route_study(study_id, now=later) is None
    with session_scope(session_factory) as session:
        assert session.get_one(Study, study_id).state == StudyState.RECEIVING
    assert recording_app.sent == []

    with session_scope(session_factory) as session:
        set_paused(session, ROUTING, False, "op")
    outcome = dispatcher.route_study(study_id, now=later)
    assert outcome is not None and len(outcome.new_job_ids) == 1


def test_paused_destination_holds_deliveries_without_spending_attempts(
    make_settings,
    session_factory: sessionmaker[Session],
    spool_study: SpoolStudy,
    small_phantom,
    recording_app: RecordingApp,
) -> None:
    settings = make_settings(destinations=f"PAUSED@127.0.0.1:{free_port()}")
    name = str(settings.destinations[0])
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(recording_app, session_factory, settings).route_study(
        spool_study(small_phantom), now=later
    )
    assert outcome is not None
    runtime = WorkerRuntime.from_settings(settings)
    execute_job(runtime, outcome.new_job_ids[0])
    with session_scope(session_factory) as session:
        set_paused(session, destination_flag(name), True, "op")
        ids = list(session.scalars(select(Delivery.id)))

    assert [execute_delivery(runtime, i) for i in ids] == [DeliveryOutcome.PAUSED] * 2
    with session_scope(session_factory) as session:
        for delivery in session.scalars(select(Delivery)):
            assert delivery.state == DeliveryState.PENDING and delivery.attempts == 0
            assert delivery.next_attempt_at is not None

    recording_app.sent.clear()
    actions = Actions(Dispatcher(recording_app, session_factory, settings))
    assert actions.pause_destination(name, False, "op")
    assert recording_app.sent == [(SEND_DELIVERY, [i], "send") for i in ids]
