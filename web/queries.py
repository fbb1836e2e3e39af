"""What the console's pages read: filtered job lists, one job's story, studies.

Every list is keyset-paginated on the primary key (``before``) and never
counts the whole table, so pages stay fast with 100,000 jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session, selectinload

from core.db.models import (
    Acknowledgement,
    AuditEvent,
    Delivery,
    DeliveryState,
    Job,
    JobState,
    Result,
    Series,
    Study,
    StudyState,
)
from web.audit import audit_object
from web.overview import SENDING


class FilterError(ValueError):
    """A list filter that cannot be applied (unknown state, malformed date or id)."""


#: The largest row id (a 32-bit integer column on PostgreSQL).
MAX_ID = 2**31 - 1


def parse_id(text: str | None) -> int | None:
    """A row id from a query string (None when empty); :class:`FilterError` if it is none."""
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_ID:
        raise FilterError(f"not a row id: {text[:20]!r}")
    return int(text)


@dataclass(frozen=True)
class JobFilters:
    """The job list's filters, validated from the query string."""

    state: JobState | None = None
    pipeline: str | None = None
    destination: str | None = None
    day: date | None = None
    calling_ae: str | None = None
    search: str | None = None
    before: int | None = None

    @classmethod
    def parse(cls, params: dict[str, str]) -> JobFilters:
        """Read and check the filters; raises :class:`FilterError` on malformed ones."""

        def text(name: str, limit: int = 320) -> str | None:
            value = (params.get(name) or "").strip()
            if len(value) > limit:
                raise FilterError(f"{name} is longer than {limit} characters")
            return value or None

        state = text("state")
        if state is not None and state not in {s.value for s in JobState}:
            known = ", ".join(s.value for s in JobState)
            raise FilterError(f"unknown state {state!r} (one of {known})")
        day = text("date")
        try:
            parsed_day = date.fromisoformat(day) if day else None
        except ValueError:
            raise FilterError(f"date must look like 2026-12-07, got {day!r}") from None
        try:
            before = parse_id(text("before"))
        except FilterError as exc:
            raise FilterError(f"before must be a job id: {exc}") from None
        return cls(
            state=JobState(state) if state else None,
            pipeline=text("pipeline", 64),
            destination=text("destination"),
            day=parsed_day,
            calling_ae=text("calling_ae", 16),
            search=text("q", 64),
            before=before,
        )

    def query_string(self, **changes: Any) -> str:
        """These filters as a query string (for the next page's link)."""
        from urllib.parse import urlencode

        values = {
            "state": self.state.value if self.state else None,
            "pipeline": self.pipeline,
            "destination": self.destination,
            "date": self.day.isoformat() if self.day else None,
            "calling_ae": self.calling_ae,
            "q": self.search,
            "before": self.before,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def study_search(text: str) -> Any:
    """Studies whose UID, accession number or patient ID is ``text`` (exact match)."""
    return or_(
        Study.study_instance_uid == text,
        Study.accession_number == text,
        Study.patient_id == text,
    )


def job_list(session: Session, filters: JobFilters, limit: int) -> list[Job]:
    """Jobs matching ``filters``, newest first, at most ``limit``."""
    query = (
        select(Job)
        .options(selectinload(Job.study), selectinload(Job.series))
        .order_by(Job.id.desc())
        .limit(limit)
    )
    if filters.before is not None:
        query = query.where(Job.id < filters.before)
    if filters.state is not None:
        query = query.where(Job.state == filters.state)
    if filters.pipeline is not None:
        query = query.where(Job.pipeline == filters.pipeline)
    if filters.day is not None:
        start = datetime.combine(filters.day, time(), tzinfo=UTC)
        query = query.where(Job.created_at >= start, Job.created_at < start + timedelta(days=1))
    if filters.calling_ae is not None:
        query = query.join(Series, Series.id == Job.series_id).where(
            Series.calling_ae == filters.calling_ae
        )
    if filters.destination is not None:
        query = query.where(
            exists()
            .where(Result.job_id == Job.id, Delivery.result_id == Result.id)
            .where(Delivery.destination == filters.destination)
        )
    if filters.search is not None:
        query = query.where(Job.study_id.in_(select(Study.id).where(study_search(filters.search))))
    return list(session.scalars(query))


def delivery_summaries(session: Session, job_ids: list[int]) -> dict[int, dict[str, int]]:
    """For each job id, its deliveries counted by state."""
    rows = session.execute(
        select(Result.job_id, Delivery.state, func.count())
        .join(Delivery, Delivery.result_id == Result.id)
        .where(Result.job_id.in_(job_ids))
        .group_by(Result.job_id, Delivery.state)
    ).all()
    summary: dict[int, dict[str, int]] = {}
    for job_id, state, count in rows:
        summary.setdefault(job_id, {})[state.value] = count
    return summary


def destination_counts(session: Session) -> dict[str, dict[str, int]]:
    """Per destination: its deliveries not succeeded by state, and those delivered in the last day.

    Delivered ones are counted over a day only: counting every one ever made
    would read the whole table on each view.
    """
    counts: dict[str, dict[str, int]] = {}
    for name, state, count in session.execute(
        select(Delivery.destination, Delivery.state, func.count())
        .where(Delivery.state.in_([s for s in DeliveryState if s != DeliveryState.SUCCEEDED]))
        .group_by(Delivery.destination, Delivery.state)
    ):
        counts.setdefault(name, {})[state.value] = count
    since = datetime.now(UTC) - timedelta(days=1)
    for name, count in session.execute(
        select(Delivery.destination, func.count())
        .where(Delivery.delivered_at >= since)
        .group_by(Delivery.destination)
    ):
        counts.setdefault(name, {})["delivered in the last day"] = count
    return counts


def study_list(
    session: Session, state: str | None, search: str | None, before: int | None, limit: int
) -> list[Study]:
    """Studies, newest first, optionally of one state or matching a search."""
    query = select(Study).order_by(Study.id.desc()).limit(limit)
    if state:
        if state not in {s.value for s in StudyState}:
            known = ", ".join(s.value for s in StudyState)
            raise FilterError(f"unknown study state {state!r} (one of {known})")
        query = query.where(Study.state == StudyState(state))
    if search:
        query = query.where(study_search(search))
    if before is not None:
        query = query.where(Study.id < before)
    return list(session.scalars(query))


@dataclass
class TimelineEntry:
    """One line of a job's timeline: when, what, and how long it took."""

    at: datetime | None
    what: str
    seconds: float | None = None
    detail: str | None = None


@dataclass
class JobStory:
    """Everything the job page shows."""

    job: Job
    timeline: list[TimelineEntry] = field(default_factory=list)
    domain_verdict: str = ""
    acknowledged: Acknowledgement | None = None
    delivery_acks: dict[int, Acknowledgement] = field(default_factory=dict)
    actions: list[AuditEvent] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Whether the job may still change: running, queued or with a delivery on its way."""
        return self.job.state in (JobState.QUEUED, JobState.RUNNING) or any(
            delivery.state in SENDING
            for result in self.job.results
            for delivery in result.deliveries
        )


def _verdict(job: Job) -> str:
    messages = [event.message or "" for event in job.events]
    outside = next((m for m in messages if "outside validated input domain" in m), None)
    if job.state == JobState.SKIPPED:
        return f"skipped: {job.error or outside or 'outside its domain'}"
    if outside:
        return f"processed, flagged: {outside}"
    if job.state == JobState.SUCCEEDED:
        return "within the validated domain"
    return "not checked yet" if job.state in (JobState.QUEUED, JobState.RUNNING) else "-"


def _timeline(job: Job) -> list[TimelineEntry]:
    study = job.study
    entries = [
        TimelineEntry(study.first_received_at, "first instance received"),
        TimelineEntry(
            study.last_received_at,
            "last instance received",
            (study.last_received_at - study.first_received_at).total_seconds(),
        ),
    ]
    if study.routed_at is not None:
        entries.append(
            TimelineEntry(
                study.routed_at,
                "stable and routed",
                (study.routed_at - study.last_received_at).total_seconds(),
            )
        )
    for previous, event in zip([None, *job.events], job.events, strict=False):
        seconds = (event.at - previous.at).total_seconds() if previous is not None else None
        entries.append(TimelineEntry(event.at, event.state, seconds, event.message))
    for label, seconds in (
        ("waited in the queue", job.queue_wait_seconds),
        ("loaded", job.load_seconds),
        ("inferred", job.inference_seconds),
        ("written", job.write_seconds),
    ):
        if seconds is not None:
            entries.append(TimelineEntry(None, label, seconds))
    for result in job.results:
        for delivery in result.deliveries:
            entries.append(
                TimelineEntry(
                    delivery.delivered_at or delivery.next_attempt_at or delivery.created_at,
                    f"{result.kind.upper()} to {delivery.destination}: {delivery.state.value}",
                    delivery.send_seconds,
                    f"{delivery.attempts} attempt(s)"
                    + (f"; {delivery.last_error}" if delivery.last_error else ""),
                )
            )
    return entries


def job_story(session: Session, job_id: int) -> JobStory | None:
    """The job with its study, inputs, events, results and deliveries; None if unknown."""
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id)
        .options(
            selectinload(Job.study),
            selectinload(Job.series),
            selectinload(Job.events),
            selectinload(Job.inputs),
            selectinload(Job.results).selectinload(Result.deliveries),
        )
    )
    if job is None:
        return None
    delivery_ids = [d.id for r in job.results for d in r.deliveries]
    acks = session.scalars(
        select(Acknowledgement).where(
            or_(
                (Acknowledgement.kind == "job") & (Acknowledgement.object_id == job.id),
                (Acknowledgement.kind == "delivery")
                & Acknowledgement.object_id.in_(delivery_ids or [-1]),
            )
        )
    ).all()
    objects = [audit_object("job", job.id), *(audit_object("delivery", d) for d in delivery_ids)]
    actions = session.scalars(
        select(AuditEvent).where(AuditEvent.object.in_(objects)).order_by(AuditEvent.id)
    ).all()
    return JobStory(
        job=job,
        actions=list(actions),
        timeline=_timeline(job),
        domain_verdict=_verdict(job),
        acknowledged=next((a for a in acks if a.kind == "job"), None),
        delivery_acks={a.object_id: a for a in acks if a.kind == "delivery"},
    )
