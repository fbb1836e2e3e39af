"""What a worker process needs to run tasks, built once per process."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.session import make_engine, make_session_factory
from dicom_node.spool import InstanceSpool


@dataclass
class WorkerRuntime:
    """Settings, database sessions and folders shared by the tasks of one process."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    spool: InstanceSpool
    results_dir: Path
    hostname: str

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerRuntime:
        """Open the database and the spool described by ``settings``."""
        engine = make_engine(settings.effective_database_url)
        return cls(
            settings=settings,
            engine=engine,
            session_factory=make_session_factory(engine),
            spool=InstanceSpool(settings.incoming_dir),
            results_dir=settings.results_dir,
            hostname=socket.gethostname(),
        )
