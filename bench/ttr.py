"""Time to result: last C-STORE response → SEG and SR both stored in Orthanc.

A node (``ainode serve`` + ``ainode worker``, embedded SQLite and broker, or
PostgreSQL + Redis with ``BENCH_PRODUCTION=1``) sends its results to a real
Orthanc.  dcmtk ``storescu`` sends a study to the node; the clock starts when
storescu has the last C-STORE response and stops when Orthanc lists both
result instances in the study.  The phases come from the database the node
wrote (``studies``, ``jobs``, ``deliveries``); SEG build and SR build are
timed inside the worker by ``bench/hooks/sitecustomize.py`` (the jobs table
has no column for them).  One warm-up
study is processed first so that the worker's one-off imports are not
counted; every measured run uses a study with its own UIDs (a study sent
twice is not processed twice).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import RUNS, median, scratch, send_parallel, study_dir, study_files
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.waiting import wait_until

STABILITY_SECONDS = float(os.environ.get("BENCH_STABILITY_SECONDS", "1"))

Sample = tuple[str, float, float]
"""A study's UID, when its last instance was answered, when its results were in Orthanc."""


def _ts(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _results_in_orthanc(orthanc: OrthancServer, study_uid: str) -> bool:
    study = orthanc.find_study(study_uid)
    return study is not None and len(orthanc.study_instances(study)) >= 2


def _db_facts(url: str, study_uid: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            study = conn.execute(
                text(
                    "select id, last_received_at, routed_at from studies"
                    " where study_instance_uid = :uid"
                ),
                {"uid": study_uid},
            ).one()
            job = conn.execute(
                text(
                    "select id, state, created_at, enqueued_at, started_at, finished_at,"
                    " queue_wait_seconds, load_seconds, inference_seconds, write_seconds,"
                    " send_seconds from jobs where study_id = :sid"
                ),
                {"sid": study.id},
            ).one()
            deliveries = conn.execute(
                text(
                    "select d.state, d.delivered_at, d.send_seconds from deliveries d"
                    " join results r on r.id = d.result_id where r.job_id = :jid"
                ),
                {"jid": job.id},
            ).all()
    finally:
        engine.dispose()
    return {"study": study, "job": job, "deliveries": deliveries}


def _phases(facts: dict[str, Any], t_last: float, t_done: float) -> dict[str, float]:
    study, job, deliveries = facts["study"], facts["job"], facts["deliveries"]
    routed = _ts(study.routed_at)
    enqueued, started, finished = (
        _ts(v) for v in (job.enqueued_at, job.started_at, job.finished_at)
    )
    delivered = max(_ts(d.delivered_at) for d in deliveries)
    send = sum(d.send_seconds or 0.0 for d in deliveries)
    running = finished - started
    in_job = job.load_seconds + job.inference_seconds + job.write_seconds
    return {
        "total": t_done - t_last,
        "stability_wait": routed - t_last,
        "routing": enqueued - routed,
        "queue_wait": started - enqueued,
        "load": job.load_seconds,
        "inference": job.inference_seconds,
        # the job's own DB writes (claim, results, deliveries): running time outside its phases
        "db_writes": max(0.0, running - in_job),
        # building SEG + SR and writing the files (the SEG/SR build is split off below)
        "write": job.write_seconds,
        "send_scheduling": (delivered - finished) - send,
        "send": send,
        "visible_in_orthanc": t_done - delivered,
    }


def _node_env(workdir: Path, production: bool) -> tuple[dict[str, str], Callable[[], None] | None]:
    """The node's environment for the bench, and how to drop its PostgreSQL database (if any)."""
    env = {
        "AINODE_STABILITY_SECONDS": str(STABILITY_SECONDS),
        "AINODE_LOG_LEVEL": "WARNING",
        "AINODE_RECOVERY_INTERVAL_SECONDS": "3600",
        # bench/hooks/sitecustomize.py times SEG and SR building inside the worker
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(Path(__file__).parent / "hooks"), os.environ.get("PYTHONPATH")])
        ),
        "AINODE_BENCH_TIMINGS": str(workdir / "timings.jsonl"),
    }
    if not production:
        return env, None
    from tests.support.services import ensure_redis, fresh_postgres_database

    env["AINODE_DATABASE_URL"], drop_database = fresh_postgres_database("bench")
    env["AINODE_BROKER_URL"] = ensure_redis(db=14)
    return env, drop_database


def _send_until_results(node: NodeProcesses, orthanc: OrthancServer, folder: Path) -> Sample:
    """Send a study to the node and wait until its SEG and SR are in Orthanc.

    Returns the study's UID, the time storescu had the last response and the
    time Orthanc listed both results.
    """
    from pydicom import dcmread

    files = study_files(folder)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    send_parallel(node.port, "AINODE", files, 1)
    t_last = time.time()
    wait_until(
        lambda: _results_in_orthanc(orthanc, study_uid),
        600,
        0.05,
        message=lambda: node.logs()[-3000:],
    )
    return study_uid, t_last, time.time()


def _delivered_facts(url: str, study_uid: str) -> dict[str, Any]:
    """The study's database facts once every delivery of its job has succeeded."""
    return wait_until(
        lambda: (
            f
            if (f := _db_facts(url, study_uid))["deliveries"]
            and all(d.state == "succeeded" for d in f["deliveries"])
            else None
        ),
        30,
        0.1,
    )


def _measure_studies(
    workdir: Path, env: dict[str, str], warm: Path, studies: list[Path]
) -> list[dict[str, float]]:
    """Phases of each study in ``studies`` through a fresh node and Orthanc, after ``warm``."""
    samples = []
    with NodeProcesses(workdir, env=env) as node:  # noqa: SIM117 (Orthanc needs node.port)
        with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc:
            node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
            node.cli("db", "upgrade")
            node.start("serve")
            node.start("worker")
            node.wait_listening()
            url = node.env.get("AINODE_DATABASE_URL") or f"sqlite:///{workdir / 'var/ainode.db'}"
            _send_until_results(node, orthanc, warm)
            for folder in studies:
                study_uid, t_last, t_done = _send_until_results(node, orthanc, folder)
                samples.append(_phases(_delivered_facts(url, study_uid), t_last, t_done))
    return samples


def _summary(samples: list[dict[str, float]], builds: list[dict[str, float]]) -> dict[str, Any]:
    """Median phases, the worker's SEG/SR build split off its write time, and derived phases."""
    for sample, build in zip(samples, builds, strict=True):
        sample.update(build)
        sample["write"] = max(0.0, sample["write"] - build["seg_build"] - build["sr_build"])
    out: dict[str, Any] = {key: round(median([s[key] for s in samples]), 3) for key in samples[0]}
    out["orchestration"] = round(
        out["routing"] + out["queue_wait"] + out["send_scheduling"] + out["db_writes"], 3
    )
    out["overhead"] = round(out["total"] - out["stability_wait"] - out["inference"], 3)
    return out


def time_to_result(slices: int, runs: int = RUNS) -> dict[str, Any]:
    """Median phases of ``runs`` studies of ``slices`` slices through node and Orthanc."""
    production = os.environ.get("BENCH_PRODUCTION", "") not in ("", "0")
    workdir = scratch(f"ttr-{slices}")
    env, drop_database = _node_env(workdir, production)
    warm = study_dir(24, size=256, seed=990)
    studies = [study_dir(slices, seed=1000 + slices + i) for i in range(runs)]
    samples = _measure_studies(workdir, env, warm, studies)
    if drop_database is not None:
        drop_database()
    builds = _worker_builds(workdir / "timings.jsonl")[1:]  # the first job is the warm-up
    out = _summary(samples, builds)
    out["slices"] = slices
    out["runs"] = runs
    out["mode"] = "production" if production else "embedded"
    out["total_runs"] = [round(s["total"], 3) for s in samples]
    return out


def _worker_builds(path: Path) -> list[dict[str, float]]:
    """SEG and SR build seconds per job, in job order, as the worker hook logged them."""
    import json

    jobs: list[dict[str, float]] = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        if entry["what"] == "seg_build":
            jobs.append({"seg_build": entry["seconds"], "sr_build": 0.0})
        elif jobs:
            jobs[-1]["sr_build"] = entry["seconds"]
    return jobs


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(time_to_result(int(sys.argv[1]) if len(sys.argv) > 1 else 100, RUNS)))
