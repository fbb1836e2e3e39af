"""Operator actions through the console's own forms: each one acts, is queued and is audited."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.control import ROUTING, destination_flag, is_paused
from core.db.models import AuditEvent, Delivery, DeliveryState, Job, JobState, utcnow
from core.db.session import session_scope
from tests.support.dcmtk import StoreSCP
from tests.web.conftest import DESTINATION, LoggedIn, RecordingApp, seed_job
from web.overview import queue_depths
from worker.queues import RUN_JOB, SEND_DELIVERY


def _form_token(html: str, action: str) -> str:
    """The CSRF token inside the form that posts to ``action`` (as the browser sends it)."""
    form = re.search(rf'<form[^>]*action="{re.escape(action)}".*?</form>', html, re.S)
    assert form, f"no form posting to {action}"
    token = re.search(r'name="csrf_token" value="([^"]*)"', form.group(0))
    assert token and token.group(1), f"the form posting to {action} carries no CSRF token"
    return token.group(1)


def _audited(db: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with session_scope(db) as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_retry_rerun_resend_and_acknowledge_from_the_job_page(
    logged_in: LoggedIn, db: sessionmaker[Session], queue: RecordingApp, web_settings
) -> None:
    seeded = seed_job(db, state=JobState.FAILED, delivery_state=DeliveryState.FAILED)
    client, _ = logged_in("operator")
    page = client.get(f"/jobs/{seeded.job}").text
    retry = f"/deliveries/{seeded.deliveries[0]}/retry"
    ack = f"/acknowledge/job/{seeded.job}"
    assert 'data-confirm="Send SEG to' in page

    response = client.post(
        retry,
        data={"csrf_token": _form_token(page, retry), "back": f"/jobs/{seeded.job}"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{seeded.job}"
    assert queue.sent == [(SEND_DELIVERY, [seeded.deliveries[0]], "send")]
    with session_scope(db) as session:
        delivery = session.get_one(Delivery, seeded.deliveries[0])
        assert delivery.state == DeliveryState.PENDING and delivery.attempts == 0
    assert "queued again" in client.get(f"/jobs/{seeded.job}").text
    again = client.post(retry, data={"csrf_token": _form_token(page, retry)})
    assert again.status_code == 409 and "is pending" in again.text

    with session_scope(db) as session:
        before = queue_depths(session, web_settings, utcnow())["failed"]
    client.post(ack, data={"csrf_token": _form_token(page, ack), "back": "/"})
    with session_scope(db) as session:
        assert queue_depths(session, web_settings, utcnow())["failed"] == before - 1
    job_page = client.get(f"/jobs/{seeded.job}").text
    assert "acknowledged by operator" in job_page
    assert 'id="job-audit"' in job_page and "retry-delivery" in job_page

    rerun = f"/jobs/{seeded.job}/rerun"
    client.post(rerun, data={"csrf_token": _form_token(page, rerun)})
    assert queue.sent[-1] == (RUN_JOB, [seeded.job], "cpu")
    with session_scope(db) as session:
        assert session.get_one(Job, seeded.job).state == JobState.QUEUED

    done = seed_job(db, uid_suffix="9")
    resend_page = client.get(f"/jobs/{done.job}").text
    resend = f"/jobs/{done.job}/resend"
    client.post(resend, data={"csrf_token": _form_token(resend_page, resend)})
    assert {args[0] for name, args, _ in queue.sent[-2:] if name == SEND_DELIVERY} == set(
        done.deliveries
    )
    outcomes = {
        action: [event.outcome for event in _audited(db, action)]
        for action in ("retry-delivery", "acknowledge", "rerun-job", "resend-results")
    }
    assert outcomes == {
        "retry-delivery": ["ok", "refused"],
        "acknowledge": ["ok"],
        "rerun-job": ["ok"],
        "resend-results": ["ok"],
    }


def test_bulk_retry_and_pauses_from_the_destinations_page(
    logged_in: LoggedIn, db: sessionmaker[Session], queue: RecordingApp
) -> None:
    failed = [seed_job(db, uid_suffix=str(n), delivery_state=DeliveryState.FAILED) for n in (1, 2)]
    client, _ = logged_in("operator")
    page = client.get("/destinations").text
    token = _form_token(page, "/destinations/retry")
    response = client.post(
        "/destinations/retry", data={"csrf_token": token, "destination": DESTINATION}
    )
    assert response.status_code == 200 and "4 failed deliveries" in response.text
    assert sorted(args[0] for _, args, _ in queue.sent) == sorted(
        d for seeded in failed for d in seeded.deliveries
    )

    for path in ("/routing/pause", "/destinations/pause"):
        client.post(path, data={"csrf_token": token, "destination": DESTINATION})
    with session_scope(db) as session:
        assert is_paused(session, ROUTING) and is_paused(session, destination_flag(DESTINATION))
    paused_page = client.get("/destinations").text
    assert "Resume routing" in paused_page and "Routing is paused" in client.get("/").text

    queue.sent.clear()
    for path in ("/routing/resume", "/destinations/resume"):
        client.post(path, data={"csrf_token": token, "destination": DESTINATION})
    with session_scope(db) as session:
        assert not is_paused(session, ROUTING)
        assert not is_paused(session, destination_flag(DESTINATION))
    assert len(queue.sent) == 4  # the held deliveries go at once
    assert [e.username for e in _audited(db, "pause-routing")] == ["operator"]


def test_echo_reaches_a_real_peer(logged_in: LoggedIn, make_settings, db, app) -> None:
    client, token = logged_in("operator")
    unknown = client.post("/tools/echo", data={"csrf_token": token, "destination": "X@h:1"})
    assert unknown.status_code == 404
    response = client.post("/tools/echo", data={"csrf_token": token, "destination": DESTINATION})
    assert response.status_code == 200
    assert "association refused or peer unreachable" in response.text
    assert [e.outcome for e in _audited(db, "echo")] == ["failed"]


def test_echo_success(make_settings, tmp_path) -> None:
    from starlette.testclient import TestClient

    from core.db.migrate import upgrade
    from core.db.models import Role
    from core.db.session import make_engine, make_session_factory
    from scheduler.dispatch import Dispatcher
    from tests.web.conftest import PASSWORD, csrf_of
    from web.actions import Actions
    from web.app import create_app
    from web.users import add_user

    with StoreSCP(aet="PEER") as peer:
        settings = make_settings(destinations=f"PEER@127.0.0.1:{peer.port}")
        settings.spool_path.mkdir(parents=True, exist_ok=True)
        upgrade(settings.effective_database_url)
        factory = make_session_factory(make_engine(settings.effective_database_url))
        with session_scope(factory) as session:
            add_user(session, "op", PASSWORD, Role.OPERATOR)
        app = create_app(settings, Actions(Dispatcher(RecordingApp(), factory, settings)))
        with TestClient(app) as client:
            token = csrf_of(client.get("/login").text)
            client.post(
                "/login", data={"username": "op", "password": PASSWORD, "csrf_token": token}
            )
            token = csrf_of(client.get("/tools").text)
            response = client.post(
                "/tools/echo",
                data={"csrf_token": token, "destination": f"PEER@127.0.0.1:{peer.port}"},
            )
        assert 'id="echo-result" class="flash"' in response.text
        assert "C-ECHO success" in response.text


def test_audit_export_and_user_management(logged_in: LoggedIn, db) -> None:
    client, token = logged_in("admin")
    added = client.post(
        "/users",
        data={
            "csrf_token": token,
            "username": "night",
            "password": "night-shift-1",
            "role": "operator",
        },
    )
    assert added.status_code == 200 and "user night added" in added.text
    weak = client.post(
        "/users", data={"csrf_token": token, "username": "w", "password": "short", "role": "viewer"}
    )
    assert weak.status_code == 400 and "at least 10 characters" in weak.text
    client.post("/users/night/remove", data={"csrf_token": token})
    exported = client.get("/audit.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    lines = exported.text.splitlines()
    assert lines[0] == "id,at,username,action,object,outcome,address,detail"
    assert any(",admin,user-add,night,ok," in line for line in lines)
    assert any(",admin,user-remove,night,ok," in line for line in lines)
    assert any(",admin,login,admin,ok," in line for line in lines)
