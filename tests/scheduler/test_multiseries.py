"""Multi-series pipelines: routing waits for every input series, the worker resamples them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import highdicom as hd
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Job, JobState, Study, StudyState, utcnow
from core.routing import RoutingRule
from pipelines.phantom import PhantomStudy
from scheduler.dispatch import Dispatcher, RoutingOutcome
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.model_fixtures import ChannelArgmaxSegmenterFixture, write_model_folder
from tests.support.mr import BRAIN_SERIES, mr_series
from tests.worker.conftest import RecordingApp, SpoolStudy
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

RULES = [RoutingRule(name="brain", pipeline="mr-brain-seg", modality=frozenset({"MR"}))]


@pytest.fixture(scope="module")
def series() -> dict[str, PhantomStudy]:
    return {role: mr_series(*parameters) for role, *parameters in BRAIN_SERIES}


def _route(settings: Settings, factory: sessionmaker[Session], study_id: int) -> RoutingOutcome:
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(RecordingApp(), factory, settings).route_study(study_id, later)
    assert outcome is not None
    return outcome


def test_routing_waits_for_missing_series_then_gives_up(
    make_settings, spool_study: SpoolStudy, session_factory, series: dict[str, PhantomStudy]
) -> None:
    settings = make_settings(routing_rules=RULES)
    spool_study(series["t1c"])
    study_id = spool_study(series["t2"])
    outcome = _route(settings, session_factory, study_id)
    assert outcome.new_job_ids == [] and outcome.waiting
    with session_factory() as session:
        study = session.get_one(Study, study_id)
        assert study.state == StudyState.RECEIVING
        assert study.routing_note == "mr-brain-seg: waiting up to 300 s for series flair"

    impatient = make_settings(routing_rules=RULES, multi_series_wait_seconds=0)
    outcome = _route(impatient, session_factory, study_id)
    assert outcome.new_job_ids == [] and not outcome.waiting
    with session_factory() as session:
        study = session.get_one(Study, study_id)
        assert study.state == StudyState.UNROUTED
        assert study.routing_note == "mr-brain-seg: no series for flair after waiting 0 s"


def test_three_series_make_one_job_resampled_onto_the_t1c_grid(
    make_settings,
    tmp_path: Path,
    spool_study: SpoolStudy,
    session_factory,
    series: dict[str, PhantomStudy],
) -> None:
    models = tmp_path / "models"
    write_model_folder(models / "mr-brain-seg", ChannelArgmaxSegmenterFixture())
    settings = make_settings(routing_rules=RULES, models_dir=models)
    for name in ("flair", "t2", "t1c"):
        study_id = spool_study(series[name])
    outcome = _route(settings, session_factory, study_id)
    (job_id,) = outcome.new_job_ids
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.series.series_instance_uid == series["t1c"].series_instance_uid
        roles = {item.role: item.series.series_instance_uid for item in job.inputs}
        assert roles == {name: study.series_instance_uid for name, study in series.items()}

    assert execute_job(WorkerRuntime.from_settings(settings), job_id) == JobOutcome.SUCCEEDED
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.SUCCEEDED
        paths = {result.kind: Path(result.path) for result in job.results}
    seg = hd.seg.segread(paths["seg"])
    assert seg.number_of_segments == 4
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["t1c"].series_instance_uid
    if dciodvfy_available():
        assert dciodvfy_errors(paths["seg"]) == [] and dciodvfy_errors(paths["sr"]) == []
    # routed again (the PACS resends): the same job, nothing new
    again = _route(settings, session_factory, _reopen(session_factory, study_id))
    assert again.new_job_ids == [] and again.existing_job_ids == [job_id]


def _reopen(factory: sessionmaker[Session], study_id: int) -> int:
    with factory.begin() as session:
        session.get_one(Study, study_id).state = StudyState.RECEIVING
    return study_id
