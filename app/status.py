"""What ``ainode status`` shows: recent studies and jobs with their states and errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db.models import Delivery, DeliveryState, Hl7Message, Job, Result, Series, Study


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def study_rows(session: Session, limit: int) -> list[dict[str, str]]:
    """The ``limit`` most recent studies, newest first."""
    counts = (
        select(Series.study_id, func.sum(Series.instance_count).label("instances"))
        .group_by(Series.study_id)
        .subquery()
    )
    rows = session.execute(
        select(Study, counts.c.instances)
        .join(counts, counts.c.study_id == Study.id, isouter=True)
        .order_by(Study.last_received_at.desc())
        .limit(limit)
    ).all()
    return [
        {
            "study": str(study.id),
            "study_uid": study.study_instance_uid,
            "instances": str(instances or 0),
            "state": study.state.value,
            "last_received": _when(study.last_received_at),
            "note": study.routing_note or "",
        }
        for study, instances in rows
    ]


def job_rows(session: Session, limit: int) -> list[dict[str, str]]:
    """The ``limit`` most recent jobs, newest first, with their deliveries summarised."""
    jobs = session.scalars(select(Job).order_by(Job.id.desc()).limit(limit)).all()
    rows = []
    for job in jobs:
        states = session.execute(
            select(Delivery.state, func.count())
            .join(Result)
            .where(Result.job_id == job.id)
            .group_by(Delivery.state)
        ).all()
        summary = ",".join(f"{count} {state.value}" for state, count in states) or "-"
        failed_errors = session.scalars(
            select(Delivery.last_error)
            .join(Result)
            .where(
                Result.job_id == job.id,
                Delivery.state.in_([DeliveryState.FAILED, DeliveryState.COMMIT_FAILED]),
            )
        ).all()
        error = job.error or "; ".join(e for e in failed_errors if e)
        rows.append(
            {
                "job": str(job.id),
                "study": str(job.study_id),
                "pipeline": f"{job.pipeline} {job.pipeline_version or ''}".strip(),
                "state": job.state.value,
                "attempts": str(job.attempts),
                "device": job.device or "-",
                "weights": (job.weights_sha256 or "-")[:12],
                "queued": _when(job.created_at),
                "wait_s": _seconds(job.queue_wait_seconds),
                "load_s": _seconds(job.load_seconds),
                "infer_s": _seconds(job.inference_seconds),
                "write_s": _seconds(job.write_seconds),
                "send_s": _seconds(job.send_seconds),
                "deliveries": summary,
                "error": error,
            }
        )
    return rows


def hl7_rows(session: Session, limit: int, with_text: bool = False) -> list[dict[str, str]]:
    """The ``limit`` most recent HL7 result messages, newest first, with their ACK code.

    ``with_text`` adds the message and the ACK as sent and received (patient
    data: for an operator's terminal, never for a log).
    """
    messages = session.scalars(select(Hl7Message).order_by(Hl7Message.id.desc()).limit(limit))
    rows = []
    for message in messages:
        row = {
            "message": str(message.id),
            "job": str(message.job_id),
            "destination": message.destination,
            "control_id": message.control_id,
            "state": message.state.value,
            "attempts": str(message.attempts),
            "ack": message.ack_code or "-",
            "sent": _when(message.sent_at),
            "error": message.last_error or "",
        }
        if with_text:
            row["text"] = message.message.replace("\r", "\n")
            row["ack_text"] = (message.ack or "").replace("\r", "\n")
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, str]], empty: str = "(none)") -> str:
    """A plain aligned text table of ``rows`` (all rows share the first row's keys)."""
    if not rows:
        return empty
    headers = list(rows[0])
    widths = {h: max(len(h), *(len(row[h]) for row in rows)) for h in headers}
    lines = ["  ".join(h.upper().ljust(widths[h]) for h in headers)]
    lines += ["  ".join(row[h].ljust(widths[h]) for h in headers) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
