"""Fixtures shared by the node's tests: settings on a temp spool, a migrated database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, load_settings
from core.db.migrate import upgrade
from core.db.session import make_engine, make_session_factory

SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SettingsFactory:
    """``make_settings(**overrides)``: settings isolated in this test's temp folder."""
    for name in list(__import__("os").environ):
        if name.startswith("AINODE_"):
            monkeypatch.delenv(name)

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "spool_dir": tmp_path / "var",
            "host": "127.0.0.1",
            "port": 0,
            "stability_seconds": 0.5,
            "network_timeout_seconds": 10,
        }
        values.update(overrides)
        return load_settings(**values)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    """Default test settings: SQLite and the embedded broker under a temp spool."""
    return make_settings()


@pytest.fixture
def session_factory(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test database, migrated to the newest schema."""
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    yield make_session_factory(engine)
    engine.dispose()
