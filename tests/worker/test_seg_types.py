"""SEG type per destination: one SEG + SR pair per type the destinations take, each to its own.

``fixture-tissue-bands`` (TEST FIXTURE network) segments soft tissue and bone,
which never overlap, so it can be a LABELMAP; ``ct-lungs`` has a body outline
around the lungs, which a LABELMAP cannot hold.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from core.config import Destination, Settings
from core.db.models import Delivery, Job, JobState, Result, utcnow
from core.errors import ConfigurationError
from core.routing import RoutingRule
from pipelines.phantom import PhantomStudy
from scheduler.dispatch import Dispatcher
from tests.support.dciodvfy import dciodvfy_errors, labelmap_dciodvfy_errors
from tests.support.model_fixtures import write_tissue_bands_model
from tests.support.sr import referenced_segmentations
from worker.queues import SEND_DELIVERY
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, execute_job

from .conftest import RecordingApp, SpoolStudy

BINARY_SEG = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"
BOTH = "BIN@127.0.0.1:104,LM@127.0.0.1:105/labelmap"


def _run_job(
    settings: Settings, factory: sessionmaker[Session], app: RecordingApp, study_id: int
) -> int:
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    outcome = Dispatcher(app, factory, settings).route_study(study_id, later)
    assert outcome is not None
    (job_id,) = outcome.new_job_ids
    assert execute_job(WorkerRuntime.from_settings(settings), job_id, app) == JobOutcome.SUCCEEDED
    return job_id


def _bands_settings(make_settings, tmp_path: Path, destinations: str) -> Settings:
    models = tmp_path / "models"
    pipeline = write_tissue_bands_model(models)
    rule = RoutingRule(name="bands", pipeline=pipeline, modality=frozenset({"CT"}))
    return make_settings(models_dir=models, routing_rules=[rule], destinations=destinations)


def _deliveries(factory: sessionmaker[Session]) -> set[tuple[str, str, str | None]]:
    """(destination, result kind, result SEG type) of every delivery."""
    with factory() as session:
        rows = session.execute(
            select(Delivery.destination, Result.kind, Result.seg_type).join(Result)
        ).all()
    return {tuple(row) for row in rows}


def test_binary_and_labelmap_destinations_each_get_their_own_pair(
    make_settings,
    tmp_path: Path,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> None:
    settings = _bands_settings(make_settings, tmp_path, BOTH)
    job_id = _run_job(settings, session_factory, recording_app, spool_study(small_phantom))

    with session_factory() as session:
        results = {(r.kind, r.seg_type): r for r in session.get_one(Job, job_id).results}
        paths = {key: Path(result.path) for key, result in results.items()}
        assert set(results) == {
            ("seg", "BINARY"),
            ("sr", "BINARY"),
            ("seg", "LABELMAP"),
            ("sr", "LABELMAP"),
        }
        assert results["seg", "BINARY"].sop_class_uid == BINARY_SEG
        assert results["seg", "LABELMAP"].sop_class_uid == LABELMAP_SEG
        delivery_ids = session.scalars(select(Delivery.id)).all()
    assert sorted(p.name for p in paths.values()) == [
        "seg-labelmap.dcm",
        "seg.dcm",
        "sr-labelmap.dcm",
        "sr.dcm",
    ]
    assert _deliveries(session_factory) == {
        ("BIN@127.0.0.1:104", "seg", "BINARY"),
        ("BIN@127.0.0.1:104", "sr", "BINARY"),
        ("LM@127.0.0.1:105/labelmap", "seg", "LABELMAP"),
        ("LM@127.0.0.1:105/labelmap", "sr", "LABELMAP"),
    }
    sent = [args[0] for name, args, _ in recording_app.sent if name == SEND_DELIVERY]
    assert sorted(sent) == sorted(delivery_ids)

    # Each SR points at the SEG of its own type; the four objects are distinct series.
    datasets = {key: dcmread(path) for key, path in paths.items()}
    for seg_type in ("BINARY", "LABELMAP"):
        seg = datasets["seg", seg_type]
        referenced = referenced_segmentations(paths["sr", seg_type])
        assert referenced == {(seg.SOPClassUID, seg.SOPInstanceUID)}
    assert len({ds.SeriesInstanceUID for ds in datasets.values()}) == 4
    assert datasets["seg", "LABELMAP"].SegmentationType == "LABELMAP"

    # Same segmentation in both encodings.
    binary = hd.seg.segread(paths["seg", "BINARY"])
    labelmap = hd.seg.segread(paths["seg", "LABELMAP"])
    assert list(labelmap.segment_numbers) == list(binary.segment_numbers) == [1, 2]
    as_labels = binary.get_volume(combine_segments=True)
    assert np.array_equal(labelmap.get_volume(combine_segments=True).array, as_labels.array)
    assert set(np.unique(as_labels.array)) == {0, 1, 2}

    assert dciodvfy_errors(paths["seg", "BINARY"]) == []
    assert dciodvfy_errors(paths["sr", "BINARY"]) == []
    assert labelmap_dciodvfy_errors(paths["seg", "LABELMAP"]) == []
    assert labelmap_dciodvfy_errors(paths["sr", "LABELMAP"]) == []

    # Running the job again rebuilds the same four objects and plans nothing new.
    with session_factory() as session:
        uids = sorted(session.scalars(select(Result.sop_instance_uid)).all())
        session.execute(update(Job).values(state=JobState.QUEUED))
        session.commit()
    recording_app.sent.clear()
    runtime = WorkerRuntime.from_settings(settings)
    assert execute_job(runtime, job_id, recording_app) == JobOutcome.SUCCEEDED
    with session_factory() as session:
        assert sorted(session.scalars(select(Result.sop_instance_uid)).all()) == uids
        assert sorted(session.scalars(select(Delivery.id)).all()) == sorted(delivery_ids)
    assert recording_app.sent == []


def test_binary_destinations_only_cost_one_seg(
    make_settings,
    tmp_path: Path,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> None:
    settings = _bands_settings(make_settings, tmp_path, "A@127.0.0.1:104,B@127.0.0.1:105/binary")
    job_id = _run_job(settings, session_factory, recording_app, spool_study(small_phantom))
    assert {(kind, seg_type) for _, kind, seg_type in _deliveries(session_factory)} == {
        ("seg", "BINARY"),
        ("sr", "BINARY"),
    }
    with session_factory() as session:
        assert len(session.scalars(select(Result)).all()) == 2

    # A LABELMAP destination configured later gets what the job made on a replay.
    later = settings.model_copy(update={"destinations": [Destination.parse("LM@h:105/labelmap")]})
    assert len(Dispatcher(recording_app, session_factory, later).replay_job(job_id)) == 2
    assert ("LM@h:105/labelmap", "seg", "BINARY") in _deliveries(session_factory)


def test_overlapping_segments_go_to_labelmap_destinations_as_binary(
    make_settings,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> None:
    settings = make_settings(destinations="LM@127.0.0.1:105/labelmap")  # ct-lungs: body ⊃ lungs
    job_id = _run_job(settings, session_factory, recording_app, spool_study(small_phantom))
    with session_factory() as session:
        job = session.get_one(Job, job_id)
        assert {(r.kind, r.seg_type, r.sop_class_uid) for r in job.results} == {
            ("seg", "BINARY", BINARY_SEG),
            ("sr", "BINARY", "1.2.840.10008.5.1.4.1.1.88.34"),
        }
        assert "segments overlap: no LABELMAP SEG" in (job.events[-1].message or "")
    assert _deliveries(session_factory) == {
        ("LM@127.0.0.1:105/labelmap", "seg", "BINARY"),
        ("LM@127.0.0.1:105/labelmap", "sr", "BINARY"),
    }


def test_replay_to_destinations_configured_later(
    make_settings,
    tmp_path: Path,
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    session_factory: sessionmaker[Session],
) -> None:
    settings = _bands_settings(make_settings, tmp_path, "LM@127.0.0.1:105/labelmap")
    job_id = _run_job(settings, session_factory, recording_app, spool_study(small_phantom))
    with session_factory() as session:
        assert {r.seg_type for r in session.scalars(select(Result))} == {"LABELMAP"}

    # A BINARY destination added later: the job made no BINARY SEG; nothing is planned.
    later = settings.model_copy(
        update={"destinations": [*settings.destinations, Destination.parse("BIN@127.0.0.1:104")]}
    )
    refused = r"job \d+: no BINARY SEG was made for BIN@127\.0\.0\.1:104; run the job again"
    with pytest.raises(ConfigurationError, match=refused):
        Dispatcher(recording_app, session_factory, later).replay_job(job_id)
    assert {destination for destination, _, _ in _deliveries(session_factory)} == {
        "LM@127.0.0.1:105/labelmap"
    }

    # Re-run with both: the BINARY pair is made for it; the LABELMAP pair is unchanged.
    Dispatcher(recording_app, session_factory, later).replay_job(job_id, rerun=True)
    assert execute_job(WorkerRuntime.from_settings(later), job_id) == JobOutcome.SUCCEEDED
    assert _deliveries(session_factory) == {
        ("BIN@127.0.0.1:104", "seg", "BINARY"),
        ("BIN@127.0.0.1:104", "sr", "BINARY"),
        ("LM@127.0.0.1:105/labelmap", "seg", "LABELMAP"),
        ("LM@127.0.0.1:105/labelmap", "sr", "LABELMAP"),
    }

    # A replay re-sends each destination its own pair, nothing else.
    recording_app.sent.clear()
    planned = Dispatcher(recording_app, session_factory, later).replay_job(job_id)
    assert len(planned) == 4 and len(_deliveries(session_factory)) == 4
