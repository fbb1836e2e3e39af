"""Group commit: rows arriving together share a transaction; each gets its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, func, select

from core.config import Settings
from core.db.migrate import upgrade
from core.db.models import Instance, Series, Study
from core.db.session import make_engine, make_session_factory
from dicom_node.recording import group_commit
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.recording.recorder import InstanceRecorder
from tests.support.rows import received_instance


@pytest.fixture
def factory(make_settings: Callable[..., Settings]):
    settings = make_settings()
    settings.spool_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    yield engine, make_session_factory(engine)
    engine.dispose()


def test_concurrent_rows_are_all_recorded_in_fewer_commits(factory) -> None:
    engine, sessions = factory
    commits = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    recorder = GroupCommitRecorder(sessions)
    # Hold the first commit until the others are queued, so they form one batch.
    gate = threading.Event()
    original = group_commit.GroupCommitRecorder._commit

    def slow_commit(self, batch):
        gate.wait(5)
        original(self, batch)

    items = [received_instance(study, sop) for study in (1, 2) for sop in range(20)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(group_commit.GroupCommitRecorder, "_commit", slow_commit)
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(recorder.record, item) for item in items]
            threading.Timer(0.3, gate.set).start()
            study_ids = [future.result(timeout=30) for future in futures]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 40
        assert session.scalar(select(func.count()).select_from(Study)) == 2
        counts = sorted(session.scalars(select(Series.instance_count)))
        ids = dict(session.execute(select(Study.study_instance_uid, Study.id)).all())
    assert counts == [20, 20]
    assert study_ids == [ids[item.study_uid] for item in items]
    assert len(commits) < len(items)


def test_a_failing_row_fails_alone(factory, monkeypatch: pytest.MonkeyPatch) -> None:
    _engine, sessions = factory
    recorder = GroupCommitRecorder(sessions)
    original = InstanceRecorder._write_instance

    def picky(self, connection, item, series_id, now):
        if item.sop_instance_uid.endswith(".13"):
            raise RuntimeError("bad row")
        return original(self, connection, item, series_id, now)

    monkeypatch.setattr(InstanceRecorder, "_write_instance", picky)
    items = [received_instance(3, sop) for sop in range(30)]
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(recorder.record, item) for item in items]
    failed = [item for item, f in zip(items, futures, strict=True) if f.exception() is not None]
    assert [item.sop_instance_uid for item in failed] == ["1.2.3.3.1.13"]
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 29
        assert session.scalar(select(Series.instance_count)) == 29
