"""Operator actions: retry, re-run, re-send, acknowledge, bulk retry, pause and resume.

Each one goes through the scheduler's own :class:`scheduler.dispatch.Dispatcher`
(rows first, then the queue), so the console does exactly what ``ainode
retry-deliveries`` and ``ainode replay`` do.  The caller writes the audit event.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from core.control import ROUTING, destination_flag, set_paused
from core.db.models import Acknowledgement, Delivery, DeliveryState, Job, JobState, utcnow
from core.db.session import session_scope
from core.errors import ConfigurationError
from scheduler.dispatch import Dispatcher

ACK_KINDS = ("job", "delivery")
#: Deliveries an operator may send again: given up, waiting to retry, or not committed.
RETRYABLE = (DeliveryState.FAILED, DeliveryState.RETRYING, DeliveryState.COMMIT_FAILED)
#: Deliveries that count as failures (what acknowledging and a bulk retry act on).
FAILED = (DeliveryState.FAILED, DeliveryState.COMMIT_FAILED)


class ActionError(Exception):
    """An action refused: ``status`` is the HTTP status to answer (404 unknown, 409 wrong state)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _forget_ack(session: Session, kind: str, object_id: int) -> None:
    session.execute(
        delete(Acknowledgement).where(
            Acknowledgement.kind == kind, Acknowledgement.object_id == object_id
        )
    )


def _row_in(
    session: Session, model: type[Job] | type[Delivery], kind: str, object_id: int, states: Any
) -> None:
    """Refuse unless row ``object_id`` of ``model`` exists (404) and is in ``states`` (409)."""
    row = session.get(model, object_id)
    if row is None:
        raise ActionError(404, f"no {kind} {object_id}")
    if row.state not in states:
        raise ActionError(409, f"{kind} {object_id} is {row.state.value}")


class Actions:
    """The console's actions over one database and queue."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.session_factory: sessionmaker[Session] = dispatcher.session_factory

    def known_destinations(self) -> list[str]:
        """Configured destinations (canonical form) and any that deliveries name."""
        configured = [str(d) for d in self.dispatcher.settings.destinations]
        with session_scope(self.session_factory) as session:
            seen = session.scalars(select(Delivery.destination).distinct()).all()
        return sorted(set(configured) | set(seen))

    def _destination(self, name: str) -> str:
        if name not in self.known_destinations():
            raise ActionError(404, f"unknown destination {name!r}")
        return name

    def retry_delivery(self, delivery_id: int) -> None:
        """Send a failed (or still retrying) delivery again with a fresh attempt budget."""
        with session_scope(self.session_factory) as session:
            _row_in(session, Delivery, "delivery", delivery_id, RETRYABLE)
            _forget_ack(session, "delivery", delivery_id)
        self.dispatcher.retry_deliveries(RETRYABLE, ids=[delivery_id])

    def replay(self, job_id: int, *, rerun: bool) -> int:
        """Re-run a job from its input or re-send its results; returns how many were queued."""
        with session_scope(self.session_factory) as session:
            if session.get(Job, job_id) is None:
                raise ActionError(404, f"no job {job_id}")
            if rerun:
                _forget_ack(session, "job", job_id)
        try:
            return len(self.dispatcher.replay_job(job_id, rerun=rerun))
        except ConfigurationError as exc:
            raise ActionError(409, str(exc)) from exc

    def acknowledge(self, kind: str, object_id: int, username: str) -> None:
        """Take a failed job or delivery off the failure list (it stays in the history)."""
        if kind not in ACK_KINDS:
            raise ActionError(404, f"nothing of kind {kind!r} can be acknowledged")
        model, failed = (Job, (JobState.FAILED,)) if kind == "job" else (Delivery, FAILED)
        with session_scope(self.session_factory) as session:
            _row_in(session, model, kind, object_id, failed)
            exists = session.scalar(
                select(Acknowledgement).where(
                    Acknowledgement.kind == kind, Acknowledgement.object_id == object_id
                )
            )
            if exists is None:
                session.add(
                    Acknowledgement(kind=kind, object_id=object_id, username=username, at=utcnow())
                )

    def bulk_retry(self, destination: str) -> int:
        """Retry every failed delivery to one destination; returns how many."""
        name = self._destination(destination)
        with session_scope(self.session_factory) as session:
            ids = session.scalars(
                select(Delivery.id).where(Delivery.destination == name, Delivery.state.in_(FAILED))
            ).all()
            for delivery_id in ids:
                _forget_ack(session, "delivery", delivery_id)
        return len(self.dispatcher.retry_deliveries(FAILED, destination=name))

    def pause_routing(self, paused: bool, username: str) -> bool:
        """Pause (received studies wait) or resume routing; returns whether it changed."""
        with session_scope(self.session_factory) as session:
            return set_paused(session, ROUTING, paused, username)

    def pause_destination(self, destination: str, paused: bool, username: str) -> bool:
        """Hold or release deliveries to one destination; on resume held ones go at once."""
        name = self._destination(destination)
        with session_scope(self.session_factory) as session:
            changed = set_paused(session, destination_flag(name), paused, username)
            held = session.scalars(
                select(Delivery.id).where(
                    Delivery.destination == name,
                    Delivery.state.in_([DeliveryState.PENDING, DeliveryState.RETRYING]),
                )
            ).all()
        if not paused:
            for delivery_id in held:
                self.dispatcher.enqueue_delivery(delivery_id)
        return changed
