"""The stability monitor: which studies are due, when the next one is, routing each once."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Study, StudyState, utcnow
from core.db.session import session_scope
from scheduler.stability import IDLE_WAKE_SECONDS, StabilityMonitor

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
STABILITY = 10.0


def add_study(
    factory: sessionmaker[Session],
    uid: str,
    last_received_at: datetime,
    state: StudyState = StudyState.RECEIVING,
) -> int:
    with session_scope(factory) as session:
        study = Study(
            study_instance_uid=uid,
            state=state,
            first_received_at=last_received_at,
            last_received_at=last_received_at,
        )
        session.add(study)
        session.flush()
        return study.id


def mark_routed(factory: sessionmaker[Session], study_id: int) -> None:
    with session_scope(factory) as session:
        session.get_one(Study, study_id).state = StudyState.ROUTED


def monitor(factory: sessionmaker[Session], on_stable: object) -> StabilityMonitor:
    return StabilityMonitor(factory, STABILITY, on_stable)  # type: ignore[arg-type]


def test_nothing_receiving(session_factory: sessionmaker[Session]) -> None:
    add_study(session_factory, "1.2.1", T0, state=StudyState.ROUTED)
    add_study(session_factory, "1.2.2", T0, state=StudyState.UNROUTED)
    calls: list[int] = []
    mon = monitor(session_factory, calls.append)

    assert mon.due(T0 + timedelta(hours=1)) == ([], None)
    assert mon.run_once(T0 + timedelta(hours=1)) == IDLE_WAKE_SECONDS
    assert calls == []


def test_not_due_before_the_timeout(session_factory: sessionmaker[Session]) -> None:
    study = add_study(session_factory, "1.2.1", T0)
    mon = monitor(session_factory, lambda _id: None)

    due, deadline = mon.due(T0 + timedelta(seconds=STABILITY - 0.5))

    assert due == []
    assert deadline == T0 + timedelta(seconds=STABILITY)
    assert deadline.tzinfo is not None

    due, deadline = mon.due(T0 + timedelta(seconds=STABILITY))  # exactly at the deadline
    assert due == [study]
    assert deadline is None


def test_due_after_the_timeout_and_next_deadline(session_factory: sessionmaker[Session]) -> None:
    old = add_study(session_factory, "1.2.1", T0)
    older = add_study(session_factory, "1.2.2", T0 - timedelta(minutes=5))
    add_study(session_factory, "1.2.3", T0 + timedelta(seconds=8))
    add_study(session_factory, "1.2.4", T0 + timedelta(seconds=4))
    add_study(session_factory, "1.2.5", T0 - timedelta(hours=1), state=StudyState.ROUTED)
    mon = monitor(session_factory, lambda _id: None)

    due, deadline = mon.due(T0 + timedelta(seconds=STABILITY + 1))

    assert sorted(due) == sorted([old, older])
    assert deadline == T0 + timedelta(seconds=4 + STABILITY)  # the earliest still receiving


def test_run_once_calls_on_stable_once_per_due_study(
    session_factory: sessionmaker[Session],
) -> None:
    first = add_study(session_factory, "1.2.1", T0)
    second = add_study(session_factory, "1.2.2", T0 + timedelta(seconds=1))
    add_study(session_factory, "1.2.3", T0 + timedelta(seconds=30))
    calls: list[int] = []

    def route(study_id: int) -> None:
        calls.append(study_id)
        mark_routed(session_factory, study_id)  # what the dispatcher does

    mon = monitor(session_factory, route)
    now = T0 + timedelta(seconds=STABILITY + 2)

    wait = mon.run_once(now)

    assert sorted(calls) == sorted([first, second])
    # The third study is due 30 + 10 s after T0, i.e. 28 s after ``now``.
    assert 0 < wait <= 28.0
    mon.run_once(now)  # routed studies are not handed over again
    assert sorted(calls) == sorted([first, second])


def test_run_once_sleeps_until_the_next_deadline(session_factory: sessionmaker[Session]) -> None:
    add_study(session_factory, "1.2.1", T0)
    mon = monitor(session_factory, lambda _id: None)

    wait = mon.run_once(T0 + timedelta(seconds=STABILITY - 3))

    assert 2.0 < wait <= 3.0


def test_exceptions_in_on_stable_are_logged_and_do_not_stop_the_others(
    session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    ids = [add_study(session_factory, f"1.2.{n}", T0) for n in range(3)]
    calls: list[int] = []

    def route(study_id: int) -> None:
        calls.append(study_id)
        if study_id == ids[1]:
            raise RuntimeError("database went away")

    mon = monitor(session_factory, route)

    with caplog.at_level(logging.ERROR, logger="scheduler.stability"):
        mon.run_once(T0 + timedelta(minutes=1))

    assert sorted(calls) == sorted(ids)
    failures = [r for r in caplog.records if r.name == "scheduler.stability"]
    assert len(failures) == 1
    assert f"routing study {ids[1]} failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None

    calls.clear()
    mon.run_once(T0 + timedelta(minutes=1))  # still receiving: retried on the next check
    assert sorted(calls) == sorted(ids)


def test_start_stop_routes_a_quiet_study(session_factory: sessionmaker[Session]) -> None:
    """The background thread routes a study whose quiet time has already passed."""
    from tests.support.waiting import wait_until

    study = add_study(session_factory, "1.2.1", utcnow() - timedelta(days=1))
    calls: list[int] = []

    def route(study_id: int) -> None:
        calls.append(study_id)
        mark_routed(session_factory, study_id)

    mon = StabilityMonitor(session_factory, 0.2, route)
    mon.start()
    try:
        mon.notify(study)
        wait_until(lambda: calls, timeout=5)
    finally:
        mon.stop()

    assert calls == [study]
