"""Storage Commitment of delivered results: ask, apply the peer's report, expire.

A delivery to a destination with ``/commit`` (``commit = true``) is ``sent``
once its C-STORE succeeded and the peer accepted the N-ACTION; the peer's
report (kept by :class:`dicom_node.commitment.inbox.CommitmentInbox`) then
makes it ``committed``, or ``commit_failed``, in which case it is sent again
while attempts remain.  A delivery whose report does not come within
``AINODE_COMMITMENT_TIMEOUT_SECONDS`` becomes ``commit_failed`` for good.
The transaction UID is in the database before the N-ACTION leaves, so a
report finds its delivery even when it overtakes the worker, or arrives
after a node restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Destination, Settings
from core.db.models import Delivery, DeliveryState, Result, utcnow
from core.db.session import session_scope
from core.tls import client_context
from core.uids import UID_ROOT
from dicom_node.commitment.inbox import CommitmentInbox
from dicom_node.commitment.request import request_commitment
from worker.hl7.outbox import queue_result_messages

if TYPE_CHECKING:
    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: Failure Reason values of a Storage Commitment report (PS3.3 C.12.1.1.5).
FAILURE_REASONS = {
    0x0110: "processing failure",
    0x0112: "no such object instance",
    0x0119: "class-instance conflict",
    0x0122: "referenced SOP class not supported",
    0x0131: "duplicate transaction UID",
    0x0213: "resource limitation",
}
#: One applier at a time: a report's arrival and the recovery sweep may both look at the inbox.
_APPLYING = threading.Lock()


def ask_commitment(
    runtime: WorkerRuntime, delivery_id: int, destination: Destination
) -> str | None:
    """Open a commitment transaction for a stored delivery and send its N-ACTION.

    The delivery becomes ``sent`` with a new transaction UID, committed to
    the database first (the report may come back before this returns).
    Returns None, or why the peer refused the request.

    Raises
    ------
    TransientError
        If the peer cannot be reached for the N-ACTION.
    """
    transaction_uid = generate_uid(prefix=UID_ROOT)
    with session_scope(runtime.session_factory) as session:
        delivery = session.get_one(Delivery, delivery_id)
        reference = (delivery.result.sop_class_uid, delivery.result.sop_instance_uid)
        delivery.state = DeliveryState.SENT
        delivery.commit_transaction_uid = transaction_uid
        delivery.commit_requested_at = utcnow()
        delivery.committed_at = None
        delivery.last_error = None
        delivery.next_attempt_at = None
    settings = runtime.settings
    return request_commitment(
        destination,
        transaction_uid,
        [reference],
        calling_ae=settings.ae_title,
        timeout=settings.network_timeout_seconds,
        tls=client_context(settings) if destination.tls else None,
    )


@dataclass
class CommitmentOutcome:
    """What applying reports and expiring transactions did, by delivery id."""

    committed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    resend: list[int] = field(default_factory=list)
    hl7_messages: list[int] = field(default_factory=list)

    def add(self, other: CommitmentOutcome) -> None:
        """Count ``other``'s deliveries and messages in this outcome too."""
        self.committed += other.committed
        self.failed += other.failed
        self.resend += other.resend
        self.hl7_messages += other.hl7_messages


def _references(report: object, keyword: str) -> dict[str, int | None]:
    """SOP Instance UID -> Failure Reason (None for a success) of one report sequence."""
    return {
        str(item.ReferencedSOPInstanceUID): item.get("FailureReason")
        for item in getattr(report, keyword, None) or []
        if "ReferencedSOPInstanceUID" in item
    }


def _fail(delivery: Delivery, reason: str, settings: Settings, retry: bool) -> bool:
    """Mark ``delivery`` commit_failed; True when it is to be sent again."""
    delivery.state = DeliveryState.COMMIT_FAILED
    delivery.last_error = reason
    again = retry and delivery.attempts < settings.delivery_max_attempts
    delivery.next_attempt_at = utcnow() if again else None
    return again


def apply_report(session: Session, report: object, settings: Settings) -> CommitmentOutcome:
    """Apply one N-EVENT-REPORT dataset to the deliveries of its transaction."""
    outcome = CommitmentOutcome()
    transaction_uid = str(getattr(report, "TransactionUID", ""))
    committed = _references(report, "ReferencedSOPSequence")
    failed = _references(report, "FailedSOPSequence")
    deliveries = session.scalars(
        select(Delivery).join(Result).where(Delivery.commit_transaction_uid == transaction_uid)
    ).all()
    if not deliveries:
        log.warning("storage commitment report for unknown transaction %s", transaction_uid)
    for delivery in deliveries:
        uid = delivery.result.sop_instance_uid
        if uid in committed:
            delivery.state = DeliveryState.COMMITTED
            delivery.committed_at = utcnow()
            delivery.last_error = None
            delivery.next_attempt_at = None
            outcome.committed.append(delivery.id)
            log.info("delivery %d committed by %s", delivery.id, delivery.destination)
            continue
        code = failed.get(uid)
        reason = FAILURE_REASONS.get(code or 0, f"failure reason 0x{code or 0:04X}")
        if uid not in failed:
            reason = "not in the storage commitment report"
        outcome.failed.append(delivery.id)
        if _fail(delivery, f"storage commitment failed: {reason}", settings, retry=True):
            outcome.resend.append(delivery.id)
        log.warning(
            "delivery %d not committed by %s: %s", delivery.id, delivery.destination, reason
        )
    session.flush()
    jobs = {delivery.result.job_id for delivery in deliveries if delivery.id in outcome.committed}
    for job_id in sorted(jobs):
        outcome.hl7_messages += queue_result_messages(session, job_id, settings)
    return outcome


def apply_inbox(
    inbox: CommitmentInbox, session_factory: sessionmaker[Session], settings: Settings
) -> CommitmentOutcome:
    """Apply every report waiting in ``inbox``, oldest first; each is removed once applied."""
    total = CommitmentOutcome()
    with _APPLYING:
        for path in inbox.pending():
            _apply_file(path, session_factory, settings, total)
    return total


def _apply_file(
    path: Path, session_factory: sessionmaker[Session], settings: Settings, total: CommitmentOutcome
) -> None:
    """Apply the report kept in ``path``, then remove it (also when it cannot be read)."""
    try:
        report = dcmread(path)
    except Exception as exc:
        log.error("unreadable storage commitment report %s: %s", path.name, exc)
        path.unlink(missing_ok=True)
        return
    with session_scope(session_factory) as session:
        outcome = apply_report(session, report, settings)
    path.unlink(missing_ok=True)
    total.add(outcome)


def expire_commitments(session: Session, now: datetime, settings: Settings) -> list[int]:
    """Deliveries ``sent`` longer than the commitment timeout become ``commit_failed``."""
    timeout = settings.commitment_timeout_seconds
    overdue: Sequence[Delivery] = session.scalars(
        select(Delivery).where(
            Delivery.state == DeliveryState.SENT,
            Delivery.commit_requested_at <= now - timedelta(seconds=timeout),
        )
    ).all()
    for delivery in overdue:
        _fail(delivery, f"no storage commitment report within {timeout:g} s", settings, False)
        log.warning("delivery %d: no storage commitment report in time", delivery.id)
    return [delivery.id for delivery in overdue]


def sweep_commitments(
    inbox: CommitmentInbox, session_factory: sessionmaker[Session], settings: Settings
) -> CommitmentOutcome:
    """Apply waiting reports, then expire transactions whose report is overdue."""
    outcome = apply_inbox(inbox, session_factory, settings)
    with session_scope(session_factory) as session:
        outcome.failed += expire_commitments(session, utcnow(), settings)
    return outcome
