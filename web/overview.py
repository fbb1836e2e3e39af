"""The overview page's numbers: each part's health, queue depths, volumes, time to result.

Shared with ``/metrics`` (:mod:`web.metrics`), so the page and the scrape
never disagree.  Everything is read from the database at request time.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from core.config import Settings
from core.control import DESTINATION_PREFIX, ROUTING, paused_flags
from core.db.models import (
    Acknowledgement,
    Delivery,
    DeliveryState,
    InstanceRefusal,
    Job,
    JobState,
    ProcessHeartbeat,
    Result,
    Study,
    StudyState,
    utcnow,
)

#: Deliveries on their way: to be sent, or sent and awaiting the storage commitment report.
SENDING = (DeliveryState.PENDING, DeliveryState.RETRYING, DeliveryState.SENT)
#: Deliveries given up on: failed, or not committed with no attempt left.
GAVE_UP = (Delivery.state == DeliveryState.FAILED) | (
    (Delivery.state == DeliveryState.COMMIT_FAILED) & Delivery.next_attempt_at.is_(None)
)
#: A worker whose heartbeat is older than this many heartbeat intervals counts as gone.
WORKER_STALE_INTERVALS = 3
STAGES = ("receiving", "waiting", "queued", "running", "sending", "failed")


@dataclass
class Check:
    """One part's health: ok or not, and what was seen."""

    name: str
    ok: bool
    detail: str


@dataclass
class DiskSample:
    """Free bytes of the spool's file system at a moment."""

    at: float
    free: int
    total: int


class DiskTrend:
    """Recent spool disk samples (in memory) to tell the free space's trend per hour."""

    def __init__(self, keep: int = 720) -> None:
        self._samples: deque[DiskSample] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def sample(self, settings: Settings) -> DiskSample:
        """Measure now and remember it."""
        usage = shutil.disk_usage(settings.spool_path)
        sample = DiskSample(time.monotonic(), usage.free, usage.total)
        with self._lock:
            self._samples.append(sample)
        return sample

    def bytes_per_hour(self) -> float | None:
        """Change of free bytes per hour across the samples (None with too little history)."""
        with self._lock:
            first, last = (self._samples[0], self._samples[-1]) if self._samples else (None, None)
        if first is None or last is None or last.at - first.at < 30:
            return None
        return (last.free - first.free) / (last.at - first.at) * 3600


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def scp_check(settings: Settings) -> Check:
    """Whether the Storage SCP accepts TCP connections on its port."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
    listening = settings.port > 0 and _port_open(host, settings.port)
    state = "listening" if listening else "not listening"
    return Check("SCP", listening, f"{settings.ae_title} {state} on port {settings.port}")


def broker_check(settings: Settings) -> Check:
    """Whether the broker answers (Redis PING) or the embedded broker's folder is writable."""
    if settings.uses_embedded_broker:
        folder = settings.embedded_broker_dir
        writable = folder.is_dir() and os.access(folder, os.W_OK)
        state = "ready" if writable else "missing"
        return Check("broker", writable, f"embedded (file system) {state}")
    import redis

    try:
        redis.Redis.from_url(str(settings.broker_url), socket_timeout=1).ping()
        return Check("broker", True, "Redis answers")
    except redis.RedisError as exc:
        return Check("broker", False, f"unreachable: {type(exc).__name__}")


def database_check(session: Session) -> Check:
    """Whether the database answers a trivial query."""
    session.execute(text("SELECT 1"))
    return Check("database", True, f"{session.get_bind().dialect.name} answers")


def worker_check(session: Session, settings: Settings, now: datetime) -> Check:
    """Workers whose heartbeat is recent."""
    alive = processes_alive(session, settings, now, role="worker")
    return Check("workers", bool(alive), f"{alive} alive by heartbeat")


def scheduler_check(session: Session, settings: Settings, now: datetime) -> Check:
    """The scheduler (``ainode serve``: stability, routing, recovery) beats."""
    alive = processes_alive(session, settings, now, role="scheduler")
    return Check("scheduler", bool(alive), "alive by heartbeat" if alive else "no heartbeat")


def disk_check(settings: Settings, trend: DiskTrend) -> Check:
    """Free space of the spool's file system and its trend."""
    sample = trend.sample(settings)
    share = sample.free / sample.total if sample.total else 0.0
    rate = trend.bytes_per_hour()
    change = f", {rate / 1e9:+.2f} GB/h" if rate is not None else ""
    detail = f"{sample.free / 1e9:.1f} GB free ({share:.0%}){change}"
    return Check("spool disk", share >= 0.1, detail)


def processes_alive(session: Session, settings: Settings, now: datetime, role: str) -> int:
    """Number of processes of ``role`` (``worker``, ``scheduler``) whose heartbeat is recent."""
    cutoff = now - timedelta(seconds=WORKER_STALE_INTERVALS * settings.job_heartbeat_seconds)
    return int(
        session.scalar(
            select(func.count())
            .select_from(ProcessHeartbeat)
            .where(ProcessHeartbeat.role == role, ProcessHeartbeat.beat_at >= cutoff)
        )
        or 0
    )


def unacknowledged(kind: str, id_column: object) -> object:
    """A condition: the row ``id_column`` of ``kind`` has not been acknowledged."""
    return (
        ~select(Acknowledgement.id)
        .where(Acknowledgement.kind == kind, Acknowledgement.object_id == id_column)
        .exists()
    )


def queue_depths(session: Session, settings: Settings, now: datetime) -> dict[str, int]:
    """How many studies, jobs and deliveries wait in each stage."""
    cutoff = now - timedelta(seconds=settings.stability_seconds)
    receiving = Study.state == StudyState.RECEIVING
    studies_receiving = session.scalar(
        select(func.count()).where(receiving, Study.last_received_at > cutoff)
    )
    studies_waiting = session.scalar(
        select(func.count()).where(receiving, Study.last_received_at <= cutoff)
    )
    jobs = dict(
        session.execute(
            select(Job.state, func.count())
            .where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
            .group_by(Job.state)
        ).all()
    )
    sending = session.scalar(select(func.count()).where(Delivery.state.in_(SENDING)))
    failed_jobs = session.scalar(
        select(func.count()).where(Job.state == JobState.FAILED, unacknowledged("job", Job.id))
    )
    failed_deliveries = session.scalar(
        select(func.count()).where(GAVE_UP, unacknowledged("delivery", Delivery.id))
    )
    return {
        "receiving": int(studies_receiving or 0),
        "waiting": int(studies_waiting or 0),
        "queued": int(jobs.get(JobState.QUEUED, 0)),
        "running": int(jobs.get(JobState.RUNNING, 0)),
        "sending": int(sending or 0),
        "failed": int((failed_jobs or 0) + (failed_deliveries or 0)),
    }


def volumes(session: Session, now: datetime) -> dict[str, dict[str, int]]:
    """Studies received, instances refused and results made in the last hour and day."""
    out: dict[str, dict[str, int]] = {}
    for label, span in (("hour", timedelta(hours=1)), ("day", timedelta(days=1))):
        since = now - span
        out[label] = {
            "studies": int(
                session.scalar(select(func.count()).where(Study.first_received_at >= since)) or 0
            ),
            "refused": int(
                session.scalar(
                    select(func.sum(InstanceRefusal.count)).where(InstanceRefusal.minute >= since)
                )
                or 0
            ),
            "results": int(
                session.scalar(select(func.count()).where(Result.created_at >= since)) or 0
            ),
        }
    return out


@dataclass
class RefusalSummary:
    """Instances refused over the last day with one status and cause from one calling AE."""

    status: str
    cause: str
    calling_ae: str
    count: int
    last_minute: datetime


#: Most rows of the overview's refusal table.
REFUSAL_ROWS = 10


def recent_refusals(session: Session, now: datetime) -> list[RefusalSummary]:
    """The refusals of the last day by status, cause and calling AE, latest first."""
    last = func.max(InstanceRefusal.minute)
    rows = session.execute(
        select(
            InstanceRefusal.status,
            InstanceRefusal.cause,
            InstanceRefusal.calling_ae,
            func.sum(InstanceRefusal.count),
            last,
        )
        .where(InstanceRefusal.minute >= now - timedelta(days=1))
        .group_by(InstanceRefusal.status, InstanceRefusal.cause, InstanceRefusal.calling_ae)
        .order_by(last.desc(), InstanceRefusal.status)
        .limit(REFUSAL_ROWS)
    )
    return [
        RefusalSummary(f"0x{status:04X}", cause, calling_ae, int(count), minute)
        for status, cause, calling_ae, count, minute in rows
    ]


def _percentile(values: list[float], share: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(share * 100) - 1]


def time_to_result(session: Session, now: datetime) -> dict[str, tuple[float, float, int]]:
    """Per pipeline, p50 and p95 seconds (and how many jobs) over the last day.

    A job's time to result runs from its study's last received instance to
    its last delivery confirmed by the destination.
    """
    since = now - timedelta(days=1)
    rows = session.execute(
        select(Job.pipeline, Study.last_received_at, func.max(Delivery.delivered_at))
        .join(Study, Study.id == Job.study_id)
        .join(Result, Result.job_id == Job.id)
        .join(Delivery, Delivery.result_id == Result.id)
        .where(Delivery.delivered_at >= since)
        .group_by(Job.id, Job.pipeline, Study.last_received_at)
    ).all()
    per_pipeline: dict[str, list[float]] = {}
    for pipeline, received, delivered in rows:
        per_pipeline.setdefault(pipeline, []).append((delivered - received).total_seconds())
    return {
        pipeline: (_percentile(values, 0.5), _percentile(values, 0.95), len(values))
        for pipeline, values in sorted(per_pipeline.items())
    }


def oldest_waiting_job(session: Session) -> Job | None:
    """The queued job that has waited longest."""
    return session.scalar(
        select(Job).where(Job.state == JobState.QUEUED).order_by(Job.enqueued_at, Job.id).limit(1)
    )


@dataclass
class Overview:
    """Everything the overview page shows."""

    now: datetime
    checks: list[Check]
    depths: dict[str, int]
    volumes: dict[str, dict[str, int]]
    time_to_result: dict[str, tuple[float, float, int]]
    oldest: Job | None
    routing_paused: bool
    paused_destinations: list[str] = field(default_factory=list)
    refusals: list[RefusalSummary] = field(default_factory=list)


def overview(session: Session, settings: Settings, trend: DiskTrend) -> Overview:
    """Read every number of the overview page."""
    now = utcnow()
    flags = paused_flags(session)
    checks = [
        scp_check(settings),
        scheduler_check(session, settings, now),
        worker_check(session, settings, now),
        broker_check(settings),
        database_check(session),
        disk_check(settings, trend),
    ]
    return Overview(
        now=now,
        checks=checks,
        depths=queue_depths(session, settings, now),
        volumes=volumes(session, now),
        time_to_result=time_to_result(session, now),
        oldest=oldest_waiting_job(session),
        refusals=recent_refusals(session, now),
        routing_paused=ROUTING in flags,
        paused_destinations=[
            name.removeprefix(DESTINATION_PREFIX)
            for name in flags
            if name.startswith(DESTINATION_PREFIX)
        ],
    )
