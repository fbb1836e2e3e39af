"""A node process's proof of life in the database, read by the console and /metrics.

Job heartbeats only exist while a job runs; each worker (and the scheduler of
``ainode serve``) stamps its own row in ``process_heartbeats`` every
``job_heartbeat_seconds``, so "workers alive" and "scheduler alive" can be
told from the database, whatever broker is in use.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import ProcessHeartbeat, utcnow
from core.db.session import session_scope

log = logging.getLogger(__name__)


def process_name(role: str) -> str:
    """The row name of this process: ``role@host:pid``."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


#: Rows of processes silent this long are removed (a restarted process has a new pid).
FORGET_AFTER = timedelta(days=1)


def stamp_heartbeat(session_factory: sessionmaker[Session], name: str, role: str) -> None:
    """Write (or refresh) the heartbeat row ``name`` with the current time; drop long-dead rows."""
    with session_scope(session_factory) as session:
        session.execute(
            delete(ProcessHeartbeat).where(ProcessHeartbeat.beat_at < utcnow() - FORGET_AFTER)
        )
        row = session.get(ProcessHeartbeat, name)
        if row is None:
            session.add(ProcessHeartbeat(name=name, role=role, beat_at=utcnow()))
        else:
            row.beat_at = utcnow()


class ProcessBeat:
    """A daemon thread that stamps this process's heartbeat every ``interval`` seconds."""

    def __init__(self, session_factory: sessionmaker[Session], role: str, interval: float) -> None:
        self._session_factory = session_factory
        self._role = role
        self._name = process_name(role)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{role}-beat", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                stamp_heartbeat(self._session_factory, self._name, self._role)
            except SQLAlchemyError as exc:
                log.warning("%s heartbeat not recorded: %s", self._role, type(exc).__name__)
            if self._stop.wait(self._interval):
                return

    def start(self) -> None:
        """Start beating (first stamp at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=5)
