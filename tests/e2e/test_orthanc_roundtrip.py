"""The whole path with a real PACS: Orthanc → node → ct-lungs → SEG + SR back in Orthanc.

Runs twice: on the embedded default (SQLite + file-system broker, ``ainode
run``) and in production mode (PostgreSQL + Redis, separate ``ainode serve``
and ``ainode worker`` processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pytest
import redis

from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.services import ensure_redis, fresh_postgres_database
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
PATIENT_NAME = "ROUNDTRIP^SECRET"
PATIENT_ID = "PID-SECRET-4711"


@pytest.fixture(params=["embedded", "production"])
def node_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """``AINODE_*`` overrides for the mode under test."""
    if request.param == "embedded":
        yield {}
        return
    broker = ensure_redis(db=15)
    redis.Redis.from_url(broker).flushdb()
    database, drop = fresh_postgres_database("ainode_e2e")
    yield {"AINODE_BROKER_URL": broker, "AINODE_DATABASE_URL": database, "mode": "production"}
    drop()


def _start(node: NodeProcesses, production: bool) -> None:
    if production:
        node.cli("db", "upgrade")
        node.start("serve")
        node.start("worker")
    else:
        node.start("run")
    node.wait_listening()


def _results(orthanc: OrthancServer, study_uid: str) -> list[dict]:
    return [
        item
        for item in orthanc.instances_of_study_uid(study_uid)
        if item["SOPClassUID"] in (SEG_CLASS, SR_CLASS)
    ]


def test_study_from_orthanc_comes_back_as_seg_and_sr(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    production = node_env.pop("mode", None) == "production"
    study = generate_ct_phantom(
        slices=40,
        rows=96,
        columns=96,
        pixel_spacing=4.0,
        slice_thickness=5.0,
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
    )
    files = write_phantom(study, tmp_path / "ct")
    node = NodeProcesses(tmp_path, node_env)
    with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc, node:
        node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        _start(node, production)
        for path in files:
            orthanc.upload(path)
        study_id = orthanc.find_study(study.study_instance_uid)
        assert study_id is not None
        sent = orthanc.store_to_modality("ainode", [study_id])
        assert sent["FailedInstancesCount"] == 0 and sent["InstancesCount"] == len(files)

        results = wait_until(
            lambda: (
                (found := _results(orthanc, study.study_instance_uid)) and len(found) >= 2 and found
            ),
            timeout=120,
            message=lambda: node.logs()[-4000:],
        )
        assert sorted(item["SOPClassUID"] for item in results) == [SEG_CLASS, SR_CLASS]

        status = wait_until(
            lambda: (
                (s := node.status())["jobs"] and s["jobs"][0]["deliveries"] == "2 succeeded" and s
            ),
            timeout=60,
            message=lambda: str(node.status()),
        )
        (job,) = status["jobs"]
        assert job["state"] == "succeeded" and job["pipeline"] == "ct-lungs 1.0.0"
        assert job["error"] == ""

        for item in results:
            path = tmp_path / f"{item['SOPClassUID']}.dcm"
            path.write_bytes(orthanc.download(item["ID"]))
            assert dciodvfy_errors(path) == []
            if item["SOPClassUID"] == SEG_CLASS:
                seg = hd.seg.segread(path)
                assert seg.StudyInstanceUID == study.study_instance_uid
                assert seg.number_of_segments == 3
            else:
                sr = hd.sr.srread(path)
                assert sr.StudyInstanceUID == study.study_instance_uid
                assert len(sr.ContentSequence) > 0

        # The PACS sends the study again: nothing is processed or delivered twice.
        orthanc.store_to_modality("ainode", [study_id])
        wait_until(
            lambda: "already ran" in (node.status()["studies"][0]["note"] or ""),
            timeout=60,
            message=lambda: str(node.status()),
        )
        assert len(node.status()["jobs"]) == 1
        assert len(_results(orthanc, study.study_instance_uid)) == 2

        logs = node.logs()
        assert PATIENT_NAME not in logs and PATIENT_ID not in logs
        assert "ROUNDTRIP" not in logs
