"""Fixtures for the console's tests: a migrated database (SQLite or PostgreSQL), users, rows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.config import Settings
from core.db.migrate import upgrade
from core.db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobEvent,
    JobState,
    Result,
    Role,
    Series,
    Study,
    StudyState,
    utcnow,
)
from core.db.session import make_engine, make_session_factory, session_scope
from scheduler.dispatch import Dispatcher
from tests.support.services import fresh_postgres_database
from web.actions import Actions
from web.app import create_app
from web.users import add_user

PASSWORD = "correct horse battery"
DESTINATION = "PACS@127.0.0.1:11113"


@dataclass
class RecordingApp:
    """Stands in for the Celery app: records what the console would put on the queue."""

    sent: list[tuple[str, list[Any], str | None]] = field(default_factory=list)

    def send_task(self, name: str, args: list[Any], queue: str | None = None, **_: Any) -> None:
        self.sent.append((name, args, queue))


@pytest.fixture(params=["sqlite", "postgresql"])
def web_settings(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> Iterator[Settings]:
    """Settings on a migrated SQLite file or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        settings = make_settings(destinations=DESTINATION)
        settings.spool_path.mkdir(parents=True, exist_ok=True)
        upgrade(settings.effective_database_url)
        yield settings
        return
    url, drop = fresh_postgres_database("ainode_web")
    settings = make_settings(destinations=DESTINATION, database_url=url)
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(url)
    yield settings
    drop()


@pytest.fixture
def db(web_settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the console's database."""
    engine = make_engine(web_settings.effective_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def queue() -> RecordingApp:
    """What the console enqueued."""
    return RecordingApp()


@pytest.fixture
def app(web_settings: Settings, db: sessionmaker[Session], queue: RecordingApp) -> Any:
    """The console with one user of each role."""
    with session_scope(db) as session:
        for role in Role:
            add_user(session, role.value, PASSWORD, role)
    return create_app(web_settings, Actions(Dispatcher(queue, db, web_settings)))  # type: ignore[arg-type]


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


LoggedIn = Callable[[str], tuple[TestClient, str]]


@pytest.fixture
def logged_in(app: Any) -> Iterator[LoggedIn]:
    """``logged_in(username)``: a client with a session, and its CSRF token."""
    clients: list[TestClient] = []

    def login(username: str) -> tuple[TestClient, str]:
        client = TestClient(app, raise_server_exceptions=False)
        clients.append(client)
        token = csrf_of(client.get("/login").text)
        response = client.post(
            "/login",
            data={"username": username, "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert response.status_code == 303, response.text
        return client, csrf_of(client.get("/").text)

    yield login
    for client in clients:
        client.close()


@dataclass
class Seeded:
    """Ids of the rows :func:`seed_job` made."""

    study: int
    series: int
    job: int
    deliveries: list[int]


def seed_job(
    db: sessionmaker[Session],
    *,
    state: JobState = JobState.SUCCEEDED,
    delivery_state: DeliveryState = DeliveryState.SUCCEEDED,
    accession: str | None = "A123",
    uid_suffix: str = "1",
) -> Seeded:
    """A routed study with one job, a SEG and an SR each delivered to :data:`DESTINATION`."""
    now = utcnow()
    with session_scope(db) as session:
        study = Study(
            study_instance_uid=f"1.2.826.0.1.3680043.10.1.{uid_suffix}",
            state=StudyState.ROUTED,
            first_received_at=now - timedelta(seconds=30),
            last_received_at=now - timedelta(seconds=20),
            routed_at=now - timedelta(seconds=18),
            accession_number=accession,
            patient_id="PID-77",
        )
        session.add(study)
        session.flush()
        series = Series(
            study_id=study.id,
            series_instance_uid=f"1.2.826.0.1.3680043.10.2.{uid_suffix}",
            modality="CT",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            calling_ae="MODALITY",
            instance_count=40,
            last_received_at=now - timedelta(seconds=20),
        )
        session.add(series)
        session.flush()
        job = Job(
            study_id=study.id,
            series_id=series.id,
            rule_name="ct-default",
            pipeline="ct-lungs",
            pipeline_version="1.0.0",
            queue="cpu",
            input_key=f"key{uid_suffix}",
            state=state,
            attempts=1,
            error="boom" if state == JobState.FAILED else None,
            device="cpu",
            weights_sha256="ab" * 32,
            created_at=now - timedelta(seconds=18),
            enqueued_at=now - timedelta(seconds=18),
            started_at=now - timedelta(seconds=17),
            finished_at=now - timedelta(seconds=10),
            queue_wait_seconds=1.0,
            load_seconds=0.5,
            inference_seconds=2.0,
            write_seconds=0.3,
        )
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, at=job.created_at, state="queued", message="rule"))
        session.add(JobEvent(job_id=job.id, at=job.finished_at, state=state.value))
        deliveries = []
        for kind, sop in (("seg", "3"), ("sr", "4")):
            result = Result(
                job_id=job.id,
                kind=kind,
                seg_type="BINARY",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                sop_instance_uid=f"1.2.826.0.1.3680043.10.{sop}.{uid_suffix}",
                series_instance_uid=f"1.2.826.0.1.3680043.10.5.{uid_suffix}",
                path=f"/nonexistent/{kind}.dcm",
                size_bytes=100,
            )
            session.add(result)
            session.flush()
            delivery = Delivery(
                result_id=result.id,
                destination=DESTINATION,
                state=delivery_state,
                attempts=1,
                last_error="connection refused" if delivery_state == DeliveryState.FAILED else None,
                delivered_at=now if delivery_state == DeliveryState.SUCCEEDED else None,
                send_seconds=0.2,
            )
            session.add(delivery)
            session.flush()
            deliveries.append(delivery.id)
        return Seeded(study.id, series.id, job.id, deliveries)
