"""Running a job end to end on the worker side: SEG + SR written, recorded, deliveries planned."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta

import highdicom as hd
import pytest
from pydicom import Dataset, dcmread
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Delivery, DeliveryState, Job, JobState, Result, utcnow
from pipelines.phantom import PhantomStudy
from scheduler.dispatch import Dispatcher
from tests.support.bad_values import EXPECTED_CHANGES, with_invalid_values
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.real_data import real_images
from worker.queues import SEND_DELIVERY
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy


def _job_for(
    settings: Settings, factory: sessionmaker[Session], app: RecordingApp, study_id: int
) -> int:
    now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(app, factory, settings).route_study(study_id, now=now)
    assert outcome is not None and len(outcome.new_job_ids) == 1
    return outcome.new_job_ids[0]


def test_job_writes_valid_seg_and_sr_and_plans_deliveries(
    make_settings,
    tmp_path,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> None:
    settings = make_settings(destinations="PACS@127.0.0.1:104")
    runtime = WorkerRuntime.from_settings(settings)
    job_id = _job_for(settings, session_factory, recording_app, spool_study(small_phantom))

    assert execute_job(runtime, job_id, recording_app) == JobOutcome.SUCCEEDED

    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.SUCCEEDED and job.attempts == 1 and job.error is None
        assert None not in (
            job.queue_wait_seconds,
            job.load_seconds,
            job.inference_seconds,
            job.write_seconds,
        )
        assert [event.state for event in job.events] == ["queued", "running", "succeeded"]
        results = {result.kind: result for result in job.results}
        assert set(results) == {"seg", "sr"}
        deliveries = session.scalars(select(Delivery)).all()
        assert {(d.destination, d.state) for d in deliveries} == {
            ("PACS@127.0.0.1:104", DeliveryState.PENDING)
        }
        assert len(deliveries) == 2
    sent = [(name, args) for name, args, _ in recording_app.sent if name == SEND_DELIVERY]
    assert sorted(args[0] for _, args in sent) == sorted(d.id for d in deliveries)

    seg = hd.seg.segread(results["seg"].path)
    sr = hd.sr.srread(results["sr"].path)
    source = small_phantom.datasets[0]
    for dataset in (seg, sr):
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert dataset.PatientID == source.PatientID
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
        assert dataset.Manufacturer == "pacs-ai-node"
        assert any("ct-lungs" in version for version in dataset.SoftwareVersions)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Body", "Left lung", "Right lung"]
    assert dciodvfy_errors(results["seg"].path) == []
    assert dciodvfy_errors(results["sr"].path) == []


def test_rerun_gives_the_same_objects_and_no_new_deliveries(
    make_settings,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> None:
    settings = make_settings(destinations="PACS@127.0.0.1:104")
    runtime = WorkerRuntime.from_settings(settings)
    job_id = _job_for(settings, session_factory, recording_app, spool_study(small_phantom))
    execute_job(runtime, job_id, recording_app)
    with session_factory() as session:
        first = sorted(session.scalars(select(Result.sop_instance_uid)).all())
        session.execute(update(Job).values(state=JobState.QUEUED))
        session.commit()

    assert execute_job(runtime, job_id, recording_app) == JobOutcome.SUCCEEDED
    with session_factory() as session:
        assert sorted(session.scalars(select(Result.sop_instance_uid)).all()) == first
        assert len(session.scalars(select(Delivery)).all()) == 2
        assert session.get_one(Job, job_id).attempts == 2


def test_done_job_is_not_run_again(
    settings, runtime, spool_study, small_phantom, recording_app, session_factory
) -> None:
    job_id = _job_for(settings, session_factory, recording_app, spool_study(small_phantom))
    assert execute_job(runtime, job_id) == JobOutcome.SUCCEEDED
    assert execute_job(runtime, job_id) == JobOutcome.SKIPPED
    assert execute_job(runtime, 999_999) == JobOutcome.SKIPPED


def test_broken_series_fails_the_job_with_a_reason(
    settings, runtime, spool_study, small_phantom, recording_app, session_factory
) -> None:
    study_id = spool_study(small_phantom, skip=(10,))
    job_id = _job_for(settings, session_factory, recording_app, study_id)
    assert execute_job(runtime, job_id) == JobOutcome.FAILED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.FAILED
        assert "spacing" in (job.error or "")
        assert job.events[-1].state == "failed" and job.finished_at is not None
        assert "SECRET" not in job.error


def _head_ct(body_part: str | None) -> list[Dataset]:
    """The real head CT as received, with Body Part Examined set (or removed)."""
    datasets = [dcmread(path) for path in real_images("ct-head-phantom-axial-5mm")]
    for dataset in datasets:
        if body_part is None:
            del dataset.BodyPartExamined
        else:
            dataset.BodyPartExamined = body_part
    return datasets


@pytest.mark.parametrize(
    ("body_part", "reason"),
    [
        ("BRAIN", "outside validated input domain: body part BRAIN not in"),
        (None, "image content missing: no chest-sized body: the body is 139 mm wide"),
        ("CHEST", "image content missing: no chest-sized body: the body is 139 mm wide"),
    ],
    ids=["tagged-brain", "untagged", "mistagged-chest"],
)
def test_head_ct_on_the_default_route_is_skipped_saying_why(
    make_settings,
    spool_study: SpoolStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
    body_part: str | None,
    reason: str,
) -> None:
    settings = make_settings(destinations="PACS@127.0.0.1:104")
    runtime = WorkerRuntime.from_settings(settings)
    study_id = spool_study(_head_ct(body_part))
    job_id = _job_for(settings, session_factory, recording_app, study_id)

    assert execute_job(runtime, job_id, recording_app) == JobOutcome.OUTSIDE_DOMAIN
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert (job.pipeline, job.state) == ("ct-lungs", JobState.SKIPPED)
        assert (job.error or "").startswith(reason)
        assert job.events[-1].state == "skipped" and job.events[-1].message == job.error
        assert job.results == [] and session.scalars(select(Delivery)).all() == []
    assert not any(name == SEND_DELIVERY for name, _, _ in recording_app.sent)


@pytest.fixture
def run_phantom_with(
    settings,
    runtime,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> Callable[[Callable[[Dataset], object]], tuple[JobOutcome, int]]:
    """``run(change) -> (outcome, job id)``: the small phantom, ``change`` applied to each slice."""

    def run(change: Callable[[Dataset], object]) -> tuple[JobOutcome, int]:
        study = copy.deepcopy(small_phantom)
        for dataset in study.datasets:
            change(dataset)
        job_id = _job_for(settings, session_factory, recording_app, spool_study(study))
        return execute_job(runtime, job_id), job_id

    return run


def test_chest_without_body_part_tag_is_segmented(run_phantom_with) -> None:
    outcome, _ = run_phantom_with(lambda dataset: delattr(dataset, "BodyPartExamined"))
    assert outcome == JobOutcome.SUCCEEDED


# pydicom warns of the source values that are too long: they are the input this test repairs
@pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length")
def test_invalid_source_values_are_repaired_and_the_job_events_say_which(
    run_phantom_with, session_factory: sessionmaker[Session]
) -> None:
    outcome, job_id = run_phantom_with(with_invalid_values)
    assert outcome == JobOutcome.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        message = job.events[-1].message or ""
        assert job.events[-1].state == "succeeded"
        for change in EXPECTED_CHANGES:
            assert change in message
        for result in job.results:
            assert dcmread(result.path).PatientAge == "042Y"
            assert dciodvfy_errors(result.path) == []
