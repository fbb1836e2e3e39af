"""Fault 3: the broker loses its messages while jobs are queued and no worker runs.

The database is the source of truth: the recovery sweep re-sends every job
that has been ``queued`` for longer than ``AINODE_JOB_REQUEUE_SECONDS``, so
once a worker starts, every job finishes.  Production: a private Redis is
stopped and restarted empty.  Embedded: the file broker's queued message
files are deleted (what a crash that lost them looks like).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.support.faults import StartNode, node_db, send_files, write_study
from tests.support.node import NodeProcesses
from tests.support.private_redis import PrivateRedis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

QUEUES = ("cpu", "gpu", "send")


def _queued_messages(client: redis.Redis) -> int:
    return sum(int(client.llen(queue)) for queue in QUEUES)


def _send_studies(node: NodeProcesses, folder: Path, seeds: tuple[int, ...]) -> list[str]:
    uids = []
    for seed in seeds:
        study, files = write_study(folder / str(seed), seed=seed)
        assert set(send_files(node.port, files)) == {0x0000}
        uids.append(study.study_instance_uid)
    return uids


def _all_queued(node: NodeProcesses, count: int) -> None:
    db = node_db(node)
    wait_until(
        lambda: len(jobs := db.jobs()) == count and all(j["state"] == "queued" for j in jobs),
        timeout=30,
        message=lambda: f"{db.jobs()}\n{node.logs()[-3000:]}",
    )
    db.dispose()


def _all_succeed(node: NodeProcesses, count: int) -> list[dict]:
    db = node_db(node)
    jobs = wait_until(
        lambda: (
            len(jobs := db.jobs()) == count
            and all(j["state"] == "succeeded" for j in jobs)
            and jobs
        ),
        timeout=90,
        message=lambda: f"{db.jobs()}\n{node.logs()[-4000:]}",
    )
    db.dispose()
    return jobs


def test_redis_restarted_empty_jobs_are_requeued_from_the_database(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    private_redis: PrivateRedis,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    node = make_node(
        {"AINODE_BROKER_URL": private_redis.url(0), "AINODE_DATABASE_URL": postgres_url}
    )
    start_node(node, workers=0)
    _send_studies(node, tmp_path / "ct", (31, 32))
    _all_queued(node, 2)
    client = redis.Redis(host="127.0.0.1", port=private_redis.port)
    wait_until(lambda: _queued_messages(client) >= 2, timeout=10)
    client.close()

    private_redis.stop()
    private_redis.start()
    client = redis.Redis(host="127.0.0.1", port=private_redis.port)
    assert _queued_messages(client) == 0, "the restarted Redis should be empty"
    wait_until(
        lambda: _queued_messages(client) >= 2,
        timeout=30,
        message=lambda: f"queued jobs were not re-sent to the broker\n{node.logs()[-3000:]}",
    )
    client.close()

    node.start("worker")
    jobs = _all_succeed(node, 2)
    assert [job["attempts"] for job in jobs] == [1, 1], jobs


def test_embedded_broker_lost_messages_jobs_are_requeued(
    make_node: Callable[..., NodeProcesses], start_node: StartNode, tmp_path: Path
) -> None:
    node = make_node()
    queue_dir = node.workdir / "var" / "broker" / "queue"
    start_node(node, workers=0)
    _send_studies(node, tmp_path / "ct", (33, 34))
    _all_queued(node, 2)

    messages = wait_until(lambda: len(found := sorted(queue_dir.glob("*.msg"))) >= 2 and found)
    for message in messages:
        message.unlink()
    assert list(queue_dir.glob("*.msg")) == []
    wait_until(
        lambda: len(list(queue_dir.glob("*.msg"))) >= 2,
        timeout=30,
        message=lambda: f"lost messages were not re-sent\n{node.logs()[-3000:]}",
    )

    node.start("worker")
    jobs = _all_succeed(node, 2)
    assert [job["attempts"] for job in jobs] == [1, 1], jobs
