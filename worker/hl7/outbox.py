"""HL7 result messages: written when a job's results are delivered, sent with retries.

Once every delivery of a job has succeeded (or been committed, where the
destination asks for Storage Commitment), one ORU^R01 per HL7 destination is
built and stored in ``hl7_messages``; the ``ainode.send_hl7`` task sends it
and records the acknowledgement.  A NAK (AE, AR) or no answer is retried with
the delivery backoff until ``AINODE_DELIVERY_MAX_ATTEMPTS``.  The message text
holds patient data: it is stored, never logged.
"""

from __future__ import annotations

import enum
import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.config import Hl7Destination, Settings
from core.db.models import Delivery, DeliveryState, Hl7Message, Hl7State, Job, Result, utcnow
from core.db.session import session_scope
from core.errors import TransientError
from core.tls import client_context
from worker.history import backoff_seconds
from worker.hl7.mllp import send_message
from worker.hl7.oru import OrderContext, Parties, build_oru
from worker.queues import enqueue_hl7

if TYPE_CHECKING:
    from celery import Celery

    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: Delivery states after which a result is where it should be.
DELIVERED = (DeliveryState.SUCCEEDED, DeliveryState.COMMITTED)


class Hl7Outcome(enum.StrEnum):
    """What one execution of the HL7 task did."""

    SENT = "sent"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"


def _report_of(job: Job) -> Result | None:
    """The job's SR to report: the one of the BINARY SEG (or of no SEG) first."""
    reports = [result for result in job.results if result.kind == "sr"]
    reports.sort(key=lambda result: result.seg_type not in (None, "BINARY"))
    return reports[0] if reports else None


def queue_result_messages(session: Session, job_id: int, settings: Settings) -> list[int]:
    """Write the job's ORU for each HL7 destination once its results are all delivered.

    Returns the ids of the messages written now (none if the job's results
    are not all delivered yet, or its messages exist already).
    """
    if not settings.hl7_destinations:
        return []
    job = session.get_one(Job, job_id)
    states = session.scalars(
        select(Delivery.state).join(Result).where(Result.job_id == job_id)
    ).all()
    report = _report_of(job)
    if not states or report is None or any(state not in DELIVERED for state in states):
        return []
    existing = set(
        session.scalars(select(Hl7Message.destination).where(Hl7Message.job_id == job_id))
    )
    wanted = [str(d) for d in settings.hl7_destinations if str(d) not in existing]
    if not wanted:
        return []
    study = job.study
    context = OrderContext(
        study_instance_uid=study.study_instance_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        study_date=study.study_date,
        requested_procedure=study.requested_procedure,
        pipeline=job.pipeline,
        pipeline_version=job.pipeline_version or "",
        finished_at=job.finished_at or utcnow(),
    )
    rows = [_message(job_id, destination, context, report, settings) for destination in wanted]
    try:
        with session.begin_nested():
            session.add_all(rows)
    except IntegrityError:
        return []  # the job's last two deliveries ended together: the other one wrote them
    log.info("job %d: %d HL7 result messages written", job_id, len(rows))
    return [row.id for row in rows if row.state == Hl7State.PENDING]


def _message(
    job_id: int, destination: str, context: OrderContext, report: Result, settings: Settings
) -> Hl7Message:
    """The row of one ORU; a ``failed`` row saying why when it cannot be built."""
    control_id = uuid.uuid4().hex[:20]
    parties = Parties(
        settings.ae_title,
        settings.hl7_sending_facility,
        settings.hl7_receiving_application,
        settings.hl7_receiving_facility,
    )
    row = Hl7Message(
        job_id=job_id,
        destination=destination,
        control_id=control_id,
        state=Hl7State.PENDING,
        attempts=0,
    )
    try:
        row.message = build_oru(
            context,
            dcmread(Path(report.path)),
            control_id=control_id,
            parties=parties,
            flags=settings.hl7_abnormal_flags,
            now=utcnow(),
        )
    except Exception as exc:
        # Only the kind of error: a validation message may quote a value of the study.
        row.message, row.state = "", Hl7State.FAILED
        row.last_error = f"cannot build the ORU^R01 ({type(exc).__name__})"
        log.error("job %d: cannot build the HL7 message (%s)", job_id, type(exc).__name__)
    return row


def enqueue_result_messages(runtime: WorkerRuntime, app: Celery | None, ids: list[int]) -> None:
    """Queue the sending of HL7 messages ``ids`` (the recovery sweep does it without an app)."""
    if app is None or not ids:
        return
    for message_id in ids:
        enqueue_hl7(app, message_id)


def _configured(settings: Settings, name: str) -> Hl7Destination | None:
    return next((d for d in settings.hl7_destinations if str(d) == name), None)


def execute_hl7(runtime: WorkerRuntime, message_id: int, app: Celery | None = None) -> Hl7Outcome:
    """Send HL7 message ``message_id`` once; schedule a retry or give up when it is not accepted."""
    settings = runtime.settings
    with session_scope(runtime.session_factory) as session:
        row = session.get(Hl7Message, message_id)
        if row is None or row.state not in (Hl7State.PENDING, Hl7State.RETRYING):
            return Hl7Outcome.SKIPPED
        name, text = row.destination, row.message
    destination = _configured(settings, name)
    ack = None
    if destination is None:
        error = f"HL7 destination {name} is no longer configured"
    else:
        try:
            ack = send_message(
                destination,
                text,
                timeout=settings.hl7_ack_timeout_seconds,
                tls=client_context(settings) if destination.tls else None,
            )
            error = None if ack.accepted else f"NAK {ack.code}: {ack.text}".rstrip(": ")
        except TransientError as exc:
            error = str(exc)
    # The receiver's text may quote the message: logs name the ACK code only.
    logged = f"NAK {ack.code}" if ack is not None and not ack.accepted else error
    with session_scope(runtime.session_factory) as session:
        row = session.get_one(Hl7Message, message_id)
        row.attempts += 1
        row.last_error = error
        if ack is not None:
            row.ack, row.ack_code = ack.raw, ack.code
        if error is None:
            row.state, row.sent_at, row.next_attempt_at = Hl7State.SENT, utcnow(), None
            log.info("HL7 message %d to %s acknowledged (%s)", message_id, name, row.ack_code)
            return Hl7Outcome.SENT
        if destination is None or row.attempts >= settings.delivery_max_attempts:
            row.state, row.next_attempt_at = Hl7State.FAILED, None
            log.warning("HL7 message %d to %s failed for good: %s", message_id, name, logged)
            return Hl7Outcome.FAILED
        delay = backoff_seconds(
            row.attempts, settings.delivery_backoff_seconds, settings.delivery_backoff_max_seconds
        )
        row.state = Hl7State.RETRYING
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
    log.info("HL7 message %d to %s: %s; retry in %.1fs", message_id, name, logged, delay)
    if app is not None:
        enqueue_hl7(app, message_id, delay)
    return Hl7Outcome.RETRYING


def fail_hl7(runtime: WorkerRuntime, message_id: int, reason: str) -> None:
    """Mark an HL7 message failed with ``reason`` (an unexpected task error)."""
    with session_scope(runtime.session_factory) as session:
        row = session.get(Hl7Message, message_id)
        if row is not None and row.state != Hl7State.SENT:
            row.state, row.last_error, row.next_attempt_at = Hl7State.FAILED, reason, None
    log.warning("HL7 message %d failed: %s", message_id, reason)
