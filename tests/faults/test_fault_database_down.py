"""Fault 4: PostgreSQL is briefly unavailable while the node is receiving.

A private cluster (never the shared one) is stopped in the middle of a study:
every C-STORE in that window must be answered with a failure (0xA700 Out of
Resources), never a success that was not recorded, and no file may stay in
the spool for it.  Once the database is back, the node resumes without a
restart: the sender resends what failed and the rest, every instance is
recorded and the study is processed once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faults import (
    NodeDB,
    StartNode,
    alive,
    send_files,
    sop_uid,
    spool_leftovers,
    spooled_instances,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.private_postgres import PrivatePostgres
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test only, on a free loopback port."""
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


def test_database_outage_answers_failure_and_work_resumes(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    private_postgres: PrivatePostgres,
    tmp_path: Path,
) -> None:
    study, files = write_study(tmp_path / "ct", seed=41)
    first, during, rest = files[:10], files[10:20], files[20:]
    node = make_node(
        {
            "AINODE_DATABASE_URL": private_postgres.create_database("ainode"),
            # Longer than the outage, so the study is not routed half-received.
            "AINODE_STABILITY_SECONDS": "8",
        }
    )
    spool = node.workdir / "var"
    serve, _ = start_node(node)

    assert send_files(node.port, first) == [0x0000] * len(first)

    private_postgres.stop()
    statuses = send_files(node.port, during)
    assert 0x0000 not in statuses, f"false success while the database was down: {statuses}"
    assert statuses == [OUT_OF_RESOURCES] * len(during), [hex(s or 0) for s in statuses]
    assert {path.stem for path in spooled_instances(spool)} == {sop_uid(p) for p in first}
    assert spool_leftovers(spool) == []
    assert alive(serve)

    private_postgres.start()
    statuses = send_files(node.port, [*during, *rest])
    assert statuses == [0x0000] * (len(during) + len(rest)), [hex(s or 0) for s in statuses]

    db = open_db(node)
    wait_until(
        lambda: (jobs := db.jobs()) and jobs[-1]["state"] in ("succeeded", "failed"),
        timeout=90,
        message=lambda: f"{db.jobs()}\n{node.logs()[-4000:]}",
    )
    assert db.instance_uids(study.study_instance_uid) == {sop_uid(p) for p in files}
    jobs = db.jobs()
    assert len(jobs) == 1 and jobs[0]["state"] == "succeeded", jobs
    assert len(spooled_instances(spool)) == len(files)
    assert alive(serve)
