"""Running one job: load the input, check its domain, run the pipeline, write results.

``execute_job`` asserts the state of the world first: a job that already
succeeded, failed or was skipped is left alone, so a redelivered message
does nothing.  Results (SEG + SR for segmentation, once per SEG type the
destinations take; an SR for classification and detection) carry UIDs
derived from the job's input, so a re-run overwrites the same files and the
PACS receives the same objects, never duplicates.  A series outside the
pipeline's validated input domain is skipped with the reasons recorded, or
processed with the SR saying so, per the pipeline's ``domain_policy``; one
whose pixels lack what the pipeline relies on (a chest, a head) is always
skipped, with what is missing recorded.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Instance, Job, JobState, Result, utcnow
from core.db.session import session_scope
from core.errors import ConfigurationError, ContentOutsideDomain, PipelineError
from core.files import write_durably
from core.uids import ResultUIDs
from worker.heartbeat import Heartbeat
from worker.history import add_job_event, plan_deliveries
from worker.queues import enqueue_delivery

if TYPE_CHECKING:
    from celery import Celery

    from pipelines.base import Pipeline, PipelineInput, PipelineResult
    from worker.results import BuiltResults, ResultObject
    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

#: Exit status of a worker process that ended itself because a job hung (EX_TEMPFAIL).
WORKER_HUNG_EXIT_CODE = 75


class JobOutcome(enum.StrEnum):
    """What one execution of the job task did."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    OUTSIDE_DOMAIN = "outside-domain"


@dataclass
class JobTimings:
    """Seconds spent in each phase of one job run (``write`` = building + writing results)."""

    load: float = 0.0
    inference: float = 0.0
    write: float = 0.0


@dataclass
class Produced:
    """What ``_produce`` made: result objects and the facts recorded on the job."""

    objects: list[ResultObject]
    device: str
    weights_sha256: str | None
    note: str | None = None


class OutsideDomain(Exception):
    """The input is outside the pipeline's validated domain (policy ``skip``) or lacks content."""


@dataclass(frozen=True)
class ClaimedJob:
    """The facts a worker needs from a job row it has just marked running."""

    id: int
    pipeline: str
    study_uid: str
    series_uid: str
    input_key: str
    instance_paths: list[Path]
    companion_paths: list[list[Path]] = field(default_factory=list)


def _view(runtime: WorkerRuntime, session: Session, job: Job) -> ClaimedJob:
    """The facts of ``job`` a worker needs, with absolute paths of its input instances.

    A multi-series job's further series (``job_inputs`` other than the
    primary) come as ``companion_paths``, in role order.
    """

    def paths_of(series_id: int) -> list[Path]:
        paths = session.scalars(select(Instance.path).where(Instance.series_id == series_id))
        return [runtime.spool.absolute(path) for path in paths]

    return ClaimedJob(
        id=job.id,
        pipeline=job.pipeline,
        study_uid=job.study.study_instance_uid,
        series_uid=job.series.series_instance_uid,
        input_key=job.input_key,
        instance_paths=paths_of(job.series_id),
        companion_paths=[
            paths_of(item.series_id) for item in job.inputs if item.series_id != job.series_id
        ],
    )


def _claim(runtime: WorkerRuntime, job_id: int) -> ClaimedJob | None:
    with session_scope(runtime.session_factory) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.state != JobState.QUEUED:
            return None
        now = utcnow()
        if job.attempts == 0 and job.enqueued_at is not None:
            job.queue_wait_seconds = (now - job.enqueued_at).total_seconds()
        job.state = JobState.RUNNING
        job.attempts += 1
        job.started_at = now
        job.heartbeat_at = now
        job.worker = runtime.hostname
        job.error = None
        add_job_event(
            session, job, JobState.RUNNING, f"attempt {job.attempts} on {runtime.hostname}"
        )
        return _view(runtime, session, job)


def _upcoming(runtime: WorkerRuntime, current: int) -> ClaimedJob | None:
    """The oldest other queued job on this worker's queues: the likely next one to prefetch."""
    settings = runtime.settings
    if not settings.prefetch:
        return None
    with session_scope(runtime.session_factory) as session:
        job = session.scalars(
            select(Job)
            .where(
                Job.state == JobState.QUEUED,
                Job.queue.in_(settings.worker_queues),
                Job.id != current,
            )
            .order_by(Job.enqueued_at, Job.id)
            .limit(1)
        ).one_or_none()
        if job is None:
            return None
        return _view(runtime, session, job)


def _finish(runtime: WorkerRuntime, job_id: int, state: JobState, reason: str) -> None:
    """End a job (not already succeeded) in ``state`` with ``reason``, recorded as an event."""
    with session_scope(runtime.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.state == JobState.SUCCEEDED:
            return
        job.state = state
        job.error = reason
        job.finished_at = utcnow()
        add_job_event(session, job, state, reason)


def fail_job(runtime: WorkerRuntime, job_id: int, reason: str) -> None:
    """Mark a job failed with ``reason`` (also used for unexpected task errors)."""
    _finish(runtime, job_id, JobState.FAILED, reason)
    log.warning("job %d failed: %s", job_id, reason)


def skip_job(runtime: WorkerRuntime, job_id: int, reason: str) -> None:
    """Mark a job skipped with ``reason`` (its input is outside the validated domain)."""
    _finish(runtime, job_id, JobState.SKIPPED, reason)
    log.info("job %d skipped: %s", job_id, reason)


def _write(dataset: Dataset, path: Path) -> int:
    return write_durably(path, lambda handle: dataset.save_as(handle, enforce_file_format=True))


def _produce(
    runtime: WorkerRuntime,
    claimed: ClaimedJob,
    timings: JobTimings,
    upcoming: ClaimedJob | None = None,
) -> Produced:
    """Load, check the domain, analyse and build the result objects (no database access).

    Once this job's input is loaded, the input of ``upcoming`` (the job this
    worker will probably run next) starts loading in the background while
    this one infers; see :mod:`worker.prefetch`.

    Raises
    ------
    OutsideDomain
        The input is outside the validated domain and the policy is ``skip``,
        or the pipeline found the image does not show what it analyses.
    PipelineError
        The input cannot be analysed.
    """
    from pipelines.registry import load_pipeline

    settings = runtime.settings
    try:
        pipeline = load_pipeline(claimed.pipeline, settings.models_path, settings.inference_device)
    except ConfigurationError as exc:
        raise PipelineError(f"pipeline {claimed.pipeline} is not usable: {exc}") from exc
    data = _load_input(runtime, claimed, timings, upcoming)
    note = _domain_note(pipeline, data)
    result = _infer(runtime, pipeline, data, timings)
    built = _build_results(runtime, claimed, pipeline, data, result, note is not None, timings)
    if built.note:
        log.info("job %d: %s", claimed.id, built.note)
    return Produced(
        objects=built.objects,
        device=pipeline.device,
        weights_sha256=pipeline.weights_sha256,
        note="; ".join(part for part in (note, built.note) if part) or None,
    )


def _load_input(
    runtime: WorkerRuntime,
    claimed: ClaimedJob,
    timings: JobTimings,
    upcoming: ClaimedJob | None,
) -> PipelineInput:
    """The job's input (prefetched if it was) with its companion series; ``upcoming`` prefetched.

    The input of ``upcoming`` then loads in the background while this job
    infers (:mod:`worker.prefetch`).
    """
    from pipelines.io import add_companions

    start = time.perf_counter()
    data, prefetched = runtime.prefetcher.take(
        claimed.id, claimed.input_key, claimed.instance_paths
    )
    if claimed.companion_paths:
        data = add_companions(data, claimed.companion_paths)
    timings.load = time.perf_counter() - start
    if prefetched:
        log.info("job %d: input was prefetched during the previous job", claimed.id)
    if upcoming is not None:
        runtime.prefetcher.prefetch(upcoming.id, upcoming.input_key, upcoming.instance_paths)
    return data


def _domain_note(pipeline: Pipeline, data: PipelineInput) -> str | None:
    """Why ``data`` is outside the pipeline's validated domain, when the policy lets it run.

    None when the input is inside the domain; the SR then says nothing of it.

    Raises
    ------
    OutsideDomain
        Outside the domain under policy ``skip``, spacing unknown for a
        pipeline that measures in mm, or image content the pipeline needs missing.
    """
    if data.unknown_spacing and pipeline.measures_mm:
        raise OutsideDomain(f"{data.unknown_spacing}; {pipeline.spec.name} measures in mm")
    violations = pipeline.domain.violations(data.datasets, spacing_needed=pipeline.measures_mm)
    note = None
    if violations:
        reason = "outside validated input domain: " + "; ".join(violations)
        if pipeline.domain_policy == "skip":
            raise OutsideDomain(reason)
        note = reason
    missing = pipeline.missing_content(data)
    if missing:
        raise OutsideDomain("image content missing: " + "; ".join(missing))
    return note


def _infer(
    runtime: WorkerRuntime, pipeline: Pipeline, data: PipelineInput, timings: JobTimings
) -> PipelineResult:
    """The pipeline's result on ``data``, run while holding one of its device's job slots.

    Raises
    ------
    OutsideDomain
        The pipeline found the image does not show what it analyses.
    """
    from pipelines.projections import run_pipeline
    from worker.gpu import device_slot

    settings = runtime.settings
    start = time.perf_counter()
    try:
        with device_slot(settings.locks_dir, pipeline.device, settings.gpu_jobs_per_device):
            result = run_pipeline(pipeline, data)
    except ContentOutsideDomain as exc:
        raise OutsideDomain(f"outside validated input domain: {exc}") from exc
    timings.inference = time.perf_counter() - start
    return result


def _build_results(
    runtime: WorkerRuntime,
    claimed: ClaimedJob,
    pipeline: Pipeline,
    data: PipelineInput,
    result: PipelineResult,
    outside_domain: bool,
    timings: JobTimings,
) -> BuiltResults:
    """The job's result objects, with UIDs derived from its input so a re-run rebuilds them.

    The time taken is the start of ``timings.write``; writing the files adds to it.
    """
    from worker.results import build_result_objects

    settings = runtime.settings
    start = time.perf_counter()
    uids = ResultUIDs.for_job(
        study_uid=claimed.study_uid,
        series_uid=claimed.series_uid,
        pipeline=pipeline.spec.name,
        version=pipeline.spec.version,
        key=claimed.input_key,
    )
    built = build_result_objects(
        pipeline,
        data,
        result,
        uids,
        ae_title=settings.ae_title,
        outside_domain=outside_domain,
        seg_types=settings.seg_types,
        destinations=settings.destinations,
    )
    timings.write = time.perf_counter() - start
    return built


def _record_results(
    runtime: WorkerRuntime, claimed: ClaimedJob, produced: Produced, timings: JobTimings
) -> list[int]:
    """Write result files, record results, provenance and deliveries, mark the job succeeded."""
    start = time.perf_counter()
    folder = runtime.results_dir / str(claimed.id)
    written = []
    for item in produced.objects:
        path = folder / item.file_name
        written.append((item, path, _write(item.dataset, path)))
    timings.write += time.perf_counter() - start

    with session_scope(runtime.session_factory) as session:
        job = session.get_one(Job, claimed.id)
        results = []
        for item, path, size in written:
            dataset = item.dataset
            result = session.scalars(
                select(Result).where(Result.sop_instance_uid == dataset.SOPInstanceUID)
            ).one_or_none()
            if result is None:
                result = Result(job_id=job.id, sop_instance_uid=dataset.SOPInstanceUID)
                session.add(result)
            result.kind = item.kind
            result.seg_type = item.seg_type
            result.variant = item.variant
            result.sop_class_uid = dataset.SOPClassUID
            result.series_instance_uid = dataset.SeriesInstanceUID
            result.path = str(path)
            result.size_bytes = size
            session.flush()
            results.append(result)
        delivery_ids = plan_deliveries(session, results, runtime.settings.destinations)
        job.state = JobState.SUCCEEDED
        job.finished_at = utcnow()
        job.device = produced.device
        job.weights_sha256 = produced.weights_sha256
        job.load_seconds = timings.load
        job.inference_seconds = timings.inference
        job.write_seconds = timings.write
        add_job_event(
            session,
            job,
            JobState.SUCCEEDED,
            f"{len(written)} results, {len(delivery_ids)} deliveries planned"
            + (f"; {produced.note}" if produced.note else ""),
        )
    return delivery_ids


def _abandon_hung_job(runtime: WorkerRuntime, job_id: int) -> None:
    """Record a job past its time limit as failed, then end this stuck worker process.

    The supervisor (``ainode run``, systemd) starts a fresh worker; the
    job's message is not acknowledged, and its redelivery finds it failed.
    """
    limit = runtime.settings.job_time_limit_seconds
    fail_job(runtime, job_id, f"exceeded the time limit of {limit} s (worker restarted)")
    os._exit(WORKER_HUNG_EXIT_CODE)


def execute_job(runtime: WorkerRuntime, job_id: int, app: Celery | None = None) -> JobOutcome:
    """Run job ``job_id`` to success or a recorded failure; enqueue its deliveries."""
    claimed = _claim(runtime, job_id)
    if claimed is None:
        log.info("job %d is not queued (running elsewhere, done or unknown); skipped", job_id)
        return JobOutcome.SKIPPED
    log.info("job %d: %s on series %s", job_id, claimed.pipeline, claimed.series_uid)
    timings = JobTimings()
    settings = runtime.settings
    try:
        with Heartbeat(
            runtime.session_factory,
            job_id,
            settings.job_heartbeat_seconds,
            time_limit=settings.job_time_limit_seconds,
            on_timeout=lambda: _abandon_hung_job(runtime, job_id),
        ):
            produced = _produce(runtime, claimed, timings, _upcoming(runtime, job_id))
    except OutsideDomain as exc:
        skip_job(runtime, job_id, str(exc))
        return JobOutcome.OUTSIDE_DOMAIN
    except PipelineError as exc:
        fail_job(runtime, job_id, str(exc))
        return JobOutcome.FAILED
    delivery_ids = _record_results(runtime, claimed, produced, timings)
    log.info(
        "job %d succeeded: load %.2fs, inference %.2fs, write %.2fs",
        job_id,
        timings.load,
        timings.inference,
        timings.write,
    )
    if app is not None:
        for delivery_id in delivery_ids:
            enqueue_delivery(app, delivery_id)
    return JobOutcome.SUCCEEDED
