"""Refused instances counted per minute, status, cause and AE; kept while the database is down."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db.migrate import upgrade
from core.db.models import InstanceRefusal
from core.db.session import make_engine, make_session_factory
from dicom_node.recording import refusals
from dicom_node.recording.received import Refusal
from dicom_node.recording.recorder import InstanceRecorder
from dicom_node.recording.refusals import RefusalTally
from tests.support.waiting import wait_until

T0 = datetime(2026, 12, 7, 5, 40, 12, tzinfo=UTC)
T1 = datetime(2026, 12, 7, 5, 41, 59, tzinfo=UTC)


def counted(sessions: sessionmaker[Session]) -> dict[tuple[str, int, str, str], int]:
    """The rows of ``instance_refusals`` by (minute, status, cause, calling AE)."""
    with sessions() as session:
        rows = session.scalars(select(InstanceRefusal)).all()
        return {
            (row.minute.strftime("%H:%M:%S"), row.status, row.cause, row.calling_ae): row.count
            for row in rows
        }


def test_refusals_are_counted_per_minute_status_cause_and_ae(
    sessions: sessionmaker[Session],
) -> None:
    tally = RefusalTally(sessions.kw["bind"], background=False)
    for refusal in (
        Refusal(0xC001, "invalid-instance", "MODALITY", T0),
        Refusal(0xC001, "invalid-instance", "MODALITY", T0.replace(second=40)),
        Refusal(0xC001, "invalid-instance", "OTHER", T0),
        Refusal(0xA700, "disk-full", None, T0),
        Refusal(0xC001, "invalid-instance", "MODALITY", T1),
    ):
        tally.add(refusal)
    assert tally.write()
    tally.add(Refusal(0xC001, "invalid-instance", "MODALITY", T0))
    assert tally.write()

    assert counted(sessions) == {
        ("05:40:00", 0xC001, "invalid-instance", "MODALITY"): 3,
        ("05:40:00", 0xC001, "invalid-instance", "OTHER"): 1,
        ("05:40:00", 0xA700, "disk-full", ""): 1,
        ("05:41:00", 0xC001, "invalid-instance", "MODALITY"): 1,
    }


def test_the_recorder_writes_its_refusals_in_a_thread_of_their_own(
    sessions: sessionmaker[Session],
) -> None:
    recorder = InstanceRecorder(sessions)
    for _ in range(3):
        recorder.refused(Refusal(0xA900, "uid-mismatch", "SCU", T0))

    wait_until(lambda: counted(sessions) == {("05:40:00", 0xA900, "uid-mismatch", "SCU"): 3}, 10)


def test_counts_wait_in_memory_while_the_database_fails_and_are_written_once_it_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    engine = make_engine(url)  # no tables yet: every write fails
    tally = RefusalTally(engine, background=False)
    tally.add(Refusal(0xA700, "not-recorded", "SCU", T0))
    with caplog.at_level(logging.WARNING):
        assert not tally.write()
        tally.add(Refusal(0xA700, "not-recorded", "SCU", T0))
        assert not tally.write()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "cannot record 1 refused instances now (OperationalError): kept, tried again"
    ]

    upgrade(url)
    assert tally.write()
    assert counted(make_session_factory(engine)) == {("05:40:00", 0xA700, "not-recorded", "SCU"): 2}
    engine.dispose()


def test_at_most_max_held_kinds_of_refusal_wait_for_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(refusals, "MAX_HELD", 2)
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    engine = make_engine(url)
    tally = RefusalTally(engine, background=False)
    with caplog.at_level(logging.ERROR):
        for ae in ("A", "B", "C", "D"):
            tally.add(Refusal(0xC000, "invalid-instance", ae, T0))
        tally.add(Refusal(0xC000, "invalid-instance", "A", T0))  # a kind already held
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "2 kinds of refusal wait for the database: not counting more"
    ]

    caplog.clear()
    upgrade(url)
    with caplog.at_level(logging.ERROR):
        assert tally.write()
    assert counted(make_session_factory(engine)) == {
        ("05:40:00", 0xC000, "invalid-instance", "A"): 2,
        ("05:40:00", 0xC000, "invalid-instance", "B"): 1,
    }
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "2 refused instances were not counted while the database was down"
    ]
    engine.dispose()


def test_the_counts_still_held_are_written_as_the_recorder_closes(
    sessions: sessionmaker[Session],
) -> None:
    tally = RefusalTally(sessions.kw["bind"], background=False)
    tally.add(Refusal(0xC001, "invalid-instance", "SCU", T0))
    tally.add(Refusal(0xC001, "invalid-instance", "SCU", T0))

    tally.close()

    assert counted(sessions) == {("05:40:00", 0xC001, "invalid-instance", "SCU"): 2}


def test_counts_the_database_refuses_as_the_node_stops_are_logged_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'node.sqlite'}")  # no tables: writes fail
    tally = RefusalTally(engine, background=False)
    for ae in ("A", "B", "A"):
        tally.add(Refusal(0xA700, "not-recorded", ae, T0))

    with caplog.at_level(logging.ERROR):
        tally.close()

    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "3 refused instances not recorded: the database failed as the node stopped"
    ]
    engine.dispose()
