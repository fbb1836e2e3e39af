"""Several receiver processes on one port (SO_REUSEPORT): every instance is stored once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.config import Settings
from core.db.migrate import upgrade
from core.db.models import Instance, Series
from core.db.session import make_engine, make_session_factory
from dicom_node.receivers import ReceiverPool, reuse_port_supported
from dicom_node.server import StorageSCP
from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dcmtk import storescu
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="no SO_REUSEPORT")


def _split(paths: list[Path], parts: int) -> list[list[Path]]:
    return [paths[i::parts] for i in range(parts)]


def test_receiver_processes_share_the_port_and_store_every_instance_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(receiver_processes=3)
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    recorded: list[int] = []
    lock = threading.Lock()

    def on_recorded(study_id: int) -> None:
        with lock:
            recorded.append(study_id)

    scp = StorageSCP(settings, make_session_factory(engine), on_recorded, reuse_port=True)
    scp.start()
    pool = ReceiverPool(settings, on_recorded)
    try:
        pool.start(scp.port, settings.receiver_processes - 1)
        study = generate_ct_phantom(slices=24, rows=32, columns=32, seed=11)
        files = write_phantom(study, tmp_path / "study")
        # The children bind after start() returns: wait until each one has a listener.
        wait_until(lambda: all(p.is_alive() for p, _ in pool._children), 10, 0.05)
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

        # With the main SCP closed, the children still answer on the same port.
        port = scp.port
        scp.stop()
        again = storescu("127.0.0.1", port, files[:2], called_ae=settings.ae_title)
        assert again.returncode == 0 and not again.failed
    finally:
        pool.stop()
        scp.stop()
        engine.dispose()
    assert pool.pids == []


def test_a_study_recorded_before_the_child_says_ready_is_not_lost(
    make_settings: Callable[..., Settings],
) -> None:
    import multiprocessing

    recorded: list[int] = []
    pool = ReceiverPool(make_settings(), recorded.append)
    parent_end, child_end = multiprocessing.Pipe()
    child_end.send(5)  # an instance stored between the child's start and its READY
    child_end.send("ready")
    child_end.send(6)

    pool._await_ready(multiprocessing.current_process(), parent_end)

    assert recorded == [5]
    assert parent_end.recv() == 6  # the rest is for the relay
