"""Every console page on SQLite and PostgreSQL: login, lists, filters, job page, bad input."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.db.models import AuditEvent, DeliveryState, JobState
from core.db.session import session_scope
from tests.web.conftest import PASSWORD, LoggedIn, csrf_of, seed_job
from web.console import MAX_FORM_BYTES


def _audit(db: sessionmaker[Session]) -> list[tuple[str | None, str, str]]:
    with session_scope(db) as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        return [(row.username, row.action, row.outcome) for row in rows]


def test_login_goes_back_only_to_a_local_page(app: Any) -> None:
    with TestClient(app) as client:
        for target, landing in (("/jobs", "/jobs"), ("//evil.test/", "/"), ("/\\evil.test", "/")):
            token = csrf_of(client.get("/login").text)
            form = {"username": "viewer", "password": PASSWORD, "csrf_token": token}
            response = client.post("/login", data={**form, "next": target}, follow_redirects=False)
            assert response.headers["location"] == landing


def test_pages_need_a_login(app: Any) -> None:
    with TestClient(app) as client:
        response = client.get("/jobs", follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/jobs"
        assert client.get("/healthz").text == "ok"
        login = client.get("/login")
        assert login.headers["content-security-policy"].startswith("default-src 'self'")
        assert login.headers["referrer-policy"] == "no-referrer"
        assert login.headers["x-frame-options"] == "DENY"


def test_every_page_renders(logged_in: LoggedIn, db: sessionmaker[Session]) -> None:
    seeded = seed_job(db)
    client, _ = logged_in("admin")
    for path in (
        "/",
        "/jobs",
        f"/jobs/{seeded.job}",
        "/studies",
        "/studies?state=routed&q=A123",
        "/destinations",
        "/tools",
        f"/tools/rules?series={seeded.series}",
        "/audit",
        "/users",
    ):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
    overview = client.get("/").text
    assert 'data-check="database"' in overview and 'data-stage="queued"' in overview
    assert "ct-lungs" in overview  # its time to result over the last day
    assert "none refused in the last day" in overview
    fragment = client.get("/", headers={"HX-Request": "true"}).text
    assert "<html" not in fragment and 'data-stage="failed"' in fragment
    job = client.get(f"/jobs/{seeded.job}").text
    assert "ab" * 32 in job and "within the validated domain" in job
    assert "first instance received" in job and "SEG to PACS@127.0.0.1:11113" in job
    rules = client.get(f"/tools/rules?series={seeded.series}").text
    assert "ct-default" in rules and "matches" in rules


def test_search_and_filters(logged_in: LoggedIn, db: sessionmaker[Session]) -> None:
    found = seed_job(db, accession="A123", uid_suffix="1")
    other = seed_job(db, accession="B456", uid_suffix="2", state=JobState.FAILED)
    client, _ = logged_in("viewer")

    def jobs(query: str) -> set[int]:
        response = client.get(f"/jobs?{query}")
        assert response.status_code == 200, response.text
        return {job for job in (found.job, other.job) if f'data-job="{job}"' in response.text}

    assert jobs("q=A123") == {found.job}
    assert jobs("q=PID-77") == {found.job, other.job}
    assert jobs("q=1.2.826.0.1.3680043.10.1.2") == {other.job}
    assert jobs("state=failed") == {other.job}
    assert jobs("pipeline=ct-lungs&calling_ae=MODALITY") == {found.job, other.job}
    assert jobs("destination=PACS%40127.0.0.1%3A11113") == {found.job, other.job}
    assert jobs("date=2001-01-01") == set()
    assert jobs(f"before={other.job}") == {found.job}


def test_bad_input_gets_a_clear_4xx(logged_in: LoggedIn, db: sessionmaker[Session]) -> None:
    seed_job(db)
    client, token = logged_in("operator")
    for path, status, text in (
        ("/jobs?state=exploded", 400, "unknown state"),
        ("/jobs?date=yesterday", 400, "date must look like"),
        ("/jobs?before=abc", 400, "before must be a job id"),
        (f"/jobs?before={'9' * 5000}", 400, "before must be a job id"),
        ("/studies?before=99999999999", 400, "not a row id"),
        ("/audit?before=-1", 400, "not a row id"),
        ("/jobs?q=A%00B", 400, "NUL characters"),
        (f"/jobs/{'9' * 30}", 404, "unknown job"),
        ("/jobs?before=%C2%B2", 400, "before must be a job id"),  # '²' is a digit to isdigit
        ("/jobs/%C2%B2", 404, "unknown job"),
        (f"/jobs?q={'x' * 100}", 400, "longer than"),
        ("/jobs/999999", 404, "no job 999999"),
        ("/jobs/abc", 404, "unknown job"),
        ("/studies?state=lost", 400, "unknown study state"),
        ("/tools/rules?series=", 404, "unknown series"),
        ("/nowhere", 404, "Not Found"),
    ):
        response = client.get(path)
        assert response.status_code == status, (path, response.text[:300])
        assert text in response.text and "Traceback" not in response.text
    posts = (
        ("/jobs/999999/rerun", {"csrf_token": token}, 404),
        ("/deliveries/abc/retry", {"csrf_token": token}, 404),
        ("/destinations/pause", {"csrf_token": token, "destination": "nonsense"}, 400),
        ("/acknowledge/planet/1", {"csrf_token": token}, 404),
        ("/jobs/1/rerun", {}, 403),
    )
    for path, form, status in posts:
        response = client.post(path, data=form, follow_redirects=False)
        assert response.status_code == status, (path, response.text[:300])
        assert "Traceback" not in response.text
    big = client.post(
        "/routing/pause",
        content=b"csrf_token=" + b"x" * (MAX_FORM_BYTES + 1),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert big.status_code == 413
    json_body = client.post("/routing/pause", json={"csrf_token": token})
    assert json_body.status_code == 415
    nul = client.post("/login", data={"username": "a\x00b", "password": "x", "csrf_token": token})
    assert nul.status_code == 400
    absurd = client.post("/routing/pause", content=b"x", headers={"content-length": "9" * 5000})
    assert absurd.status_code in (400, 413)


def test_failed_logins_are_audited_and_throttled(
    app: Any, db: sessionmaker[Session], web_settings: Any
) -> None:
    with TestClient(app) as client:
        token = csrf_of(client.get("/login").text)
        for _ in range(web_settings.web_login_attempts):
            wrong = client.post(
                "/login", data={"username": "admin", "password": "nope", "csrf_token": token}
            )
            assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
        blocked = client.post(
            "/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token}
        )
        assert blocked.status_code == 429
        forged = client.post("/login", data={"username": "admin", "password": PASSWORD})
        assert forged.status_code == 403
    events = _audit(db)
    assert events.count(("admin", "login", "failed")) == web_settings.web_login_attempts
    assert ("admin", "login", "throttled") in events
    assert ("admin", "csrf", "refused") in events


def test_viewer_sees_no_actions_and_cannot_post(
    logged_in: LoggedIn, db: sessionmaker[Session]
) -> None:
    seeded = seed_job(db, state=JobState.FAILED, delivery_state=DeliveryState.FAILED)
    client, token = logged_in("viewer")
    page = client.get(f"/jobs/{seeded.job}").text
    assert "<button" in page  # the log-out button only
    assert "Re-run" not in page and "Retry" not in page and "Acknowledge" not in page
    assert "Pause" not in client.get("/destinations").text
    forged = client.post(f"/jobs/{seeded.job}/rerun", data={"csrf_token": token})
    assert forged.status_code == 403 and "operator role" in forged.text
    assert client.get("/users").status_code == 403
    assert ("viewer", f"/jobs/{seeded.job}/rerun", "forbidden") in _audit(db)
