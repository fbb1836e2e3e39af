"""Running a routed job the way a worker does, for tests that deliver its results."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Delivery, Result, utcnow
from scheduler.dispatch import Dispatcher
from worker.runtime import WorkerRuntime
from worker.tasks.inference import execute_job


def run_job(
    settings: Settings, factory: sessionmaker[Session], app: Any, study_id: int
) -> dict[str, int]:
    """Route the study as stable and run its job; its delivery ids by result kind."""
    now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(app, factory, settings).route_study(study_id, now=now)
    assert outcome is not None
    execute_job(WorkerRuntime.from_settings(settings), outcome.new_job_ids[0])
    with factory() as session:
        rows = session.execute(select(Result.kind, Delivery.id).join(Delivery.result)).all()
        return {kind: delivery_id for kind, delivery_id in rows}
