"""Fault 1: the worker is SIGKILLed mid-inference.

The job must be re-run by a restarted worker (the recovery sweep re-queues a
``running`` job whose heartbeat went stale) and its results must reach the
PACS exactly once: Orthanc holds one SEG and one SR, each delivery succeeded
on its first attempt.  :func:`tests.support.faults.job_delay_env` makes the
first worker sit inside the job (after it is marked running and its heartbeat
beats) so that the kill lands deterministically mid-job.
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
    alive,
    job_delay_env,
    kill_hard,
    result_classes,
    send_files,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_worker_killed_mid_inference_job_reruns_and_results_arrive_once(
    backend: dict[str, str],
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    study, files = write_study(tmp_path / "ct", seed=11)
    with OrthancServer() as orthanc:
        node = make_node(
            {**backend, "AINODE_DESTINATIONS": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"}
        )
        db = open_db(node)
        start_node(node, workers=0)
        delay = job_delay_env(120)
        node.env.update(delay)
        doomed = node.start("worker")
        for name in delay:
            node.env.pop(name)

        assert set(send_files(node.port, files)) == {0x0000}
        running = wait_until(
            lambda: [job for job in db.jobs() if job["state"] == "running"],
            timeout=60,
            message=lambda: f"{db.jobs()}\n{node.logs()[-3000:]}",
        )
        (job,) = running
        assert job["attempts"] == 1

        kill_hard(doomed)
        assert not alive(doomed)
        replacement = node.start("worker")

        finished = wait_until(
            lambda: (
                (jobs := db.jobs())
                and jobs[0]["state"] in ("succeeded", "failed")
                and all(d["state"] == "succeeded" for d in db.deliveries())
                and len(db.deliveries()) == 2
                and jobs
            ),
            timeout=90,
            message=lambda: f"{db.jobs()} {db.deliveries()}\n{node.logs()[-4000:]}",
        )
        assert len(finished) == 1, finished
        assert finished[0]["state"] == "succeeded", finished
        assert finished[0]["attempts"] >= 2, "the job was not re-run after the kill"
        running_events = [e for e in db.job_events(job["id"]) if e["state"] == "running"]
        assert len(running_events) >= 2, db.job_events(job["id"])

        deliveries = db.deliveries()
        assert sorted(d["kind"] for d in deliveries) == ["seg", "sr"]
        assert all(d["attempts"] == 1 for d in deliveries), deliveries
        classes = wait_until(
            lambda: (
                (found := result_classes(orthanc, study.study_instance_uid))
                and len(found) >= 2
                and found
            ),
            timeout=30,
        )
        assert classes == [SEG_CLASS, SR_CLASS]
        assert alive(replacement)
