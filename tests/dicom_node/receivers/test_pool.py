"""Several receiver processes on one listening socket: every instance is stored once."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from core.config import Settings
from core.db.migrate import upgrade
from core.db.models import Instance, Series
from core.db.session import make_engine, make_session_factory
from dicom_node.receivers.pool import ReceiverPool
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.scp.server import StorageSCP
from dicom_node.scp.settings import ScpSettings
from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dcmtk import echoscu, storescu
from tests.support.refusals import refusal_counts
from tests.support.waiting import wait_until


def _split(paths: list[Path], parts: int) -> list[list[Path]]:
    return [paths[i::parts] for i in range(parts)]


@dataclass
class ReceivingNode:
    """An SCP that hands its connections to receiver processes, as the service runs it."""

    settings: Settings
    scp: StorageSCP
    pool: ReceiverPool
    engine: Engine
    recorded: list[int]


@contextmanager
def receiving_node(
    make_settings: Callable[..., Settings], **overrides: Any
) -> Iterator[ReceivingNode]:
    settings = make_settings(log_level="INFO", **overrides)
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    recorded: list[int] = []
    lock = threading.Lock()

    def on_recorded(study_id: int) -> None:
        with lock:
            recorded.append(study_id)

    recorder = GroupCommitRecorder(make_session_factory(engine))
    scp_settings = ScpSettings.from_settings(settings)
    pool = ReceiverPool(scp_settings, recorder, on_recorded)
    scp = StorageSCP(scp_settings, recorder, on_recorded, hand_over=pool.hand_over)
    try:
        pool.start(settings.receiver_processes)
        scp.start()
        yield ReceivingNode(settings, scp, pool, engine, recorded)
    finally:
        scp.stop()
        pool.stop()
        engine.dispose()
    assert pool.pids == []


@contextmanager
def held_associations(node: ReceivingNode, count: int) -> Iterator[list[Any]]:
    """``count`` Verification associations kept open until the block ends."""
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    with ExitStack() as stack:
        associations = []
        for _ in range(count):
            association = ae.associate("127.0.0.1", node.scp.port, ae_title=node.settings.ae_title)
            stack.callback(association.release)
            associations.append(association)
        yield associations


def served_by(log: str) -> Counter[str]:
    """How many associations each receiver process accepted, from the log."""
    return Counter(re.findall(r"receiver (\d+) \S+: accepted association from", log))


def test_receiver_processes_store_every_instance_once(
    make_settings: Callable[..., Settings], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with receiving_node(make_settings, receiver_processes=3) as node:
        study = generate_ct_phantom(slices=24, rows=32, columns=32, seed=11)
        files = write_phantom(study, tmp_path / "study")
        results: list = []
        senders = [
            threading.Thread(
                target=lambda chunk=chunk: results.append(
                    storescu("127.0.0.1", node.scp.port, chunk, called_ae=node.settings.ae_title)
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

        with make_session_factory(node.engine)() as session:
            assert session.scalar(select(func.count()).select_from(Instance)) == len(files)
            assert session.scalar(select(Series.instance_count)) == len(files)
        spooled = list(node.settings.incoming_dir.rglob("*.dcm"))
        assert len(spooled) == len(files)
        # Every recorded instance reached the parent's callback, wherever it was received.
        wait_until(lambda: len(node.recorded) == len(files), 10, 0.05)
        assert len(served_by(capfd.readouterr().err)) > 1

        # A receiver process that dies takes no connections with it: the others serve them.
        victim = node.pool._children[0].process
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
        for _ in range(node.settings.receiver_processes):
            again = storescu(
                "127.0.0.1", node.scp.port, files[:2], called_ae=node.settings.ae_title
            )
            assert again.returncode == 0 and not again.failed


def test_instances_refused_in_receiver_processes_are_counted_by_the_main_process(
    make_settings: Callable[..., Settings],
) -> None:
    study = generate_ct_phantom(slices=4, rows=16, columns=16, seed=12)
    bad = study.datasets[:3]
    for dataset in bad:
        del dataset.SeriesInstanceUID
    with receiving_node(make_settings, receiver_processes=2) as node:
        answered = []
        for dataset in [*bad, study.datasets[3]]:  # each served by a receiver process
            ae = AE(ae_title="BADSENDER")
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            association = ae.associate("127.0.0.1", node.scp.port, ae_title=node.settings.ae_title)
            answered.append(int(association.send_c_store(dataset).Status))
            association.release()
        assert answered == [0xC001, 0xC001, 0xC001, 0x0000]

        sessions = make_session_factory(node.engine)
        expected = {(0xC001, "invalid-instance", "BADSENDER"): 3}
        wait_until(lambda: refusal_counts(sessions) == expected, 10, 0.05)


def test_open_associations_are_spread_evenly_over_the_receiver_processes(
    make_settings: Callable[..., Settings], capfd: pytest.CaptureFixture[str]
) -> None:
    with receiving_node(make_settings, receiver_processes=3) as node:
        with held_associations(node, 6) as associations:
            assert all(association.is_established for association in associations)
            counts = served_by(capfd.readouterr().err)
        assert sorted(counts.values()) == [2, 2, 2]
        assert set(counts) == {str(pid) for pid in node.pool.pids}
        # Ended associations are counted off: the next ones go where there is room again.
        wait_until(lambda: node.pool.open_associations == 0, 10, 0.05)
        with held_associations(node, 3):
            counts = served_by(capfd.readouterr().err)
        assert sorted(counts.values()) == [1, 1, 1]


def test_the_association_limit_counts_the_associations_of_every_receiver_process(
    make_settings: Callable[..., Settings],
) -> None:
    settings = {"receiver_processes": 2, "max_associations": 2}
    with (
        receiving_node(make_settings, **settings) as node,
        held_associations(node, 2) as associations,
    ):
        assert all(association.is_established for association in associations)
        ae = AE(ae_title="LATECOMER")
        ae.add_requested_context(Verification)
        late = ae.associate("127.0.0.1", node.scp.port, ae_title=node.settings.ae_title)
        assert late.is_rejected
        assert late.acceptor.primitive.result == 0x02  # transient: try again later


def _maps_package(pid: int, package: str) -> bool:
    """Whether process ``pid`` has a file of the installed ``package`` mapped (its C extensions)."""
    return f"/site-packages/{package}/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize("package", ["sqlalchemy", "pydantic_core", "numpy", "PIL"])
def test_a_receiver_process_loads_only_what_the_scp_needs(
    make_settings: Callable[..., Settings], tmp_path: Path, package: str
) -> None:
    """The main process records the rows and validates the settings; receivers never decode pixels.

    So a receiver needs neither the database layer, nor pydantic, nor the pixel
    codecs: ≈ 35 MB less in each (see :mod:`dicom_node.receivers.process`).
    """
    assert _maps_package(os.getpid(), package)  # this process has it: the check can see it
    with receiving_node(make_settings, receiver_processes=2) as node:
        study = generate_ct_phantom(slices=4, rows=32, columns=32, seed=12)
        files = write_phantom(study, tmp_path / "study")
        for chunk in _split(files, 2):
            stored = storescu("127.0.0.1", node.scp.port, chunk, called_ae=node.settings.ae_title)
            assert stored.returncode == 0 and len(stored.succeeded) == len(chunk)
        assert len(node.pool.pids) == 2
        assert not any(_maps_package(pid, package) for pid in node.pool.pids)


def test_receiver_processes_run_the_nodes_own_modules_whatever_the_working_folder(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "cwd" / "dicom_node" / "receivers"
    decoy.mkdir(parents=True)
    (decoy.parent / "__init__.py").write_text("")
    (decoy / "__init__.py").write_text("")
    (decoy / "process.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(decoy.parent.parent)
    with receiving_node(make_settings, receiver_processes=2) as node:
        assert all(child.process.poll() is None for child in node.pool._children)
        files = write_phantom(generate_ct_phantom(slices=2, rows=32, columns=32), tmp_path / "s")
        stored = storescu("127.0.0.1", node.scp.port, files, called_ae=node.settings.ae_title)
        assert stored.returncode == 0 and len(stored.succeeded) == len(files)


def test_receiver_processes_that_die_at_once_leave_the_node_running(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A child that exits before it serves is logged; the pool starts and refuses connections."""
    settings = make_settings(receiver_processes=2)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    recorder = GroupCommitRecorder(make_session_factory(engine))
    pool = ReceiverPool(ScpSettings.from_settings(settings), recorder, print)
    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    start = subprocess.Popen

    def exited(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process = start(*args, **kwargs)
        process.wait()  # gone before the pool sends it anything
        return process

    monkeypatch.setattr(subprocess, "Popen", exited)
    try:
        pool.start(2)
        assert caplog.text.count("did not start") == 2
        client, server = socket.socketpair()
        pool.hand_over(server)  # no receiver to take it: closed, not raised
        assert client.recv(1) == b""
        client.close()
    finally:
        pool.stop()
        engine.dispose()


_POOL_SCRIPT = """
import sys
from core.config import Settings
from core.db.session import make_engine, make_session_factory
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.receivers.pool import ReceiverPool
from dicom_node.scp.settings import ScpSettings

settings = Settings.model_validate_json(sys.argv[1])
recorder = GroupCommitRecorder(make_session_factory(make_engine(settings.effective_database_url)))
pool = ReceiverPool(ScpSettings.from_settings(settings), recorder, lambda _study_id: None)
pool.start(settings.receiver_processes)
print(*pool.pids, flush=True)
sys.stdin.read()  # until the test kills this process
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_receiver_processes_exit_when_the_main_process_is_killed(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(receiver_processes=2)
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    with subprocess.Popen(
        [sys.executable, "-c", _POOL_SCRIPT, settings.model_dump_json()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as main:
        try:
            assert main.stdout is not None
            children = [int(pid) for pid in main.stdout.readline().split()]
            assert len(children) == 2 and all(_running(pid) for pid in children)
        finally:
            main.kill()
    # idle children learn it from their hand-over channel, and stop
    wait_until(lambda: not any(_running(pid) for pid in children), 20, 0.1)


def test_idle_connections_do_not_count_as_associations_across_receivers(
    make_settings: Callable[..., Settings],
) -> None:
    with receiving_node(make_settings, receiver_processes=2, max_associations=1) as node:
        idle = [socket.create_connection(("127.0.0.1", node.scp.port)) for _ in range(4)]
        try:
            wait_until(lambda: node.pool.open_associations == 4, 10, 0.05)
            result = echoscu("127.0.0.1", node.scp.port, node.settings.ae_title)
            assert result.returncode == 0, result.stderr
            with held_associations(node, 1) as (held,):
                assert held.is_established
                refused = echoscu("127.0.0.1", node.scp.port, node.settings.ae_title)
                assert refused.returncode != 0  # the limit counts the negotiated one
        finally:
            for sock in idle:
                sock.close()
