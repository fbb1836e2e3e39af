"""Fixtures of the Storage SCP tests: a listening SCP with its own database and spool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.migrate import upgrade
from core.db.session import make_engine, make_session_factory
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.scp.server import StorageSCP
from dicom_node.scp.settings import ScpSettings


@dataclass
class Node:
    """A running Storage SCP with its database and what ``on_recorded`` received."""

    settings: Settings
    scp: StorageSCP
    session_factory: sessionmaker[Session]
    engine: Engine
    recorded: list[int] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.scp.port

    def session(self) -> Session:
        return self.session_factory()

    def spooled_files(self) -> list[Path]:
        return sorted(p for p in self.settings.incoming_dir.rglob("*") if p.is_file())

    def receive_leftovers(self) -> list[Path]:
        return sorted((self.settings.spool_path / "tmp").iterdir())

    def count(self, model: type) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)


NodeFactory = Callable[..., Node]


@pytest.fixture
def start_node(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[NodeFactory]:
    """``start_node(**settings overrides)``: a listening SCP on a free loopback port."""
    nodes: list[Node] = []

    def factory(**overrides: Any) -> Node:
        settings = make_settings(**overrides)
        settings.spool_path.mkdir(parents=True, exist_ok=True)
        upgrade(settings.effective_database_url)
        engine = make_engine(settings.effective_database_url)
        node = Node(settings, None, make_session_factory(engine), engine)  # type: ignore[arg-type]
        node.scp = StorageSCP(
            ScpSettings.from_settings(settings),
            GroupCommitRecorder(node.session_factory),
            on_recorded=node.recorded.append,
        )
        node.scp.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.scp.stop()
        node.engine.dispose()


@pytest.fixture
def node(start_node: NodeFactory) -> Node:
    return start_node()
