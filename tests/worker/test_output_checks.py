"""A result that fails an output check fails its job with the reason; nothing is sent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Delivery, Job, JobState, utcnow
from pipelines.ct_lungs.pipeline import CtLungsPipeline
from pipelines.phantom import PhantomStudy
from scheduler.dispatch import Dispatcher
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy


def test_an_implausible_volume_fails_the_job_before_anything_leaves(
    make_settings: Callable[..., Settings],
    session_factory: sessionmaker[Session],
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CtLungsPipeline, "plausible_volume_ml", {"left-lung": (5000.0, 6000.0)})
    settings = make_settings(destinations="PACS@127.0.0.1:104")
    now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    routed = Dispatcher(recording_app, session_factory, settings).route_study(
        spool_study(small_phantom), now=now
    )
    assert routed is not None

    outcome = execute_job(WorkerRuntime.from_settings(settings), routed.new_job_ids[0])

    assert outcome == JobOutcome.FAILED
    with session_factory() as session:
        job = session.scalars(select(Job)).one()
        assert job.state == JobState.FAILED and job.error is not None
        assert job.error.startswith("output check failed: segment 'left-lung': volume")
        assert "outside the plausible 5000-6000 mL" in job.error
        assert session.scalar(select(func.count()).select_from(Delivery)) == 0
