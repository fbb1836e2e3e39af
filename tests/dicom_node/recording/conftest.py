"""Fixtures of the recording tests: a migrated database, SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db.migrate import upgrade
from core.db.session import make_engine, make_session_factory
from tests.support.services import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a freshly migrated SQLite file or throw-away PostgreSQL database."""
    drop = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    else:
        url, drop = fresh_postgres_database("ainode_recorder")
    upgrade(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()
    if drop is not None:
        drop()
