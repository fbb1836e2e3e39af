"""Prometheus ``/metrics``: read from the database at scrape time.

The node's processes (SCP, workers, console) are separate; rather than the
client's multiprocess mode, one collector reads every number from SQL when
Prometheus scrapes, so the figures are those of the source of truth and
survive restarts.  Counters are ``_total`` sums over rows (they only fall if
rows are deleted); labels carry pipelines, stages, states, destinations and
C-STORE statuses, never UIDs, AE titles or patient data.  A scrape with
100,000 jobs takes seconds, so its text is kept for ``AINODE_METRICS_CACHE_SECONDS``
and served again to the scrapes that follow (:class:`CachedMetrics`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import ColumnElement, Select, case, func, literal_column, select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.control import DESTINATION_PREFIX, ROUTING, paused_flags
from core.db.models import (
    Delivery,
    Instance,
    InstanceRefusal,
    Job,
    JobState,
    Result,
    Study,
    StudyState,
    utcnow,
)
from core.db.session import session_scope
from web.overview import DiskTrend, processes_alive, queue_depths

#: Buckets (seconds) of time to result and stage durations: 1 s .. 1 h.
BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STAGE_COLUMNS = {
    "queue_wait": Job.queue_wait_seconds,
    "load": Job.load_seconds,
    "inference": Job.inference_seconds,
    "write": Job.write_seconds,
    "send": Job.send_seconds,
}


def seconds_between(dialect: str, later: Any, earlier: Any) -> ColumnElement[float]:
    """SQL for ``later - earlier`` in seconds, on SQLite or PostgreSQL."""
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * literal_column("86400.0")
    return func.extract("epoch", later - earlier)


def observe(
    session: Session, observed: Select[Any], label_count: int
) -> dict[tuple[str, ...], tuple[list[int], int, float]]:
    """Cumulative bucket counts, count and sum per label tuple of ``observed`` (labels, value).

    The value is computed once per row (a materialised CTE: the time to result
    is a date difference) and each row is counted in its first bucket.
    """
    rows = observed.cte("observed").prefix_with("MATERIALIZED")
    value = list(rows.c)[label_count]
    labels = list(rows.c)[:label_count]
    bucket = case(*((value <= bound, index) for index, bound in enumerate(BUCKETS)), else_=-1)
    out: dict[tuple[str, ...], tuple[list[int], int, float]] = {}
    for *names, index, count, total in session.execute(
        select(*labels, bucket, func.count(), func.sum(value))
        .where(value.is_not(None))
        .group_by(*labels, bucket)
    ):
        counts, seen, summed = out.get(tuple(names), ([0] * len(BUCKETS), 0, 0.0))
        for position in range(index, len(BUCKETS)) if index >= 0 else ():
            counts[position] += count
        out[tuple(names)] = (counts, seen + count, summed + float(total or 0.0))
    return out


def _histogram(
    family: HistogramMetricFamily,
    labels: Sequence[str],
    observed: tuple[list[int], int, float],
) -> None:
    counts, count, total = observed
    buckets = [(str(bound), n) for bound, n in zip(BUCKETS, counts, strict=True)]
    buckets.append(("+Inf", count))
    family.add_metric(list(labels), buckets, total)


class DatabaseCollector(Collector):
    """Every ``ainode_`` metric, read from SQL on each scrape."""

    def __init__(
        self, settings: Settings, session_factory: sessionmaker[Session], trend: DiskTrend
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.trend = trend

    def collect(self) -> Iterator[Metric]:
        """Read the database once and yield the metric families."""
        with session_scope(self.session_factory) as session:
            yield from self._states(session)
            yield from self._counters(session)
            yield from self._histograms(session)
            yield from self._health(session)

    def _states(self, session: Session) -> Iterator[Metric]:
        now = utcnow()
        studies = GaugeMetricFamily("ainode_studies", "Studies by state.", labels=["state"])
        counts = {
            state: count
            for state, count in session.execute(
                select(Study.state, func.count()).group_by(Study.state)
            )
        }
        for state in StudyState:
            studies.add_metric([state.value], counts.get(state, 0))
        yield studies
        jobs = GaugeMetricFamily(
            "ainode_jobs", "Jobs by pipeline and state.", labels=["pipeline", "state"]
        )
        for pipeline, state, count in session.execute(
            select(Job.pipeline, Job.state, func.count()).group_by(Job.pipeline, Job.state)
        ):
            jobs.add_metric([pipeline, state.value], count)
        yield jobs
        deliveries = GaugeMetricFamily(
            "ainode_deliveries",
            "Deliveries by destination and state.",
            labels=["destination", "state"],
        )
        for destination, state, count in session.execute(
            select(Delivery.destination, Delivery.state, func.count()).group_by(
                Delivery.destination, Delivery.state
            )
        ):
            deliveries.add_metric([destination, state.value], count)
        yield deliveries
        stages = GaugeMetricFamily(
            "ainode_queue_depth", "Items waiting in each stage of the node.", labels=["stage"]
        )
        for stage, depth in queue_depths(session, self.settings, now).items():
            stages.add_metric([stage], depth)
        yield stages
        oldest = session.scalar(
            select(func.min(Job.enqueued_at)).where(Job.state == JobState.QUEUED)
        )
        yield GaugeMetricFamily(
            "ainode_oldest_queued_job_age_seconds",
            "Age of the job that has waited longest in the queue (0 when none waits).",
            value=(now - oldest).total_seconds() if oldest is not None else 0.0,
        )

    def _counters(self, session: Session) -> Iterator[Metric]:
        received = session.scalar(select(func.coalesce(func.sum(Instance.times_received), 0)))
        yield CounterMetricFamily(
            "ainode_instances_received",
            "Instances stored by the SCP (repeats of an instance included).",
            value=float(received or 0),
        )
        refused = CounterMetricFamily(
            "ainode_instances_refused",
            "Instances the SCP refused, by the C-STORE status answered and its cause.",
            labels=["status", "cause"],
        )
        for status, cause, count in session.execute(
            select(InstanceRefusal.status, InstanceRefusal.cause, func.sum(InstanceRefusal.count))
            .group_by(InstanceRefusal.status, InstanceRefusal.cause)
            .order_by(InstanceRefusal.status, InstanceRefusal.cause)
        ):
            refused.add_metric([f"0x{status:04X}", cause], float(count or 0))
        yield refused
        attempts = CounterMetricFamily(
            "ainode_delivery_attempts",
            "Delivery attempts by destination and outcome.",
            labels=["destination", "outcome"],
        )
        succeeded = case((Delivery.delivered_at.is_not(None), 1), else_=0)
        for destination, total, ok in session.execute(
            select(Delivery.destination, func.sum(Delivery.attempts), func.sum(succeeded)).group_by(
                Delivery.destination
            )
        ):
            attempts.add_metric([destination, "succeeded"], float(ok or 0))
            attempts.add_metric([destination, "failed"], float((total or 0) - (ok or 0)))
        yield attempts
        finished = CounterMetricFamily(
            "ainode_jobs_finished",
            "Jobs that ended, by pipeline and state.",
            labels=["pipeline", "state"],
        )
        ended = [JobState.SUCCEEDED, JobState.FAILED, JobState.SKIPPED]
        for pipeline, state, count in session.execute(
            select(Job.pipeline, Job.state, func.count())
            .where(Job.state.in_(ended))
            .group_by(Job.pipeline, Job.state)
        ):
            finished.add_metric([pipeline, state.value], float(count))
        yield finished

    def _histograms(self, session: Session) -> Iterator[Metric]:
        dialect = session.get_bind().dialect.name
        ttr = seconds_between(dialect, Delivery.delivered_at, Study.last_received_at)
        time_to_result = HistogramMetricFamily(
            "ainode_time_to_result_seconds",
            "From a study's last received instance to a result confirmed by the destination.",
            labels=["pipeline", "destination"],
        )
        delivered = (
            select(Job.pipeline, Delivery.destination, ttr)
            .join(Study, Study.id == Job.study_id)
            .join(Result, Result.job_id == Job.id)
            .join(Delivery, Delivery.result_id == Result.id)
            .where(Delivery.delivered_at.is_not(None))
        )
        for labels, observed in sorted(observe(session, delivered, 2).items()):
            _histogram(time_to_result, labels, observed)
        yield time_to_result
        stages = HistogramMetricFamily(
            "ainode_stage_duration_seconds",
            "Duration of each stage of a job, by pipeline.",
            labels=["pipeline", "stage"],
        )
        for stage, column in STAGE_COLUMNS.items():
            finished = select(Job.pipeline, column).where(column.is_not(None))
            for (pipeline,), observed in sorted(observe(session, finished, 1).items()):
                _histogram(stages, [pipeline, stage], observed)
        yield stages

    def _health(self, session: Session) -> Iterator[Metric]:
        sample = self.trend.sample(self.settings)
        yield GaugeMetricFamily(
            "ainode_spool_free_bytes", "Free bytes on the spool's file system.", value=sample.free
        )
        yield GaugeMetricFamily(
            "ainode_spool_size_bytes", "Size of the spool's file system.", value=sample.total
        )
        yield GaugeMetricFamily(
            "ainode_workers_alive",
            "Workers whose heartbeat is recent.",
            value=processes_alive(session, self.settings, utcnow(), role="worker"),
        )
        yield GaugeMetricFamily(
            "ainode_scheduler_alive",
            "Schedulers (ainode serve: stability, routing, recovery) whose heartbeat is recent.",
            value=processes_alive(session, self.settings, utcnow(), role="scheduler"),
        )
        flags = paused_flags(session)
        yield GaugeMetricFamily(
            "ainode_routing_paused",
            "1 while an operator has paused routing.",
            value=ROUTING in flags,
        )
        paused = GaugeMetricFamily(
            "ainode_destination_paused",
            "1 while deliveries to a destination are held.",
            labels=["destination"],
        )
        for destination in sorted({str(d) for d in self.settings.destinations}):
            paused.add_metric([destination], float(f"{DESTINATION_PREFIX}{destination}" in flags))
        yield paused
        yield GaugeMetricFamily(
            "ainode_time_to_result_target_seconds",
            "The time to result the node is expected to meet (alert threshold).",
            value=self.settings.time_to_result_target_seconds,
        )


def registry_for(
    settings: Settings, session_factory: sessionmaker[Session], trend: DiskTrend
) -> CollectorRegistry:
    """A registry holding only the node's collector (no process metrics of the console)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(settings, session_factory, trend))
    return registry


class CachedMetrics:
    """The text of ``/metrics``, rendered at most once per ``seconds`` (0: every time).

    Scrapes that arrive while one renders wait for it and get its text, so
    several Prometheus servers, or one retrying, cost the database one read.
    A failed render is not kept: the next scrape tries again.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._seconds = seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._text = b""
        self._rendered_at: float | None = None

    def render(self) -> bytes:
        """The exposition text: the last one if younger than ``seconds``, else a fresh one."""
        if self._seconds <= 0:
            return generate_latest(self._registry)
        with self._lock:
            started = self._clock()
            fresh = self._rendered_at is not None and started - self._rendered_at < self._seconds
            if not fresh:
                self._text = generate_latest(self._registry)
                self._rendered_at = started
            return self._text
