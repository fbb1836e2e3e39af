"""Fault 5: the destination PACS is down when results are ready.

Deliveries are retried with backoff, then marked ``failed`` with the reason
(visible in ``ainode status --json``).  Once Orthanc is back, ``ainode
retry-deliveries`` re-sends them and ``ainode replay JOB`` re-runs/re-sends a
job: Orthanc ends up with exactly one SEG and one SR.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.faults import (
    SEG_CLASS,
    SR_CLASS,
    NodeDB,
    StartNode,
    result_classes,
    send_files,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3


def test_destination_down_deliveries_fail_then_retry_and_replay_deliver_once(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    study, files = write_study(tmp_path / "ct", seed=51)
    orthanc = OrthancServer(http_port=free_port(), dicom_port=free_port())
    try:
        node = make_node(
            {
                "AINODE_DESTINATIONS": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
                "AINODE_DELIVERY_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            }
        )
        db = open_db(node)
        start_node(node)
        assert set(send_files(node.port, files)) == {0x0000}

        failed = wait_until(
            lambda: len(d := db.deliveries()) == 2 and all(x["state"] == "failed" for x in d) and d,
            timeout=90,
            message=lambda: f"{db.jobs()} {db.deliveries()}\n{node.logs()[-4000:]}",
        )
        for delivery in failed:
            assert delivery["attempts"] == MAX_ATTEMPTS, failed
            assert delivery["last_error"], failed
        assert node.logs().count("retry in") >= 2 * (MAX_ATTEMPTS - 1), "no backoff retries logged"
        (job,) = node.status()["jobs"]
        assert job["state"] == "succeeded"
        assert job["deliveries"] == "2 failed"
        assert job["error"], "the status shows no delivery error"

        orthanc.start()
        retried = node.cli("retry-deliveries", check=False)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        wait_until(
            lambda: all(d["state"] == "succeeded" for d in db.deliveries()),
            timeout=60,
            message=lambda: f"{db.deliveries()}\n{node.logs()[-4000:]}",
        )
        classes = wait_until(
            lambda: (
                (found := result_classes(orthanc, study.study_instance_uid))
                and len(found) >= 2
                and found
            ),
            timeout=30,
        )
        assert classes == [SEG_CLASS, SR_CLASS]

        job_id = db.jobs()[0]["id"]
        delivered = {d["id"]: d["delivered_at"] for d in db.deliveries()}
        replayed = node.cli("replay", str(job_id), check=False)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        wait_until(
            lambda: all(
                d["state"] == "succeeded" and d["delivered_at"] > delivered[d["id"]]
                for d in db.deliveries()
            ),
            timeout=60,
            message=lambda: f"replay re-sent nothing: {db.deliveries()}\n{node.logs()[-3000:]}",
        )
        assert len(db.jobs()) == 1
        assert result_classes(orthanc, study.study_instance_uid) == [SEG_CLASS, SR_CLASS]
    finally:
        orthanc.stop()
