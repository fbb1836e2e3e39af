"""Running one job: load the series, run the pipeline, write SEG and SR, plan deliveries.

``execute_job`` asserts the state of the world first: a job that already
succeeded or failed is left alone, so a redelivered message does nothing.
Results carry UIDs derived from the job's input, so a re-run overwrites the
same files and the PACS receives the same objects, never duplicates.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import __version__
from core.db.models import Instance, Job, JobState, Result, utcnow
from core.db.session import session_scope
from core.errors import PipelineError
from core.files import write_durably
from core.uids import ResultUIDs
from worker.dispatch import plan_deliveries
from worker.heartbeat import Heartbeat

if TYPE_CHECKING:
    from celery import Celery

    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902


class JobOutcome(enum.StrEnum):
    """What one execution of the job task did."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class JobTimings:
    """Seconds spent in each phase of one job run."""

    load: float = 0.0
    inference: float = 0.0
    write: float = 0.0


@dataclass(frozen=True)
class ClaimedJob:
    """The facts a worker needs from a job row it has just marked running."""

    id: int
    pipeline: str
    study_uid: str
    series_uid: str
    input_key: str
    instance_paths: list[Path]


def _event(session: Session, job: Job, state: str, message: str | None = None) -> None:
    from worker.dispatch import add_job_event

    add_job_event(session, job, state, message)


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
        _event(session, job, JobState.RUNNING, f"attempt {job.attempts} on {runtime.hostname}")
        paths = session.scalars(select(Instance.path).where(Instance.series_id == job.series_id))
        return ClaimedJob(
            id=job.id,
            pipeline=job.pipeline,
            study_uid=job.study.study_instance_uid,
            series_uid=job.series.series_instance_uid,
            input_key=job.input_key,
            instance_paths=[runtime.spool.absolute(path) for path in paths],
        )


def fail_job(runtime: WorkerRuntime, job_id: int, reason: str) -> None:
    """Mark a job failed with ``reason`` (also used for unexpected task errors)."""
    with session_scope(runtime.session_factory) as session:
        job = session.get(Job, job_id)
        if job is None or job.state == JobState.SUCCEEDED:
            return
        job.state = JobState.FAILED
        job.error = reason
        job.finished_at = utcnow()
        _event(session, job, JobState.FAILED, reason)
    log.warning("job %d failed: %s", job_id, reason)


def _write(dataset: Dataset, path: Path) -> int:
    return write_durably(path, lambda handle: dataset.save_as(handle, enforce_file_format=True))


def _produce(runtime: WorkerRuntime, claimed: ClaimedJob, timings: JobTimings) -> list[Dataset]:
    """Load, analyse and build the SEG and SR of one job (no database access)."""
    from pipelines.base import measure_segments
    from pipelines.io import load_series
    from pipelines.outputs import build_measurement_report, build_segmentation
    from pipelines.outputs.provenance import ResultProvenance
    from pipelines.registry import load_pipeline

    pipeline = load_pipeline(claimed.pipeline)
    spec = pipeline.spec
    start = time.perf_counter()
    data = load_series(claimed.instance_paths)
    timings.load = time.perf_counter() - start

    start = time.perf_counter()
    result = pipeline.run(data)
    measurements = measure_segments(data, result)
    timings.inference = time.perf_counter() - start

    start = time.perf_counter()
    uids = ResultUIDs.for_job(
        study_uid=claimed.study_uid,
        series_uid=claimed.series_uid,
        pipeline=spec.name,
        version=spec.version,
        key=claimed.input_key,
    )
    provenance = ResultProvenance(
        node_version=__version__,
        pipeline_name=spec.name,
        pipeline_version=spec.version,
        device_serial_number=runtime.settings.ae_title,
        parameters=dict(pipeline.parameters),
        algorithm_family=pipeline.algorithm_family,
    )
    seg = build_segmentation(
        data,
        result,
        series_instance_uid=uids.seg_series,
        sop_instance_uid=uids.seg_instance,
        series_number=SEG_SERIES_NUMBER,
        provenance=provenance,
    )
    sr = build_measurement_report(
        data,
        measurements,
        seg,
        series_instance_uid=uids.sr_series,
        sop_instance_uid=uids.sr_instance,
        series_number=SR_SERIES_NUMBER,
        provenance=provenance,
        intensity_unit=pipeline.intensity_unit,
    )
    return [seg, sr]


def _record_results(
    runtime: WorkerRuntime, claimed: ClaimedJob, objects: list[Dataset], timings: JobTimings
) -> list[int]:
    """Write result files, record results and deliveries, mark the job succeeded."""
    start = time.perf_counter()
    folder = runtime.results_dir / str(claimed.id)
    written = []
    for kind, dataset in zip(("seg", "sr"), objects, strict=True):
        path = folder / f"{kind}.dcm"
        written.append((kind, dataset, path, _write(dataset, path)))
    timings.write = time.perf_counter() - start

    destinations = [str(destination) for destination in runtime.settings.destinations]
    with session_scope(runtime.session_factory) as session:
        job = session.get_one(Job, claimed.id)
        delivery_ids = []
        for kind, dataset, path, size in written:
            result = session.scalars(
                select(Result).where(Result.sop_instance_uid == dataset.SOPInstanceUID)
            ).one_or_none()
            if result is None:
                result = Result(job_id=job.id, kind=kind, sop_instance_uid=dataset.SOPInstanceUID)
                session.add(result)
            result.sop_class_uid = dataset.SOPClassUID
            result.series_instance_uid = dataset.SeriesInstanceUID
            result.path = str(path)
            result.size_bytes = size
            session.flush()
            delivery_ids += plan_deliveries(session, result, destinations)
        job.state = JobState.SUCCEEDED
        job.finished_at = utcnow()
        job.load_seconds = timings.load
        job.inference_seconds = timings.inference
        job.write_seconds = timings.write
        _event(
            session,
            job,
            JobState.SUCCEEDED,
            f"{len(written)} results, {len(delivery_ids)} deliveries planned",
        )
    return delivery_ids


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
        with Heartbeat(runtime.session_factory, job_id, settings.job_heartbeat_seconds):
            if settings.test_pipeline_delay_seconds:
                time.sleep(settings.test_pipeline_delay_seconds)
            objects = _produce(runtime, claimed, timings)
    except PipelineError as exc:
        fail_job(runtime, job_id, str(exc))
        return JobOutcome.FAILED
    delivery_ids = _record_results(runtime, claimed, objects, timings)
    log.info(
        "job %d succeeded: load %.2fs, inference %.2fs, write %.2fs",
        job_id,
        timings.load,
        timings.inference,
        timings.write,
    )
    if app is not None:
        from worker.dispatch import Dispatcher

        dispatcher = Dispatcher(app, runtime.session_factory, runtime.settings)
        for delivery_id in delivery_ids:
            dispatcher.enqueue_delivery(delivery_id)
    return JobOutcome.SUCCEEDED
