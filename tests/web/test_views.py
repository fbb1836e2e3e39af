"""The dashboard views (daily_volume, job_times) on SQLite and PostgreSQL, made twice."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import DeliveryState, JobState
from core.db.session import session_scope
from tests.support.node import NodeProcesses
from tests.web.conftest import seed_job
from web.dashboards import create_views


def test_daily_volume_and_job_times(db: sessionmaker[Session]) -> None:
    engine = db.kw["bind"]
    assert create_views(engine) == ["daily_volume", "job_times"]
    create_views(engine)  # again after an upgrade: replaced, not duplicated
    done = seed_job(db)
    seed_job(db, uid_suffix="2", state=JobState.FAILED, delivery_state=DeliveryState.FAILED)
    with session_scope(db) as session:
        volume = session.execute(
            text("SELECT pipeline, state, jobs FROM daily_volume ORDER BY state")
        ).all()
        times = session.execute(
            text(
                "SELECT job_id, inference_seconds, time_to_result_seconds FROM job_times "
                "ORDER BY job_id"
            )
        ).all()
    assert [tuple(row) for row in volume] == [
        ("ct-lungs", "failed", 1),
        ("ct-lungs", "succeeded", 1),
    ]
    (succeeded_id, inference, ttr), (_, _, undelivered) = times
    assert succeeded_id == done.job and inference == 2.0
    assert 19 < ttr < 21 and undelivered is None


def test_ainode_db_views_makes_them(tmp_path: Path) -> None:
    node = NodeProcesses(tmp_path)
    node.cli("db", "upgrade")
    assert "views created: daily_volume, job_times" in node.cli("db", "views").stdout
