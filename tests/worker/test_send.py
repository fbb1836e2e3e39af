"""Delivering results to a real DICOM peer (dcmtk storescp), with retries and give-up."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Delivery, DeliveryState, Job, utcnow
from scheduler.dispatch import Dispatcher
from tests.support.dcmtk import StoreSCP
from tests.support.ports import free_port
from worker.history import backoff_seconds
from worker.queues import SEND_DELIVERY
from worker.runtime import WorkerRuntime
from worker.tasks.inference import execute_job
from worker.tasks.send import DeliveryOutcome, execute_delivery

from .conftest import RecordingApp, SpoolStudy


def _deliveries(
    settings, factory: sessionmaker[Session], app: RecordingApp, study_id: int
) -> list[int]:
    now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(app, factory, settings).route_study(study_id, now=now)
    assert outcome is not None
    execute_job(WorkerRuntime.from_settings(settings), outcome.new_job_ids[0])
    with factory() as session:
        return list(session.scalars(select(Delivery.id).order_by(Delivery.id)).all())


def test_results_reach_the_peer(
    make_settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    with StoreSCP(aet="PEER") as peer:
        settings = make_settings(destinations=f"PEER@127.0.0.1:{peer.port}")
        ids = _deliveries(settings, session_factory, recording_app, spool_study(small_phantom))
        runtime = WorkerRuntime.from_settings(settings)
        assert [execute_delivery(runtime, i) for i in ids] == [DeliveryOutcome.SUCCEEDED] * 2
        peer.wait_for_files(2, timeout=10)
        assert execute_delivery(runtime, ids[0]) == DeliveryOutcome.SKIPPED
    with session_factory() as session:
        for delivery in session.scalars(select(Delivery)):
            assert delivery.state == DeliveryState.SUCCEEDED
            assert delivery.attempts == 1 and delivery.last_status == 0
        job = session.scalars(select(Job)).one()
        assert job.send_seconds is not None and job.send_seconds > 0


def test_peer_down_schedules_a_retry_then_gives_up(
    make_settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    settings = make_settings(
        destinations=f"DOWN@127.0.0.1:{free_port()}",
        delivery_max_attempts=2,
        delivery_backoff_seconds=0.1,
    )
    ids = _deliveries(settings, session_factory, recording_app, spool_study(small_phantom))
    runtime = WorkerRuntime.from_settings(settings)

    assert execute_delivery(runtime, ids[0], recording_app) == DeliveryOutcome.RETRYING
    assert recording_app.sent[-1] == (SEND_DELIVERY, [ids[0]], "send")
    with session_factory() as session:
        delivery = session.get_one(Delivery, ids[0])
        assert delivery.state == DeliveryState.RETRYING and delivery.attempts == 1
        assert delivery.next_attempt_at is not None and "no association" in delivery.last_error

    assert execute_delivery(runtime, ids[0], recording_app) == DeliveryOutcome.FAILED
    with session_factory() as session:
        delivery = session.get_one(Delivery, ids[0])
        assert delivery.state == DeliveryState.FAILED and delivery.attempts == 2


def test_unconfigured_destination_is_never_sent(
    make_settings, session_factory, spool_study: SpoolStudy, small_phantom, recording_app
) -> None:
    settings = make_settings(destinations="OLD@127.0.0.1:104")
    ids = _deliveries(settings, session_factory, recording_app, spool_study(small_phantom))
    runtime = WorkerRuntime.from_settings(make_settings(destinations="NEW@127.0.0.1:104"))
    assert execute_delivery(runtime, ids[0]) == DeliveryOutcome.FAILED
    with session_factory() as session:
        delivery = session.get_one(Delivery, ids[0])
        assert delivery.attempts == 0 and "no longer configured" in delivery.last_error


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_seconds(attempt, 2.0, 60.0) for attempt in range(1, 10)]
    assert 1.0 <= delays[0] <= 2.0
    assert 4.0 <= delays[2] <= 8.0
    assert all(delay <= 60.0 for delay in delays)
