"""Storage Commitment against Orthanc: committed, a lost instance re-sent, a restart, a timeout.

Orthanc (Debian's 1.10) is the PACS.  Its Lua filter drops the first copy of
the SR it receives while answering the C-STORE with success (what a PACS that
"loses" an object looks like to the sender), so its commitment report names
the SR failed; the node's own Storage SCP receives the report on a new
association, as in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db.models import Delivery, DeliveryState, Hl7Message
from core.db.session import make_engine, make_session_factory
from dicom_node.recording.group_commit import GroupCommitRecorder
from dicom_node.scp.server import StorageSCP
from dicom_node.scp.settings import ScpSettings
from tests.support.jobs import run_job
from tests.support.orthanc import OrthancServer
from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.worker.conftest import RecordingApp, SpoolStudy
from worker.commitment import apply_inbox, sweep_commitments
from worker.runtime import WorkerRuntime
from worker.tasks.send import DeliveryOutcome, execute_delivery

pytestmark = pytest.mark.e2e

#: Drops the first copy of every SR it receives, yet Orthanc answers the C-STORE with success.
DROP_FIRST_SR = """
dropped = {}
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == "SR" and dropped[dicom.SOPInstanceUID] == nil then
    dropped[dicom.SOPInstanceUID] = true
    return false
  end
  return true
end
"""


@dataclass
class NodeScp:
    """The node's Storage SCP with the re-sends and HL7 messages its applied reports queued."""

    scp: StorageSCP
    resend: list[int]
    hl7_messages: list[int]


@pytest.fixture
def node_port() -> int:
    return free_port()


@pytest.fixture
def start_scp(
    make_settings: Callable[..., Settings], node_port: int
) -> Iterator[Callable[..., NodeScp]]:
    """``start_scp(**settings)``: the node's SCP on ``node_port``, a fresh process's objects."""
    started: list[tuple[StorageSCP, object]] = []

    def start(**overrides: object) -> NodeScp:
        settings = make_settings(port=node_port, **overrides)
        engine = make_engine(settings.effective_database_url)
        factory = make_session_factory(engine)
        node = NodeScp(None, [], [])  # type: ignore[arg-type]

        def applied() -> None:
            outcome = apply_inbox(node.scp.commitment, factory, settings)
            node.resend += outcome.resend
            node.hl7_messages += outcome.hl7_messages

        node.scp = StorageSCP(
            ScpSettings.from_settings(settings),
            GroupCommitRecorder(factory),
            on_commitment_report=applied,
        )
        node.scp.start()
        started.append((node.scp, engine))
        return node

    yield start
    for scp, engine in started:
        scp.stop()
        engine.dispose()  # type: ignore[attr-defined]


@pytest.fixture
def orthanc(node_port: int, tmp_path: Path) -> Iterator[OrthancServer]:
    lua = tmp_path / "drop-first-sr.lua"
    lua.write_text(DROP_FIRST_SR)
    modalities = {"ainode": ["AINODE", "127.0.0.1", node_port]}
    with OrthancServer(modalities, extra_config={"LuaScripts": [str(lua)]}) as server:
        yield server


@dataclass
class CommitJob:
    """The phantom's job run with a committing Orthanc destination."""

    settings: Settings
    ids: dict[str, int]
    runtime: WorkerRuntime


@pytest.fixture
def commit_job(
    make_settings: Callable[..., Settings],
    session_factory: sessionmaker[Session],
    spool_study: SpoolStudy,
    small_phantom,
    recording_app: RecordingApp,
    orthanc: OrthancServer,
) -> Callable[..., CommitJob]:
    """``commit_job(**settings)``: spool the small phantom, route and run its job.

    Its results go to Orthanc with Storage Commitment; the delivery ids are by kind.
    """

    def run(**overrides: object) -> CommitJob:
        settings = make_settings(
            destinations=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}/commit", **overrides
        )
        ids = run_job(settings, session_factory, recording_app, spool_study(small_phantom))
        return CommitJob(settings, ids, WorkerRuntime.from_settings(settings))

    return run


def _state(factory: sessionmaker[Session], delivery_id: int) -> Delivery:
    with factory() as session:
        return session.get_one(Delivery, delivery_id)


def test_a_lost_instance_is_reported_failed_then_re_sent_and_committed(
    session_factory: sessionmaker[Session],
    commit_job: Callable[..., CommitJob],
    orthanc: OrthancServer,
    start_scp: Callable[[], NodeScp],
) -> None:
    ris = f"127.0.0.1:{free_port()}"
    node = start_scp(hl7_destinations=ris)
    run = commit_job(hl7_destinations=ris)
    ids, runtime = run.ids, run.runtime

    for delivery_id in ids.values():
        assert execute_delivery(runtime, delivery_id) == DeliveryOutcome.SUCCEEDED

    seg = wait_until(
        lambda: (d := _state(session_factory, ids["seg"])).state == DeliveryState.COMMITTED and d,
        message=orthanc.log_tail,
    )
    sr = wait_until(
        lambda: (
            (d := _state(session_factory, ids["sr"])).state == DeliveryState.COMMIT_FAILED and d
        ),
        message=orthanc.log_tail,
    )
    assert seg.committed_at is not None and seg.commit_transaction_uid
    assert sr.last_error == "storage commitment failed: no such object instance"
    assert sr.next_attempt_at is not None and node.resend == [ids["sr"]]

    assert execute_delivery(runtime, ids["sr"]) == DeliveryOutcome.SUCCEEDED
    resent = wait_until(
        lambda: (d := _state(session_factory, ids["sr"])).state == DeliveryState.COMMITTED and d,
        message=orthanc.log_tail,
    )
    assert resent.commit_transaction_uid != sr.commit_transaction_uid
    assert resent.attempts == 2 and resent.last_error is None
    assert orthanc.statistics()["CountInstances"] == 2
    # the ORU waits for the last commitment, then is written once
    wait_until(lambda: node.hl7_messages, message=orthanc.log_tail)
    with session_factory() as session:
        messages = session.scalars(select(Hl7Message)).all()
    assert [m.id for m in messages] == node.hl7_messages and messages[0].destination == ris


def test_a_report_after_a_node_restart_finds_its_delivery(
    session_factory: sessionmaker[Session],
    commit_job: Callable[..., CommitJob],
    orthanc: OrthancServer,
    start_scp: Callable[[], NodeScp],
) -> None:
    """The node is down when Orthanc reports; the restarted node applies the report."""
    run = commit_job()
    ids, runtime = run.ids, run.runtime

    assert execute_delivery(runtime, ids["seg"]) == DeliveryOutcome.SUCCEEDED
    failed_report = wait_until(
        lambda: [
            job
            for job in orthanc.get("/jobs?expand")
            if job["Type"] == "StorageCommitmentScp" and job["State"] == "Failure"
        ],
        message=orthanc.log_tail,
    )
    assert _state(session_factory, ids["seg"]).state == DeliveryState.SENT

    start_scp()
    orthanc.post(f"/jobs/{failed_report[0]['ID']}/resubmit", {})

    wait_until(
        lambda: _state(session_factory, ids["seg"]).state == DeliveryState.COMMITTED,
        message=orthanc.log_tail,
    )


def test_a_report_that_never_comes_becomes_a_visible_failure(
    session_factory: sessionmaker[Session],
    commit_job: Callable[..., CommitJob],
    start_scp: Callable[[], NodeScp],
) -> None:
    run = commit_job(commitment_timeout_seconds=0.5)
    ids, runtime, settings = run.ids, run.runtime, run.settings
    assert execute_delivery(runtime, ids["seg"]) == DeliveryOutcome.SUCCEEDED
    node = start_scp()  # the report was lost: the node was down

    wait_until(
        lambda: sweep_commitments(node.scp.commitment, session_factory, settings).failed,
        timeout=5,
    )

    delivery = _state(session_factory, ids["seg"])
    assert delivery.state == DeliveryState.COMMIT_FAILED and delivery.next_attempt_at is None
    assert delivery.last_error == "no storage commitment report within 0.5 s"
