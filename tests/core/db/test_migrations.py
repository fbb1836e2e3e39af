"""The Alembic migrations build exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from core.db.migrate import alembic_config, current_revision, head_revision, upgrade
from core.db.models import Base
from core.db.session import make_engine
from tests.support.services import fresh_postgres_database

MODEL_TABLES = set(Base.metadata.tables)


def schema_diffs(url: str) -> list[object]:
    """What autogenerate would change to make the database match the models."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'spool' / 'ainode.db'}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    url, drop = fresh_postgres_database("ainode_migrations")
    try:
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def test_history_is_linear_with_one_head() -> None:
    from alembic.script import ScriptDirectory

    from core.db.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert script.get_heads() == [head_revision()]
    assert [rev.revision for rev in script.walk_revisions()][-1] == "0001"


def test_migration_matches_models(database_url: str) -> None:
    assert current_revision(database_url) is None

    upgrade(database_url)

    assert current_revision(database_url) == head_revision()
    assert table_names(database_url) == MODEL_TABLES | {"alembic_version"}
    assert schema_diffs(database_url) == []


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)

    assert current_revision(database_url) == head_revision()
    assert schema_diffs(database_url) == []


def test_downgrade_to_base(database_url: str) -> None:
    upgrade(database_url)

    command.downgrade(alembic_config(database_url), "base")

    assert current_revision(database_url) is None
    assert table_names(database_url) <= {"alembic_version"}

    upgrade(database_url)  # and back up again
    assert schema_diffs(database_url) == []


def test_sqlite_file_is_private(sqlite_url: str, tmp_path: Path) -> None:
    upgrade(sqlite_url)

    database = tmp_path / "spool" / "ainode.db"
    assert database.is_file()
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    for companion in (database.with_name("ainode.db-wal"), database.with_name("ainode.db-shm")):
        if companion.exists():
            assert stat.S_IMODE(companion.stat().st_mode) & 0o077 == 0


def test_comparison_detects_drift(sqlite_url: str) -> None:
    """Guard against a vacuous comparison: a missing index is reported."""
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP INDEX ix_jobs_state")
    finally:
        engine.dispose()

    diffs = schema_diffs(sqlite_url)

    assert [diff[0] for diff in diffs] == ["add_index"]  # type: ignore[index]


def test_results_made_before_seg_types_are_binary(database_url: str) -> None:
    """0004: the SEG and SR of a segmentation job become BINARY; a findings SR stays NULL."""
    upgrade(database_url, "0003")
    now = "2026-01-01 00:00:00+00:00"
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            run = connection.exec_driver_sql
            run(
                "INSERT INTO studies (id, study_instance_uid, state, first_received_at, "
                f"last_received_at) VALUES (1, '1.2.3', 'routed', '{now}', '{now}')"
            )
            run(
                "INSERT INTO series (id, study_id, series_instance_uid, instance_count, "
                f"last_received_at) VALUES (1, 1, '1.2.3.4', 1, '{now}')"
            )
            for job_id, kinds in ((1, ("seg", "sr")), (2, ("sr",))):
                run(
                    "INSERT INTO jobs (id, study_id, series_id, rule_name, pipeline, queue, "
                    "input_key, state, attempts, created_at) VALUES "
                    f"({job_id}, 1, 1, 'r', 'p{job_id}', 'cpu', 'k', 'succeeded', 1, '{now}')"
                )
                for number, kind in enumerate(kinds):
                    run(
                        "INSERT INTO results (job_id, kind, sop_class_uid, sop_instance_uid, "
                        "series_instance_uid, path, size_bytes, created_at) VALUES "
                        f"({job_id}, '{kind}', '1.2', '9.{job_id}.{number}', '9', 'p', 1, "
                        f"'{now}')"
                    )
        upgrade(database_url)
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT job_id, kind, seg_type FROM results ORDER BY id"
            ).all()
    finally:
        engine.dispose()

    assert [tuple(row) for row in rows] == [
        (1, "seg", "BINARY"),
        (1, "sr", "BINARY"),
        (2, "sr", None),
    ]
