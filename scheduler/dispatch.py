"""From a stable study to queued jobs, and from the database back onto the queue.

Rows are committed first and messages sent after, so a worker never sees an
id the database does not know.  If sending fails (broker down) the row stays
``queued`` and :meth:`Dispatcher.recover` sends it again later: the database
is the source of truth, the queue only carries work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from core.config import Settings
from core.control import ROUTING, is_paused
from core.db.models import (
    Delivery,
    DeliveryState,
    Hl7Message,
    Hl7State,
    Job,
    JobState,
    Series,
    Study,
    StudyState,
    utcnow,
)
from core.db.session import session_scope
from core.errors import ConfigurationError
from core.routing import SeriesFacts, match_rules
from core.uids import input_key
from pipelines.registry import get_spec
from scheduler.multiseries import Companions, fill_roles, record_inputs
from worker.history import add_job_event, plan_deliveries, reset_delivery
from worker.queues import RUN_JOB, enqueue, enqueue_delivery, enqueue_hl7

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    """What one recovery sweep sent again or gave up on."""

    resent_jobs: list[int] = field(default_factory=list)
    failed_jobs: list[int] = field(default_factory=list)
    resent_deliveries: list[int] = field(default_factory=list)
    resent_hl7: list[int] = field(default_factory=list)

    @property
    def any(self) -> bool:
        """Whether the sweep did anything."""
        return bool(
            self.resent_jobs or self.failed_jobs or self.resent_deliveries or self.resent_hl7
        )


@dataclass
class RoutingOutcome:
    """What routing one study did: new jobs, jobs that already existed, and why not others."""

    new_job_ids: list[int] = field(default_factory=list)
    existing_job_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    waiting: bool = False


def series_facts(series: Series) -> SeriesFacts:
    """The routing view of a series row."""
    return SeriesFacts(
        modality=series.modality,
        sop_class_uid=series.sop_class_uid,
        body_part=series.body_part,
        series_description=series.series_description,
        calling_ae=series.calling_ae,
        instance_count=series.instance_count,
    )


class Dispatcher:
    """Creates jobs for stable studies and puts job and delivery ids on the queue."""

    def __init__(
        self, app: Celery, session_factory: sessionmaker[Session], settings: Settings
    ) -> None:
        self.app = app
        self.session_factory = session_factory
        self.settings = settings

    def route_study(self, study_id: int, now: datetime | None = None) -> RoutingOutcome | None:
        """Route a study that has been quiet for the stability time.

        Returns None when the study is not (or no longer) due: another
        scheduler took it, or an instance arrived meanwhile.
        """
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.stability_seconds)
        with session_scope(self.session_factory) as session:
            if is_paused(session, ROUTING):
                return None  # stays receiving: routed once an operator resumes routing
            claimed = session.execute(
                update(Study)
                .where(
                    Study.id == study_id,
                    Study.state == StudyState.RECEIVING,
                    Study.last_received_at <= cutoff,
                )
                .values(state=StudyState.ROUTED, routed_at=now)
            ).rowcount
            if not claimed:
                return None
            outcome = self._plan_jobs(session, study_id, now)
        for job_id in outcome.new_job_ids:
            self.enqueue_job(job_id)
        return outcome

    def _plan_jobs(self, session: Session, study_id: int, now: datetime) -> RoutingOutcome:
        outcome = RoutingOutcome()
        study = session.get_one(Study, study_id)
        series_rows = session.scalars(
            select(Series)
            .where(Series.study_id == study_id)
            .options(selectinload(Series.instances))
        ).all()
        for series in series_rows:
            rules = match_rules(self.settings.routing_rules, series_facts(series))
            if not rules:
                outcome.notes.append(f"series {series.series_instance_uid}: no rule matched")
            for rule in rules:
                self._plan_job(session, study, series, rule.name, rule.pipeline, now, outcome)
        if outcome.waiting:
            study.state = StudyState.RECEIVING  # routed again: a multi-series input is incomplete
        elif outcome.new_job_ids or outcome.existing_job_ids:
            study.state = StudyState.ROUTED
        else:
            study.state = StudyState.UNROUTED
        study.routing_note = "; ".join(outcome.notes) or None
        log.info(
            "study %s routed: %d new jobs, %d already done, %d notes",
            study.study_instance_uid,
            len(outcome.new_job_ids),
            len(outcome.existing_job_ids),
            len(outcome.notes),
        )
        return outcome

    def _plan_job(
        self,
        session: Session,
        study: Study,
        series: Series,
        rule_name: str,
        pipeline: str,
        now: datetime,
        outcome: RoutingOutcome,
    ) -> None:
        uid = series.series_instance_uid
        try:
            spec = get_spec(pipeline, self.settings.models_path)
        except ConfigurationError as exc:
            outcome.notes.append(f"series {uid}: rule {rule_name}: {exc}")
            return
        if series.modality not in spec.modalities:
            outcome.notes.append(
                f"series {uid}: rule {rule_name}: {pipeline} does not accept {series.modality}"
            )
            return
        roles: Companions = {}
        if spec.inputs:
            found, note, waiting = fill_roles(
                study, series, spec, now, self.settings.multi_series_wait_seconds
            )
            outcome.waiting |= waiting
            outcome.notes.extend([note] if note else [])
            if found is None:
                return
            roles = found
        inputs = list(roles.values()) or [series]
        key = input_key(i.sop_instance_uid for item in inputs for i in item.instances)
        existing = session.scalars(
            select(Job).where(
                Job.pipeline == pipeline, Job.series_id == series.id, Job.input_key == key
            )
        ).one_or_none()
        if existing is not None:
            outcome.existing_job_ids.append(existing.id)
            outcome.notes.append(f"series {uid}: {pipeline} already ran on these instances")
            return
        job = Job(
            study_id=study.id,
            series_id=series.id,
            rule_name=rule_name,
            pipeline=pipeline,
            pipeline_version=spec.version,
            queue=spec.queue,
            input_key=key,
            state=JobState.QUEUED,
            created_at=now,
            enqueued_at=now,
        )
        session.add(job)
        session.flush()
        record_inputs(session, job, roles)
        add_job_event(session, job, JobState.QUEUED, f"rule {rule_name}")
        outcome.new_job_ids.append(job.id)

    def enqueue_job(self, job_id: int) -> bool:
        """Put a job id on its pipeline's queue; False (and logged) if the broker refused."""
        with session_scope(self.session_factory) as session:
            queue = session.get_one(Job, job_id).queue
        return enqueue(self.app, RUN_JOB, job_id, queue)

    def enqueue_delivery(self, delivery_id: int, countdown: float = 0) -> bool:
        """Put a delivery id on the send queue, after ``countdown`` seconds."""
        return enqueue_delivery(self.app, delivery_id, countdown)

    def enqueue_hl7(self, message_id: int, countdown: float = 0) -> bool:
        """Put an HL7 message id on the send queue, after ``countdown`` seconds."""
        return enqueue_hl7(self.app, message_id, countdown)

    def retry_deliveries(
        self,
        states: tuple[DeliveryState, ...] = (DeliveryState.FAILED,),
        *,
        destination: str | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[int]:
        """Send deliveries in ``states`` again with a fresh attempt budget (retry-deliveries).

        ``destination`` limits it to one destination (the console's bulk retry),
        ``ids`` to the given deliveries (a retry of one failed delivery).
        """
        chosen = Delivery.state.in_(states)
        if destination is not None:
            chosen &= Delivery.destination == destination
        if ids is not None:
            chosen &= Delivery.id.in_(ids)
        with session_scope(self.session_factory) as session:
            deliveries = session.scalars(select(Delivery).where(chosen)).all()
            for delivery in deliveries:
                reset_delivery(delivery)
            ids = [delivery.id for delivery in deliveries]
        for delivery_id in ids:
            self.enqueue_delivery(delivery_id)
        return ids

    def replay_job(self, job_id: int, *, rerun: bool = False) -> list[int]:
        """Send a job's results again to every configured destination, or run the job again.

        Result UIDs are derived from the job's input, so a replay or re-run
        never makes the PACS hold two copies.  Returns the delivery ids sent,
        or ``[job_id]`` when the job was re-queued.

        Raises
        ------
        ConfigurationError
            If the job does not exist, is still queued or running, or (without
            ``rerun``) has no results to send or none of a SEG type a
            destination takes (see :func:`plan_deliveries`).
        """
        destinations = self.settings.destinations
        with session_scope(self.session_factory) as session:
            job = session.get(Job, job_id)
            if job is None or job.state in (JobState.QUEUED, JobState.RUNNING):
                raise ConfigurationError(f"job {job_id} is unknown, queued or running")
            if rerun:
                job.state = JobState.QUEUED
                job.enqueued_at = utcnow()
                job.error = None
                add_job_event(session, job, JobState.QUEUED, "re-run requested by operator")
                planned = [job_id]
            elif not job.results:
                raise ConfigurationError(f"job {job_id} has no results to send")
            else:
                try:
                    planned = plan_deliveries(session, job.results, destinations, resend=True)
                except ConfigurationError as exc:
                    raise ConfigurationError(f"job {job_id}: {exc}") from exc
        for item_id in planned:
            if rerun:
                self.enqueue_job(item_id)
            else:
                self.enqueue_delivery(item_id)
        return planned

    def recover(self, now: datetime | None = None, *, startup: bool = False) -> RecoveryReport:
        """Put back on the queue what the queue lost; the database says what that is.

        * ``running`` jobs whose heartbeat is older than ``job_stale_seconds``
          (their worker died) go back to ``queued``, or fail after
          ``job_max_attempts``;
        * ``queued`` jobs are sent again: all of them at start-up, later only
          those waiting longer than ``job_requeue_seconds`` (a lost message);
        * pending or retrying deliveries whose time has passed are sent again,
          and so are those whose storage commitment failed while attempts remain,
          and HL7 result messages waiting to be sent.

        Tasks only act on rows in the state they expect, so a message that
        was not lost after all does nothing twice.
        """
        now = now or utcnow()
        settings = self.settings
        report = RecoveryReport()
        with session_scope(self.session_factory) as session:
            self._requeue_stale_jobs(session, now, report)
            waited = Job.state == JobState.QUEUED
            if not startup:
                waited &= Job.enqueued_at <= now - timedelta(seconds=settings.job_requeue_seconds)
            for job in session.scalars(select(Job).where(waited)):
                job.enqueued_at = now
                report.resent_jobs.append(job.id)
            overdue = now - timedelta(seconds=0 if startup else settings.recovery_interval_seconds)
            report.resent_deliveries = list(
                session.scalars(
                    select(Delivery.id).where(
                        Delivery.state.in_([DeliveryState.PENDING, DeliveryState.RETRYING])
                        | (
                            (Delivery.state == DeliveryState.COMMIT_FAILED)
                            & Delivery.next_attempt_at.is_not(None)
                        ),
                        func.coalesce(Delivery.next_attempt_at, Delivery.created_at) <= overdue,
                    )
                ).all()
            )
            report.resent_hl7 = list(
                session.scalars(
                    select(Hl7Message.id).where(
                        Hl7Message.state.in_([Hl7State.PENDING, Hl7State.RETRYING]),
                        func.coalesce(Hl7Message.next_attempt_at, Hl7Message.created_at) <= overdue,
                    )
                ).all()
            )
        for job_id in report.resent_jobs:
            self.enqueue_job(job_id)
        for delivery_id in report.resent_deliveries:
            self.enqueue_delivery(delivery_id)
        for message_id in report.resent_hl7:
            self.enqueue_hl7(message_id)
        if report.any:
            log.info("recovery: %s", report)
        return report

    def _requeue_stale_jobs(self, session: Session, now: datetime, report: RecoveryReport) -> None:
        cutoff = now - timedelta(seconds=self.settings.job_stale_seconds)
        stale = session.scalars(
            select(Job).where(
                Job.state == JobState.RUNNING,
                func.coalesce(Job.heartbeat_at, Job.started_at) <= cutoff,
            )
        ).all()
        for job in stale:
            lost = f"worker {job.worker} lost (no heartbeat since {job.heartbeat_at:%H:%M:%S})"
            if job.attempts >= self.settings.job_max_attempts:
                job.state = JobState.FAILED
                job.error = f"{lost}; gave up after {job.attempts} attempts"
                job.finished_at = now
                add_job_event(session, job, JobState.FAILED, job.error)
                report.failed_jobs.append(job.id)
            else:
                job.state = JobState.QUEUED
                job.enqueued_at = now
                add_job_event(session, job, JobState.QUEUED, f"{lost}; re-queued")
                report.resent_jobs.append(job.id)
