"""Process heartbeats: a row per process, refreshed; rows of long-dead processes removed."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import ProcessHeartbeat, utcnow
from core.db.session import session_scope
from worker.liveness import FORGET_AFTER, ProcessBeat, process_name, stamp_heartbeat


def test_a_beat_refreshes_its_row_and_forgets_dead_processes(
    session_factory: sessionmaker[Session],
) -> None:
    with session_scope(session_factory) as session:
        session.add(
            ProcessHeartbeat(
                name="worker@old:1", role="worker", beat_at=utcnow() - FORGET_AFTER * 2
            )
        )
        session.add(
            ProcessHeartbeat(
                name="worker@other:2", role="worker", beat_at=utcnow() - timedelta(hours=1)
            )
        )
    stamp_heartbeat(session_factory, "worker@here:3", "worker")
    first = _beats(session_factory)["worker@here:3"]
    stamp_heartbeat(session_factory, "worker@here:3", "worker")
    beats = _beats(session_factory)
    assert set(beats) == {"worker@other:2", "worker@here:3"}
    assert beats["worker@here:3"] >= first

    beat = ProcessBeat(session_factory, "scheduler", interval=30)
    beat.start()
    beat.stop()
    assert process_name("scheduler") in _beats(session_factory)


def _beats(session_factory: sessionmaker[Session]) -> dict[str, object]:
    with session_scope(session_factory) as session:
        return {row.name: row.beat_at for row in session.scalars(select(ProcessHeartbeat))}
