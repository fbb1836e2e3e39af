"""Sending one result to one destination, with retries, backoff and jitter.

Each attempt is recorded (attempts, last status, last error, next attempt
time).  A delivery whose destination is no longer configured is never sent:
results only go where the operator said.
"""

from __future__ import annotations

import enum
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.config import Destination
from core.control import destination_flag, is_paused
from core.db.models import Delivery, DeliveryState, Job, Result, utcnow
from core.db.session import session_scope
from core.errors import TransientError
from core.tls import client_context
from dicom_node.scu import store_files
from worker.commitment import ask_commitment
from worker.history import backoff_seconds
from worker.hl7.outbox import enqueue_result_messages, queue_result_messages
from worker.queues import enqueue_delivery

if TYPE_CHECKING:
    from celery import Celery

    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


class DeliveryOutcome(enum.StrEnum):
    """What one execution of the delivery task did."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"
    PAUSED = "paused"


def fail_delivery(runtime: WorkerRuntime, delivery_id: int, reason: str) -> None:
    """Mark a delivery failed with ``reason`` (also used for unexpected task errors)."""
    with session_scope(runtime.session_factory) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.state in (DeliveryState.SUCCEEDED, DeliveryState.COMMITTED):
            return
        delivery.state = DeliveryState.FAILED
        delivery.last_error = reason
        delivery.next_attempt_at = None
    log.warning("delivery %d failed: %s", delivery_id, reason)


def sendable(delivery: Delivery) -> bool:
    """Whether a delivery is still to be sent: not done, not given up, not awaiting a report.

    A ``commit_failed`` delivery is sent again while it has a next attempt
    time (its report named it failed and attempts remain).
    """
    if delivery.state == DeliveryState.COMMIT_FAILED:
        return delivery.next_attempt_at is not None
    return delivery.state in (DeliveryState.PENDING, DeliveryState.RETRYING)


def _configured(runtime: WorkerRuntime, name: str) -> Destination | None:
    return next((d for d in runtime.settings.destinations if str(d) == name), None)


def execute_delivery(
    runtime: WorkerRuntime, delivery_id: int, app: Celery | None = None
) -> DeliveryOutcome:
    """Attempt delivery ``delivery_id`` once; schedule a retry or give up when it fails."""
    with session_scope(runtime.session_factory) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or not sendable(delivery):
            return DeliveryOutcome.SKIPPED
        name, path = delivery.destination, Path(delivery.result.path)
        if is_paused(session, destination_flag(name)):
            # Held without spending an attempt; resuming the destination sends it again.
            wait = timedelta(seconds=runtime.settings.recovery_interval_seconds)
            delivery.next_attempt_at = utcnow() + wait
            log.info("delivery %d held: destination %s is paused", delivery_id, name)
            return DeliveryOutcome.PAUSED
    destination = _configured(runtime, name)
    if destination is None:
        fail_delivery(runtime, delivery_id, f"destination {name} is no longer configured")
        return DeliveryOutcome.FAILED
    status, error, elapsed = _attempt(runtime, delivery_id, destination, path)
    with session_scope(runtime.session_factory) as session:
        delivery = session.get_one(Delivery, delivery_id)
        delivery.attempts += 1
        delivery.last_status = status
        delivery.send_seconds = (delivery.send_seconds or 0.0) + elapsed
        if error is None:
            _record_sent(runtime, session, delivery, destination, app)
            return DeliveryOutcome.SUCCEEDED
        delay = _record_failed_attempt(runtime, delivery, error)
        if delay is None:
            return DeliveryOutcome.FAILED
    log.info("delivery %d to %s: %s; retry in %.1fs", delivery_id, name, error, delay)
    if app is not None:
        enqueue_delivery(app, delivery_id, delay)
    return DeliveryOutcome.RETRYING


def _attempt(
    runtime: WorkerRuntime, delivery_id: int, destination: Destination, path: Path
) -> tuple[int | None, str | None, float]:
    """Send ``path`` to ``destination`` once: the peer's status, the error if any, the seconds.

    Where the destination takes storage commitment, the N-ACTION that asks
    for it follows the stored file; its refusal fails the attempt.
    """
    start = time.perf_counter()
    try:
        outcome = store_files(
            destination,
            [path],
            calling_ae=runtime.settings.ae_title,
            timeout=runtime.settings.network_timeout_seconds,
            tls=client_context(runtime.settings) if destination.tls else None,
        )[0]
        status, error = outcome.status, outcome.error
        if error is None and destination.commit:
            error = ask_commitment(runtime, delivery_id, destination)
    except TransientError as exc:
        status, error = None, str(exc)
    return status, error, time.perf_counter() - start


def _record_sent(
    runtime: WorkerRuntime,
    session: Session,
    delivery: Delivery,
    destination: Destination,
    app: Celery | None,
) -> None:
    """Record a delivery the peer took, add it to the job's send time, queue the job's HL7.

    With storage commitment the peer's report decides the delivery's state
    and queues the HL7 messages (:mod:`worker.commitment`).
    """
    delivery.delivered_at = utcnow()
    if not destination.commit:
        delivery.state = DeliveryState.SUCCEEDED
        delivery.last_error = None
        delivery.next_attempt_at = None
    result = delivery.result
    job = session.get_one(Job, result.job_id)
    job.send_seconds = session.scalar(
        select(func.sum(Delivery.send_seconds)).join(Result).where(Result.job_id == job.id)
    )
    log.info("delivery %d of %s to %s succeeded", delivery.id, result.kind, delivery.destination)
    if not destination.commit:
        messages = queue_result_messages(session, job.id, runtime.settings)
        session.commit()  # the messages exist before their tasks are queued
        enqueue_result_messages(runtime, app, messages)


def _record_failed_attempt(runtime: WorkerRuntime, delivery: Delivery, error: str) -> float | None:
    """Record a failed attempt: seconds until the retry, or None when the attempts are spent.

    The retry waits an exponential backoff with jitter
    (:func:`worker.history.backoff_seconds`); a delivery out of attempts is failed for good.
    """
    settings = runtime.settings
    delivery.last_error = error
    if delivery.attempts >= settings.delivery_max_attempts:
        delivery.state = DeliveryState.FAILED
        delivery.next_attempt_at = None
        log.warning(
            "delivery %d to %s failed for good: %s", delivery.id, delivery.destination, error
        )
        return None
    delay = backoff_seconds(
        delivery.attempts,
        settings.delivery_backoff_seconds,
        settings.delivery_backoff_max_seconds,
    )
    delivery.state = DeliveryState.RETRYING
    delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return delay
