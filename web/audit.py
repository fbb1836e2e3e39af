"""The audit trail: every console action and login, and its CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import AuditEvent, utcnow

CSV_COLUMNS = ("id", "at", "username", "action", "object", "outcome", "address", "detail")


def audit_object(kind: str, object_id: int) -> str:
    """How the audit trail names a job or delivery (``job 7``): actions write it, pages find it."""
    return f"{kind} {object_id}"


def record(
    session: Session,
    *,
    username: str | None,
    action: str,
    obj: str | None,
    outcome: str,
    address: str | None,
    detail: str | None = None,
) -> AuditEvent:
    """Add one audit event (committed with the caller's transaction)."""
    event = AuditEvent(
        at=utcnow(),
        username=username,
        action=action,
        object=obj,
        outcome=outcome,
        address=address,
        detail=detail,
    )
    session.add(event)
    return event


def recent_events(
    session: Session, limit: int, before: int | None = None, since: datetime | None = None
) -> list[AuditEvent]:
    """Audit events, newest first, ``limit`` of them before id ``before``."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return list(session.scalars(query))


def _csv_cell(value: object) -> str:
    """A cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def to_csv(events: Iterable[AuditEvent]) -> str:
    """The events as CSV text with a header row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for event in events:
        writer.writerow([_csv_cell(getattr(event, column)) for column in CSV_COLUMNS])
    return out.getvalue()
