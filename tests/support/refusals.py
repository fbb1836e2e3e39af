"""What ``instance_refusals`` holds, for the tests of counting refused instances."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import InstanceRefusal


def refusal_counts(sessions: sessionmaker[Session]) -> dict[tuple[int, str, str], int]:
    """Refused instances by status, cause and calling AE, the minutes summed."""
    columns = (InstanceRefusal.status, InstanceRefusal.cause, InstanceRefusal.calling_ae)
    with sessions() as session:
        rows = session.execute(select(*columns, func.sum(InstanceRefusal.count)).group_by(*columns))
        return {(status, cause, ae): int(count) for status, cause, ae, count in rows}
