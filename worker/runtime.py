"""What a worker process needs to run tasks, built once per process."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.session import make_engine, make_session_factory
from dicom_node.store.spool import InstanceSpool
from worker.prefetch import InputPrefetcher


def _load_input(paths: Sequence[Path]) -> Any:
    """:func:`pipelines.io.load_input`, imported on first use (keeps the SCP free of it)."""
    from pipelines.io import load_input

    return load_input(paths)


@dataclass
class WorkerRuntime:
    """Settings, database sessions and folders shared by the tasks of one process."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    spool: InstanceSpool
    results_dir: Path
    hostname: str
    prefetcher: InputPrefetcher = field(default_factory=lambda: InputPrefetcher(_load_input))

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
