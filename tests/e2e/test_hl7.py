"""HL7 ORU^R01 after delivery to a real MLLP listener (hl7apy server; the node sends with ``hl7``).

One message per result once the DICOM deliveries succeeded, with the study's
accession number and the SR's values; a NAK is retried; a listener that is
down is retried, then given up; ``ainode status`` lists message and ACK.
Over TLS (``host:port/tls``) the node verifies the listener's certificate
against ``AINODE_TLS_CA_FILE``: a listener it does not trust gets nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hl7apy.core import Segment
from hl7apy.parser import parse_segment
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.status import hl7_rows
from core.config import Settings
from core.db.models import Hl7Message, Hl7State, Result
from pipelines.phantom import PhantomStudy
from tests.support.certificates import ThrowawayCA
from tests.support.dcmtk import StoreSCP
from tests.support.jobs import run_job
from tests.support.mllp import MllpListener
from tests.support.ports import free_port
from tests.support.sr import measured_values
from tests.worker.conftest import RecordingApp, SpoolStudy
from worker.hl7.outbox import Hl7Outcome, execute_hl7
from worker.queues import SEND_HL7
from worker.runtime import WorkerRuntime
from worker.tasks.send import DeliveryOutcome, execute_delivery

pytestmark = pytest.mark.e2e

ACCESSION = "ACC-HL7-77"


@pytest.fixture
def ordered_phantom(small_phantom: PhantomStudy) -> PhantomStudy:
    for dataset in small_phantom.datasets:
        dataset.AccessionNumber = ACCESSION
        dataset.RequestedProcedureDescription = "CT Thorax nativ"
    return small_phantom


Deliver = Callable[..., tuple[WorkerRuntime, list[int]]]


@pytest.fixture
def deliver(
    make_settings: Callable[..., Settings],
    session_factory: sessionmaker[Session],
    recording_app: RecordingApp,
    spool_study: SpoolStudy,
    ordered_phantom: PhantomStudy,
) -> Deliver:
    """``deliver(hl7_destination, **settings)``: the ordered phantom's job, delivered to a PACS.

    Returns the runtime of those settings and the ids of the HL7 messages queued.
    """

    def run(hl7_destination: str, **overrides: object) -> tuple[WorkerRuntime, list[int]]:
        with StoreSCP(aet="PACS") as pacs:
            settings = make_settings(
                destinations=f"PACS@127.0.0.1:{pacs.port}",
                hl7_destinations=hl7_destination,
                **overrides,
            )
            ids = run_job(settings, session_factory, recording_app, spool_study(ordered_phantom))
            runtime = WorkerRuntime.from_settings(settings)
            for delivery_id in ids.values():
                outcome = execute_delivery(runtime, delivery_id, recording_app)
                assert outcome == DeliveryOutcome.SUCCEEDED
        return runtime, [args[0] for name, args, _ in recording_app.sent if name == SEND_HL7]

    return run


def _segments(text: str) -> dict[str, list[Segment]]:
    """The segments of an ER7 message by name, parsed by hl7apy (not the sender's library)."""
    segments: dict[str, list[Segment]] = {}
    for line in filter(None, text.split("\r")):
        segment = parse_segment(line, version="2.5.1")
        segments.setdefault(segment.name, []).append(segment)
    return segments


def _message(factory: sessionmaker[Session], message_id: int) -> Hl7Message:
    with factory() as session:
        return session.get_one(Hl7Message, message_id)


def _retried_then_given_up(
    runtime: WorkerRuntime, factory: sessionmaker[Session], message_id: int
) -> str:
    """Two attempts allowed: the first is retried soon, the second gives up; the reason recorded."""
    assert execute_hl7(runtime, message_id) == Hl7Outcome.RETRYING
    waiting = _message(factory, message_id)
    assert waiting.state == Hl7State.RETRYING and waiting.last_error is not None
    assert waiting.next_attempt_at is not None
    assert waiting.next_attempt_at - waiting.created_at < timedelta(seconds=5)

    assert execute_hl7(runtime, message_id) == Hl7Outcome.FAILED
    failed = _message(factory, message_id)
    assert (failed.state, failed.attempts, failed.ack_code) == (Hl7State.FAILED, 2, None)
    assert failed.last_error == waiting.last_error
    return waiting.last_error


def test_one_oru_per_result_with_the_accession_and_the_sr_values(
    session_factory: sessionmaker[Session],
    deliver: Deliver,
    ordered_phantom: PhantomStudy,
    tmp_path: Path,
) -> None:
    with MllpListener(tmp_path / "ris") as ris:
        runtime, queued = deliver(f"127.0.0.1:{ris.port}", hl7_abnormal_flags={"Left lung": "A"})
        assert len(queued) == 1, "one ORU per result and HL7 destination"

        assert execute_hl7(runtime, queued[0]) == Hl7Outcome.SENT
        assert execute_hl7(runtime, queued[0]) == Hl7Outcome.SKIPPED
        received = ris.messages()

    assert len(received) == 1
    oru = _segments(received[0])
    [msh], [pid], [obr], obxs = oru["MSH"], oru["PID"], oru["OBR"], oru["OBX"]
    assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01" and msh.msh_12.to_er7() == "2.5.1"
    assert obr.obr_3.to_er7() == ACCESSION and obr.obr_18.to_er7() == ACCESSION
    assert obr.obr_4.to_er7() == "ct-lungs^CT Thorax nativ^L"
    assert pid.pid_3.to_er7().startswith(ordered_phantom.datasets[0].PatientID)
    rows = [obx.obx_5.to_er7() for obx in obxs]
    assert rows[0] == ordered_phantom.study_instance_uid
    with session_factory() as session:
        sr = session.scalars(select(Result.path).where(Result.kind == "sr")).one()
    volumes = [f"{value:.6g}" for name, value in measured_values(dcmread(sr)) if name == "Volume"]
    sent_volumes = [
        obx.obx_5.to_er7() for obx in obxs if obx.obx_3.to_er7().split("^")[1] == "Volume"
    ]
    assert sent_volumes == volumes and len(volumes) == 3
    flags = {
        obx.obx_5.to_er7().split("^")[1]: obx.obx_8.to_er7()
        for obx in obxs
        if obx.obx_2.to_er7() == "CWE"
    }
    assert flags == {"Entire body": "", "Left lung": "A", "Right lung": ""}

    message = _message(session_factory, queued[0])
    assert (message.state, message.ack_code, message.attempts) == (Hl7State.SENT, "AA", 1)
    assert message.message == received[0].rstrip("\r")
    with session_factory() as session:
        listed = hl7_rows(session, 10, with_text=True)
    assert listed[0]["state"] == "sent" and listed[0]["ack"] == "AA"
    assert "MSA|AA|" + message.control_id in listed[0]["ack_text"]


def test_a_nak_is_retried_and_the_second_attempt_is_acknowledged(
    session_factory: sessionmaker[Session],
    deliver: Deliver,
    recording_app: RecordingApp,
    tmp_path: Path,
) -> None:
    with MllpListener(tmp_path / "ris", nak_first=1) as ris:
        runtime, [message_id] = deliver(f"127.0.0.1:{ris.port}", delivery_backoff_seconds=0.1)

        assert execute_hl7(runtime, message_id, recording_app) == Hl7Outcome.RETRYING
        nak = _message(session_factory, message_id)
        assert (nak.state, nak.ack_code) == (Hl7State.RETRYING, "AE")
        assert nak.last_error == "NAK AE: order not found" and nak.next_attempt_at is not None
        assert recording_app.sent[-1] == (SEND_HL7, [message_id], "send")

        assert execute_hl7(runtime, message_id, recording_app) == Hl7Outcome.SENT
        assert len(ris.messages()) == 2
    acked = _message(session_factory, message_id)
    assert (acked.state, acked.ack_code, acked.attempts, acked.last_error) == (
        Hl7State.SENT,
        "AA",
        2,
        None,
    )


def test_a_listener_that_is_down_is_retried_then_given_up(
    session_factory: sessionmaker[Session], deliver: Deliver
) -> None:
    runtime, [message_id] = deliver(
        f"127.0.0.1:{free_port()}",
        hl7_ack_timeout_seconds=2,
        delivery_max_attempts=2,
        delivery_backoff_seconds=0.1,
    )

    reason = _retried_then_given_up(runtime, session_factory, message_id)
    assert reason.startswith("cannot send")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    """The CA the node trusts (``AINODE_TLS_CA_FILE``)."""
    return ThrowawayCA(tmp_path_factory.mktemp("pki"))


def test_an_oru_over_tls_reaches_a_listener_with_a_certificate_from_the_ca(
    session_factory: sessionmaker[Session],
    deliver: Deliver,
    ca: ThrowawayCA,
    tmp_path: Path,
) -> None:
    with MllpListener(tmp_path / "ris", tls=ca.issue("ris")) as ris:
        runtime, [message_id] = deliver(f"127.0.0.1:{ris.port}/tls", tls_ca_file=ca.cert)
        assert execute_hl7(runtime, message_id) == Hl7Outcome.SENT
        [received] = ris.messages()

    assert _segments(received)["OBR"][0].obr_3.to_er7() == ACCESSION
    message = _message(session_factory, message_id)
    assert (message.state, message.ack_code, message.attempts) == (Hl7State.SENT, "AA", 1)
    assert message.ack is not None and "MSA|AA|" + message.control_id in message.ack


def test_a_listener_whose_certificate_is_not_trusted_gets_nothing_and_is_given_up(
    session_factory: sessionmaker[Session],
    deliver: Deliver,
    ca: ThrowawayCA,
    tmp_path: Path,
) -> None:
    rogue = ThrowawayCA(tmp_path / "rogue", "rogue-ca").issue("ris")
    with MllpListener(tmp_path / "ris", tls=rogue) as ris:
        runtime, [message_id] = deliver(
            f"127.0.0.1:{ris.port}/tls",
            tls_ca_file=ca.cert,
            delivery_max_attempts=2,
            delivery_backoff_seconds=0.1,
        )

        reason = _retried_then_given_up(runtime, session_factory, message_id)
        assert ris.messages() == []
    assert reason == (
        f"cannot send to 127.0.0.1:{ris.port}/tls: its TLS certificate is not trusted"
        " (unable to get local issuer certificate)"
    )
