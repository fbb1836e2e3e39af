"""What a job leaves in the database besides its results: its history and its deliveries.

Shared by the worker (a finished job plans its deliveries, a failed send is
retried with backoff) and the scheduler (routing, replay, recovery), so that
neither needs the other to write these rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from sqlalchemy.orm import Session

from core.config import Destination
from core.db.models import Delivery, DeliveryState, Job, JobEvent, Result, utcnow
from core.errors import ConfigurationError


def add_job_event(session: Session, job: Job, state: str, message: str | None = None) -> None:
    """Append an entry to a job's history."""
    session.add(JobEvent(job_id=job.id, state=state, message=message, at=utcnow()))


def reset_delivery(delivery: Delivery) -> None:
    """Make a delivery ``pending`` again with a fresh attempt budget."""
    delivery.state = DeliveryState.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = None


def plan_deliveries(
    session: Session,
    results: Sequence[Result],
    destinations: Sequence[Destination],
    *,
    resend: bool = False,
) -> list[int]:
    """Delivery ids of one job's ``results`` to ``destinations`` that should be sent now.

    Each destination gets the results of its SEG type (a SEG and the SR that
    references it) and those of none (an SR of findings), so it holds one
    consistent SEG + SR pair; of those, the formats it takes (``seg``, ``sr``,
    ``sc``, and the ``kos`` that references what it takes).  A destination
    whose SEG type the job made nothing of gets the BINARY pair: a LABELMAP cannot hold overlapping
    segments, and a LABELMAP destination configured after the job ran gets
    what the job made (re-run the job to make its LABELMAP).  Missing
    deliveries are created ``pending``; with ``resend`` existing ones are
    reset to ``pending`` with a fresh attempt budget (an operator's replay).

    Raises
    ------
    ConfigurationError
        If a destination would get no SEG of a job that made SEGs: a BINARY
        destination configured after a job that made only a LABELMAP.
    """
    made = {result.seg_type for result in results if result.seg_type}
    planned = []
    for destination in destinations:
        seg_type = destination.seg_type if destination.seg_type in made else "BINARY"
        if made and seg_type not in made:
            raise ConfigurationError(
                f"no {destination.seg_type} SEG was made for {destination}; "
                "run the job again (ainode replay JOB --rerun)"
            )
        name = str(destination)
        for result in results:
            if result.seg_type not in (None, seg_type) or result.kind not in destination.formats:
                continue
            if result.kind == "kos" and result.variant != destination.kos_variant:
                continue
            delivery = next((d for d in result.deliveries if d.destination == name), None)
            if delivery is None:
                delivery = Delivery(result_id=result.id, destination=name)
                session.add(delivery)
            elif not resend:
                continue
            reset_delivery(delivery)
            session.flush()
            planned.append(delivery.id)
    return planned


def backoff_seconds(attempt: int, base: float, ceiling: float) -> float:
    """Exponential backoff with full jitter: a random delay up to ``base * 2**(attempt-1)``."""
    return random.uniform(0.5, 1.0) * min(ceiling, base * 2 ** max(attempt - 1, 0))
