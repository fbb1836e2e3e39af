"""Jobs of model pipelines (TEST FIXTURE networks): each result kind, domain guard, provenance."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Job, JobState, utcnow
from core.routing import RoutingRule
from pipelines.outputs.report import INPUT_DOMAIN, OUTSIDE_DOMAIN
from pipelines.phantom import PhantomStudy
from scheduler.dispatch import Dispatcher
from tests.pipelines.model.conftest import detector_config
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.model_fixtures import (
    BrightRegionDetectorFixture,
    MeanIntensityClassifierFixture,
    write_model_folder,
)
from tests.support.radiograph import make_radiograph
from tests.support.real_data import real_images
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy


def _route(settings: Settings, factory: sessionmaker[Session], study_id: int) -> int:
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(RecordingApp(), factory, settings).route_study(study_id, later)
    assert outcome is not None, "study not routed"
    (job_id,) = outcome.new_job_ids
    return job_id


def _rule(pipeline: str, modality: str) -> list[RoutingRule]:
    return [RoutingRule(name=f"to-{pipeline}", pipeline=pipeline, modality=frozenset({modality}))]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """Operator weights for the built-in cxr-classify and ct-nodule-detect, plus a BYO model."""
    folder = tmp_path / "models"
    write_model_folder(
        folder / "cxr-classify", MeanIntensityClassifierFixture([0.1, 0.3, 0.9, 0.95])
    )
    write_model_folder(folder / "ct-nodule-detect", BrightRegionDetectorFixture(level=0.95))
    config = detector_config(domain_policy="flag")
    write_model_folder(folder / "bone", BrightRegionDetectorFixture(level=1300 / 1500), config)
    return folder


def test_classification_job_on_a_radiograph(
    make_settings, models_dir: Path, spool_study: SpoolStudy, session_factory
) -> None:
    settings = make_settings(models_dir=models_dir, routing_rules=_rule("cxr-classify", "DX"))
    job_id = _route(settings, session_factory, spool_study([make_radiograph(seed=5)]))
    assert execute_job(WorkerRuntime.from_settings(settings), job_id) == JobOutcome.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.queue == "gpu" and job.device == "cpu" and len(job.weights_sha256) == 64
        (result,) = job.results
        assert result.kind == "sr"
        path = Path(result.path)
        sha = job.weights_sha256
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []
    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence(sr.content)
    groups = report.get_image_measurement_groups()
    assert [str(group.finding_type.meaning) for group in groups][:2] == [
        "Pneumothorax",
        "Pleural effusion",
    ]
    text = json.dumps(sr.to_json_dict())
    assert f"weights_sha256={sha}" in text and "device=cpu" in text


def test_out_of_range_spacing_is_skipped_with_its_reason(
    make_settings,
    models_dir: Path,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    session_factory,
) -> None:
    settings = make_settings(models_dir=models_dir, routing_rules=_rule("ct-nodule-detect", "CT"))
    job_id = _route(settings, session_factory, spool_study(small_phantom))
    outcome = execute_job(WorkerRuntime.from_settings(settings), job_id)
    assert outcome == JobOutcome.OUTSIDE_DOMAIN
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.SKIPPED and job.results == []
        assert job.error == (
            "outside validated input domain: pixel spacing 6 outside 0.5-3; "
            "slice thickness 6 outside 0.5-3"
        )
        assert [event.state for event in job.events] == ["queued", "running", "skipped"]
    # a redelivered message does not run it again
    assert execute_job(WorkerRuntime.from_settings(settings), job_id) == JobOutcome.SKIPPED


def test_out_of_domain_with_flag_policy_is_processed_and_flagged(
    make_settings,
    models_dir: Path,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    session_factory,
) -> None:
    settings = make_settings(
        models_dir=models_dir, routing_rules=_rule("fixture-bone-detect", "CT")
    )
    job_id = _route(settings, session_factory, spool_study(small_phantom))
    assert execute_job(WorkerRuntime.from_settings(settings), job_id) == JobOutcome.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert "outside validated input domain: pixel spacing 6" in job.events[-1].message
        path = Path(job.results[0].path)
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)
    (finding,) = report.get_planar_roi_measurement_groups()
    evaluations = [(item.name, item.value) for item in finding.get_qualitative_evaluations()]
    assert (INPUT_DOMAIN, OUTSIDE_DOMAIN) in evaluations


def test_pipeline_without_weights_fails_the_job_with_a_clear_reason(
    make_settings, tmp_path: Path, spool_study: SpoolStudy, session_factory
) -> None:
    settings = make_settings(
        models_dir=tmp_path / "empty", routing_rules=_rule("cxr-classify", "DX")
    )
    job_id = _route(settings, session_factory, spool_study([make_radiograph(seed=6)]))
    assert execute_job(WorkerRuntime.from_settings(settings), job_id) == JobOutcome.FAILED
    with session_factory() as session:
        error = session.get_one(Job, job_id).error
    assert error.startswith("pipeline cxr-classify is not usable: cxr-classify: missing file")


def test_demo_model_skips_a_head_ct_whatever_its_flag_policy(
    make_settings, spool_study: SpoolStudy, session_factory
) -> None:
    settings = make_settings(routing_rules=_rule("ct-organs-demo", "CT"))
    head = [dcmread(path) for path in real_images("ct-head-phantom-axial-5mm")]
    for dataset in head:
        del dataset.BodyPartExamined
    job_id = _route(settings, session_factory, spool_study(head))
    outcome = execute_job(WorkerRuntime.from_settings(settings), job_id)
    assert outcome == JobOutcome.OUTSIDE_DOMAIN
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.SKIPPED and job.results == []
        assert (job.error or "").startswith("image content missing: no chest-sized body")
