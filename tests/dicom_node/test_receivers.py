"""Several receiver processes on one listening socket: every instance is stored once."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.config import Settings
from core.db.migrate import upgrade
from core.db.models import Instance, Series
from core.db.session import make_engine, make_session_factory
from dicom_node.group_commit import GroupCommitRecorder
from dicom_node.receivers import ReceiverPool
from dicom_node.server import StorageSCP
from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dcmtk import storescu
from tests.support.waiting import wait_until


def _split(paths: list[Path], parts: int) -> list[list[Path]]:
    return [paths[i::parts] for i in range(parts)]


def test_receiver_processes_share_the_port_and_store_every_instance_once(
    make_settings: Callable[..., Settings], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(receiver_processes=3, log_level="INFO")
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    recorded: list[int] = []
    lock = threading.Lock()

    def on_recorded(study_id: int) -> None:
        with lock:
            recorded.append(study_id)

    # As the service does it: this process listens and records, the children accept.
    recorder = GroupCommitRecorder(make_session_factory(engine))
    scp = StorageSCP(settings, recorder, on_recorded)
    scp.start(accept=False)
    pool = ReceiverPool(settings, recorder, on_recorded)
    try:
        pool.start(scp.listener, settings.receiver_processes)
        study = generate_ct_phantom(slices=24, rows=32, columns=32, seed=11)
        files = write_phantom(study, tmp_path / "study")
        results: list = []
        senders = [
            threading.Thread(
                target=lambda chunk=chunk: results.append(
                    storescu("127.0.0.1", scp.port, chunk, called_ae=settings.ae_title)
                )
            )
            for chunk in _split(files, 6)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert all(result.returncode == 0 and not result.failed for result in results)
        assert sum(len(result.succeeded) for result in results) == len(files)

        with make_session_factory(engine)() as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == len(files)
            assert session.scalar(select(Series.instance_count)) == len(files)
        spooled = list(settings.incoming_dir.rglob("*.dcm"))
        assert len(spooled) == len(files)
        # Every recorded instance reached the parent's callback, wherever it was received.
        wait_until(lambda: len(recorded) == len(files), 10, 0.05)
        # The kernel spread the connections over the children.
        served_by = set(re.findall(r"receiver (\d+) \S+: association from", capfd.readouterr().err))
        assert len(served_by) > 1

        # A receiver process that dies takes no connections with it: the others accept them.
        victim = pool._children[0][0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        for _ in range(settings.receiver_processes):
            again = storescu("127.0.0.1", scp.port, files[:2], called_ae=settings.ae_title)
            assert again.returncode == 0 and not again.failed
    finally:
        pool.stop()
        scp.stop()
        engine.dispose()
    assert pool.pids == []
