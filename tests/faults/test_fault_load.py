"""Fault 10 (slow): load.  Eight concurrent associations each send a 200-slice study.

Production mode (PostgreSQL + a private Redis, ``serve`` and two workers).
Every instance is stored, every study is processed once and its SEG and SR
arrive once (a storescp with unique file names counts every C-STORE), nothing
deadlocks, and the ``serve`` process does not keep growing: a second identical
round leaves its open files and resident memory where the first one left them
(generous bounds).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.dcmtk import StoreSCP
from tests.support.faults import (
    StartNode,
    alive,
    node_db,
    open_fds,
    rss_kib,
    send_files,
    thread_count,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.private_redis import PrivateRedis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SENDERS = 8
SLICES = 200
FD_GROWTH_LIMIT = 8
RSS_GROWTH_LIMIT_KIB = 64 * 1024


def _round(node: NodeProcesses, studies: list[tuple[str, list[Path]]], done_before: int) -> None:
    with ThreadPoolExecutor(SENDERS) as pool:
        outcomes = list(pool.map(lambda item: send_files(node.port, item[1]), studies))
    for statuses in outcomes:
        assert statuses == [0x0000] * SLICES, {hex(s or 0) for s in statuses}
    db = node_db(node)
    expected = done_before + len(studies)
    wait_until(
        lambda: (
            len(jobs := db.jobs()) == expected
            and all(j["state"] == "succeeded" for j in jobs)
            and len(d := db.deliveries()) == 2 * expected
            and all(x["state"] == "succeeded" for x in d)
        ),
        timeout=300,
        interval=0.5,
        message=lambda: f"{db.jobs()}\n{node.logs()[-3000:]}",
    )
    for uid, _ in studies:
        assert db.instance_count(uid) == SLICES
        assert len(db.jobs_of(uid)) == 1
    db.dispose()


def test_eight_concurrent_200_slice_studies(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    private_redis: PrivateRedis,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    rounds = [
        [
            write_study(
                tmp_path / f"r{r}s{s}", seed=1000 + 10 * r + s, slices=SLICES, rows=128, columns=128
            )
            for s in range(SENDERS)
        ]
        for r in range(2)
    ]
    rounds = [[(study.study_instance_uid, files) for study, files in batch] for batch in rounds]
    with StoreSCP(aet="RESULTS", extra_args=["-uf"]) as results:
        node = make_node(
            {
                "AINODE_DESTINATIONS": f"RESULTS@127.0.0.1:{results.port}",
                "AINODE_BROKER_URL": private_redis.url(0),
                "AINODE_DATABASE_URL": postgres_url,
                "AINODE_STABILITY_SECONDS": "2",
                "AINODE_JOB_STALE_SECONDS": "60",
                "AINODE_JOB_REQUEUE_SECONDS": "120",
            }
        )
        serve, workers = start_node(node, workers=2)
        assert serve.pid is not None
        idle_threads = thread_count(serve.pid)

        _round(node, rounds[0], 0)
        wait_until(lambda: thread_count(serve.pid) <= idle_threads + 2, timeout=60)
        fds, rss = open_fds(serve.pid), rss_kib(serve.pid)

        _round(node, rounds[1], SENDERS)
        wait_until(lambda: thread_count(serve.pid) <= idle_threads + 2, timeout=60)
        fds_after, rss_after = open_fds(serve.pid), rss_kib(serve.pid)

        assert fds_after <= fds + FD_GROWTH_LIMIT, (fds, fds_after)
        assert rss_after <= rss + RSS_GROWTH_LIMIT_KIB, (rss, rss_after)
        received = results.wait_for_files(4 * SENDERS, timeout=60)
        assert len(received) == 4 * SENDERS, "a result arrived more than once"
        assert alive(serve) and all(alive(w) for w in workers)
        print(f"serve: fds {fds} -> {fds_after}, VmRSS {rss} -> {rss_after} KiB")
