"""Radiograph jobs: unknown pixel size (NEMA RG1), a PA and a lateral in one series."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Job, JobState, utcnow
from core.routing import RoutingRule
from scheduler.dispatch import Dispatcher
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.model_fixtures import (
    BrightRegionDetectorFixture,
    MeanIntensityClassifierFixture,
    write_model_folder,
)
from tests.support.radiograph import two_view_series
from tests.support.real_data import real_images
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy

#: A bring-your-own detector on radiographs: it reports diameters in mm.
CR_DETECTOR: dict[str, Any] = {
    "name": "fixture-cr-dense",
    "version": "0.0.1",
    "description": "TEST FIXTURE: marks the brightest pixels of a radiograph",
    "kind": "detection",
    "queue": "cpu",
    "modalities": ["CR", "DX"],
    "input": {"spatial_dims": 2, "window": [0, 4095]},
    "activation": "sigmoid",
    "labels": [{"values": [0], "label": "Dense", "code": ["272673000", "SCT", "Bone structure"]}],
}


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """Fixture weights for the built-in cxr-classify and a bring-your-own radiograph detector."""
    folder = tmp_path / "models"
    write_model_folder(
        folder / "cxr-classify", MeanIntensityClassifierFixture([0.1, 0.3, 0.9, 0.95])
    )
    write_model_folder(folder / "cr-dense", BrightRegionDetectorFixture(level=0.95), CR_DETECTOR)
    return folder


def _run(
    make_settings, models_dir: Path, spool_study: SpoolStudy, factory, pipeline: str, series
) -> tuple[JobOutcome, int, Settings]:
    """Route ``series`` (CR or DX) to ``pipeline`` alone and execute the job."""
    rules = [
        RoutingRule(name=f"to-{pipeline}", pipeline=pipeline, modality=frozenset({"CR", "DX"}))
    ]
    settings: Settings = make_settings(models_dir=models_dir, routing_rules=rules)
    study_id = spool_study(series)
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(RecordingApp(), factory, settings).route_study(study_id, later)
    assert outcome is not None
    (job_id,) = outcome.new_job_ids
    return execute_job(WorkerRuntime.from_settings(settings), job_id), job_id, settings


def _rg1() -> list[pydicom.Dataset]:
    return [pydicom.dcmread(path) for path in real_images("cr-chest-nema-rg1")]


def test_radiograph_without_pixel_size_is_classified(
    make_settings, models_dir: Path, spool_study: SpoolStudy, session_factory: sessionmaker[Session]
) -> None:
    """RG1 (PixelSpacing 0.000\\0.000): a classifier needs no mm, so it runs."""
    outcome, job_id, _ = _run(
        make_settings, models_dir, spool_study, session_factory, "cxr-classify", _rg1()
    )
    assert outcome == JobOutcome.SUCCEEDED
    with session_factory() as session:
        (result,) = session.get_one(Job, job_id).results
        path = Path(result.path)
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)
    assert len(report.get_image_measurement_groups()) == 4
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []


def test_radiograph_without_pixel_size_skips_a_measuring_pipeline(
    make_settings, models_dir: Path, spool_study: SpoolStudy, session_factory: sessionmaker[Session]
) -> None:
    outcome, job_id, _ = _run(
        make_settings, models_dir, spool_study, session_factory, "fixture-cr-dense", _rg1()
    )
    assert outcome == JobOutcome.OUTSIDE_DOMAIN
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert job.state == JobState.SKIPPED and job.results == []
        assert job.error == (
            "image 1.3.6.1.4.1.5962.1.1.9.1.3.20040826185059.5457 has no pixel size: "
            "PixelSpacing 0.000\\0.000 and no ImagerPixelSpacing or DetectorElementSpacing; "
            "fixture-cr-dense measures in mm"
        )


def test_pa_and_lateral_get_one_report_with_findings_per_image(
    make_settings, models_dir: Path, spool_study: SpoolStudy, session_factory: sessionmaker[Session]
) -> None:
    series = two_view_series()
    outcome, job_id, _ = _run(
        make_settings, models_dir, spool_study, session_factory, "cxr-classify", series
    )
    assert outcome == JobOutcome.SUCCEEDED
    with session_factory() as session:
        (result,) = session.get_one(Job, job_id).results
        path = Path(result.path)
    if dciodvfy_available():
        assert dciodvfy_errors(path) == []
    sr = hd.sr.srread(path)
    groups = hd.sr.MeasurementReport.from_sequence(sr.content).get_image_measurement_groups()
    assert len(groups) == 8  # 4 classes x 2 images
    by_view = {ds.SOPInstanceUID: ds.ViewPosition for ds in series}
    seen = []
    for group in groups:
        (source,) = group.source_images
        view = by_view[source.referenced_sop_instance_uid]
        assert group.tracking_identifier.endswith(view)
        seen.append((str(group.finding_type.meaning), view))
    assert sorted(seen) == sorted(
        (finding, view)
        for finding in ("Pneumothorax", "Pleural effusion", "Lung consolidation", "Cardiomegaly")
        for view in ("PA", "LL")
    )
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert {item.ReferencedSOPInstanceUID for item in evidence.ReferencedSOPSequence} == set(
        by_view
    )
