"""Fixtures of the fault-injection suite: node processes, private brokers, databases.

Every server is started on a free loopback port and stopped by PID in a
finalizer; the shared Redis and PostgreSQL are never stopped (tests that stop a
broker or a database start a private one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.faults import FAST_RECOVERY_ENV, NodeDB, StartNode, kill_hard, node_db
from tests.support.node import NodeProcesses
from tests.support.private_redis import PrivateRedis
from tests.support.processes import BackgroundProcess
from tests.support.services import fresh_postgres_database


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """An empty redis-server of this test only."""
    server = PrivateRedis()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the shared PostgreSQL, dropped afterwards."""
    url, drop = fresh_postgres_database("ainode_fault")
    yield url
    drop()


@pytest.fixture(params=["embedded", "production"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """``AINODE_*`` for the mode under test: SQLite + file broker, or PostgreSQL + Redis."""
    if request.param == "embedded":
        return {}
    redis_server: PrivateRedis = request.getfixturevalue("private_redis")
    database: str = request.getfixturevalue("postgres_url")
    return {"AINODE_BROKER_URL": redis_server.url(0), "AINODE_DATABASE_URL": database}


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., NodeProcesses]]:
    """``make_node(env, name=...)``: node processes in a sub-folder, stopped afterwards."""
    nodes: list[NodeProcesses] = []

    def factory(env: dict[str, str] | None = None, name: str = "node") -> NodeProcesses:
        workdir = tmp_path / name
        workdir.mkdir()
        node = NodeProcesses(workdir, {**FAST_RECOVERY_ENV, **(env or {})})
        nodes.append(node)
        return node

    yield factory
    for node in reversed(nodes):
        # Workers take ~5 s for Celery's warm shutdown; the test is over, so they
        # are killed (by their own process group) and the rest stopped normally.
        for process in node.processes:
            if "worker" in process.argv and process.proc is not None:
                kill_hard(process)
        node.stop()


@pytest.fixture
def start_node() -> StartNode:
    """``start_node(node, workers=1)``: migrate, start serve and workers, wait until it listens.

    Returns the serve process and the worker processes, in start order.
    """

    def start(
        node: NodeProcesses, workers: int = 1
    ) -> tuple[BackgroundProcess, list[BackgroundProcess]]:
        node.cli("db", "upgrade")
        serve = node.start("serve")
        started = [node.start("worker") for _ in range(workers)]
        node.wait_listening()
        return serve, started

    return start


@pytest.fixture
def open_db() -> Iterator[Callable[[NodeProcesses], NodeDB]]:
    """``open_db(node)``: read access to the node's database, disposed after the test."""
    opened: list[NodeDB] = []

    def factory(node: NodeProcesses) -> NodeDB:
        db = node_db(node)
        opened.append(db)
        return db

    yield factory
    for db in opened:
        db.dispose()
