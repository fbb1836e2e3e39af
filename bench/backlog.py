"""Throughput under backlog: ``studies`` queued studies cleared by ``N`` worker processes.

All studies are sent and routed first (workers stopped), so the queue holds
them all; then ``N`` ``ainode worker`` processes start and the clock runs until
the last result is delivered to Orthanc.  Reported: studies/hour and the
pipeline's busy fraction (sum of ``inference_seconds`` / (N x wall)), the CPU
stand-in for a GPU's busy fraction on this GPU-less machine.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import create_engine, text

from bench.common import QUICK, scratch, send_parallel, study_dir, study_files
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.waiting import wait_until


def _count(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).one()
    finally:
        engine.dispose()


def backlog(workers: int, studies: int, slices: int) -> dict[str, Any]:
    """Queue ``studies`` studies, start ``workers`` workers, time until every delivery succeeded."""
    folders = [study_dir(slices, seed=5000 + i) for i in range(studies)]
    workdir = scratch(f"backlog-{workers}")
    env = {
        "AINODE_STABILITY_SECONDS": "1",
        "AINODE_LOG_LEVEL": "WARNING",
        "AINODE_RECOVERY_INTERVAL_SECONDS": "3600",
    }
    url = f"sqlite:///{workdir / 'var/ainode.db'}"
    with NodeProcesses(workdir, env=env) as node:  # noqa: SIM117 (Orthanc needs node.port)
        with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc:
            node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
            node.cli("db", "upgrade")
            node.start("serve")
            node.wait_listening()
            for folder in folders:
                send_parallel(node.port, "AINODE", study_files(folder), 1)
            wait_until(
                lambda: (
                    _count(url, "select count(*) from jobs where state = 'queued'")[0] == studies
                ),
                120,
                0.2,
            )
            start = time.time()
            for _ in range(workers):
                node.start("worker")
            wait_until(
                lambda: (
                    _count(url, "select count(*) from deliveries where state = 'succeeded'")[0]
                    == 2 * studies
                ),
                3600,
                0.2,
                message=lambda: node.logs()[-3000:],
            )
            wall = time.time() - start
            busy = _count(
                url,
                "select sum(inference_seconds), sum(load_seconds), sum(write_seconds) from jobs",
            )
    return {
        "workers": workers,
        "studies": studies,
        "slices": slices,
        "wall_seconds": round(wall, 1),
        "studies_per_hour": round(studies * 3600 / wall, 1),
        "pipeline_busy_fraction": round(busy[0] / (workers * wall), 3),
        "load_fraction": round(busy[1] / (workers * wall), 3),
    }


def run() -> list[dict[str, Any]]:
    """The backlog section: the same queue cleared by 1 and by 2 workers."""
    studies, slices = (6, 50) if QUICK else (20, 100)
    return [backlog(workers, studies, slices) for workers in (1, 2)]


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(backlog(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
