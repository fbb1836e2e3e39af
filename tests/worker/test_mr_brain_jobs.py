"""``mr-brain`` jobs on the worker: a real T1 on the default route, and the two ways it skips."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from pydicom import Dataset, dcmread
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Job, JobState, utcnow
from pipelines.mr_brain.pipeline import MrBrainPipeline
from scheduler.dispatch import Dispatcher
from tests.support.real_data import real_images
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy

pytest.importorskip("deepbet", reason="deepbet comes with the [brain] extra")


@pytest.fixture
def run_t1(
    settings: Settings,
    runtime,
    spool_study: SpoolStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> Callable[[Callable[[Dataset], object]], Job]:
    """``run(change) -> job``: the real 2D sagittal T1, ``change`` applied to each slice."""

    def run(change: Callable[[Dataset], object]) -> Job:
        datasets = [dcmread(path) for path in real_images("mr-t1-2d-sag-supine")]
        for dataset in datasets:
            change(dataset)
        now = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
        outcome = Dispatcher(recording_app, session_factory, settings).route_study(
            spool_study(datasets), now=now
        )
        assert outcome is not None and len(outcome.new_job_ids) == 1
        result = execute_job(runtime, outcome.new_job_ids[0])
        assert result in (JobOutcome.SUCCEEDED, JobOutcome.OUTSIDE_DOMAIN)
        with session_factory() as session:
            job = session.get_one(Job, outcome.new_job_ids[0])
            session.expunge(job)
            return job

    return run


def test_real_t1_on_the_default_route_gives_seg_and_sr(run_t1) -> None:
    job = run_t1(lambda dataset: None)
    assert (job.pipeline, job.state, job.rule_name) == (
        "mr-brain",
        JobState.SUCCEEDED,
        "mr-default",
    )
    assert job.weights_sha256 == "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd"


def test_a_t2_weighted_header_is_skipped_before_inference(run_t1) -> None:
    def t2(dataset: Dataset) -> None:
        dataset.EchoTime, dataset.RepetitionTime = 95, 4000

    job = run_t1(t2)
    assert job.state == JobState.SKIPPED and job.inference_seconds is None
    assert "echo time 95 ms is T2-weighted" in (job.error or "")


def test_a_mask_that_is_no_whole_brain_skips_the_job(
    run_t1, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MrBrainPipeline, "brain_volume_ml", (1.0, 2.0))
    job = run_t1(lambda dataset: None)
    assert job.state == JobState.SKIPPED
    assert (job.error or "").startswith(
        "outside validated input domain: no whole adult brain: mask of 1543 mL outside 1-2 mL"
    )
