"""Formats per destination against Orthanc: SC with the overlay burned in, a KOS that resolves.

Orthanc holds the source study (as the PACS does); the node sends one
destination the Secondary Captures, SR and KOS (a viewer without SEG
support) and checks Orthanc renders the SC (``/instances/{id}/preview``)
with the overlay's colours, and that every object the KOS references is in
Orthanc.  Every object the job wrote passes dciodvfy.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Delivery, Result
from pipelines.outputs.secondary_capture import PALETTE
from pipelines.phantom import PhantomStudy, write_phantom
from tests.support.dciodvfy import dciodvfy_available, dciodvfy_errors
from tests.support.jobs import run_job
from tests.support.orthanc import OrthancServer
from tests.worker.conftest import RecordingApp, SpoolStudy
from worker.runtime import WorkerRuntime
from worker.tasks.send import DeliveryOutcome, execute_delivery

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy not installed"),
]


def _results(factory: sessionmaker[Session]) -> dict[str, list[Result]]:
    with factory() as session:
        kinds: dict[str, list[Result]] = {}
        for result in session.scalars(select(Result).order_by(Result.id)):
            kinds.setdefault(result.kind, []).append(result)
        return kinds


def test_a_viewer_destination_gets_a_rendered_sc_and_a_kos_that_resolves(
    make_settings: Callable[..., Settings],
    session_factory: sessionmaker[Session],
    spool_study: SpoolStudy,
    small_phantom: PhantomStudy,
    recording_app: RecordingApp,
    tmp_path: Path,
) -> None:
    with OrthancServer() as orthanc:
        for path in write_phantom(small_phantom, tmp_path / "source"):
            orthanc.upload(path)
        viewer = f"VIEWER@127.0.0.1:{orthanc.dicom_port}/formats=sc+sr+kos"
        settings = make_settings(destinations=viewer)
        run_job(settings, session_factory, recording_app, spool_study(small_phantom))
        runtime = WorkerRuntime.from_settings(settings)
        with session_factory() as session:
            ids = session.scalars(select(Delivery.id)).all()
        assert [execute_delivery(runtime, i) for i in ids] == [DeliveryOutcome.SUCCEEDED] * len(ids)
        results = _results(session_factory)
        with session_factory() as session:
            sent = set(
                session.scalars(select(Result.kind).join(Delivery, Delivery.result_id == Result.id))
            )
        assert sent == {"sc", "sr", "kos"}, "the viewer takes no SEG"

        for result in [item for items in results.values() for item in items]:
            assert dciodvfy_errors(result.path) == [], result.kind

        held = {item["SOPInstanceUID"]: item["ID"] for item in _instances(orthanc, small_phantom)}
        for capture in results["sc"]:
            preview = orthanc.request("GET", f"/instances/{held[capture.sop_instance_uid]}/preview")
            image = np.asarray(Image.open(io.BytesIO(preview)).convert("RGB")).astype(int)
            assert image.shape[1] >= 512
            assert np.any(np.abs(image - PALETTE[0]).sum(axis=2) < 30), "no legend swatch"
            tinted = image[..., 0] - image[..., 2]
            assert np.count_nonzero(tinted > 40) > 1000, "no overlay colour in the preview"

        [kos] = results["kos"]
        referenced = {
            item.ReferencedSOPInstanceUID
            for study in dcmread(kos.path).CurrentRequestedProcedureEvidenceSequence
            for series in study.ReferencedSeriesSequence
            for item in series.ReferencedSOPSequence
        }
        source_uids = {ds.SOPInstanceUID for ds in small_phantom.datasets}
        assert referenced & source_uids, "the KOS selects no key image"
        assert {r.sop_instance_uid for r in results["sc"] + results["sr"]} <= referenced
        assert referenced <= set(held), "a KOS reference does not resolve in Orthanc"


def _instances(orthanc: OrthancServer, study: PhantomStudy) -> list[dict]:
    return orthanc.instances_of_study_uid(study.study_instance_uid)
