"""Fixtures of the Storage SCP tests: a listening SCP with its own database and spool."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification
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

#: The calling AE title of :func:`associate` unless told otherwise.
SCU_AE = "TESTSCU"


@contextmanager
def associate(
    node: Node, calling_ae: str = SCU_AE, called_ae: str | None = None
) -> Iterator[Association]:
    """An association from a pynetdicom SCU; released (or aborted) afterwards."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=called_ae or node.settings.ae_title)
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def store(assoc: Association, dataset: Dataset | Path) -> int:
    """The status of a C-STORE of ``dataset`` on ``assoc``."""
    assert assoc.is_established
    response = assoc.send_c_store(dataset)
    assert "Status" in response, "no C-STORE response"
    return int(response.Status)


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
