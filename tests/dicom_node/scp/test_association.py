"""The SCP's acceptor at the protocol level: raw sockets that misbehave, and the limits.

Whatever a peer sends, the answer is a PDU the standard defines (A-ABORT,
A-ASSOCIATE-RJ, a failure status), the association ends cleanly, nothing is
left in the spool, and the node goes on serving others.
"""

from __future__ import annotations

import select as readiness
import socket
import struct
import threading
import time
from collections.abc import Callable
from io import BytesIO

import psutil
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.dsutils import decode as decode_dataset
from pynetdicom.dsutils import encode as encode_dataset
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import select

from core.db.models import Instance
from dicom_node.scp import pdu
from tests.dicom_node.conftest import Node, NodeFactory
from tests.support.dcmtk import echoscu
from tests.support.raw_dicom import associate_rq
from tests.support.refusals import refusal_counts
from tests.support.waiting import wait_until

SCU_AE = "RAWSCU"


def _connect(node: Node) -> socket.socket:
    return socket.create_connection(("127.0.0.1", node.port), timeout=10)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = _recv_exactly(sock, 6)
    pdu_type, length = struct.unpack(">BxI", header)
    return pdu_type, _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def _association_request(node: Node) -> bytes:
    """An A-ASSOCIATE-RQ PDU for Verification on context 1."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = SCU_AE
    primitive.called_ae_title = node.settings.ae_title
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    return bytes(request.encode())


def _associate(node: Node) -> socket.socket:
    """A raw connection with an accepted association (Verification on context 1)."""
    sock = _connect(node)
    sock.sendall(_association_request(node))
    pdu_type, _ = _read_pdu(sock)
    assert pdu_type == pdu.PduType.A_ASSOCIATE_AC
    return sock


def _command(
    command_field: int, message_id: int = 5, sop_class: str = Verification, **more: object
) -> bytes:
    """An encoded command set (group length first); ``more`` adds elements by keyword."""
    dataset = Dataset()
    dataset.AffectedSOPClassUID = sop_class
    dataset.CommandField = command_field
    dataset.MessageID = message_id
    dataset.CommandDataSetType = 0x0101
    for keyword, value in more.items():
        setattr(dataset, keyword, value)
    body = encode_dataset(dataset, True, True)
    assert body is not None
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def _store_command(sop_class: str) -> bytes:
    """A C-STORE-RQ command announcing a dataset."""
    return _command(
        0x0001,
        1,
        sop_class,
        AffectedSOPInstanceUID="1.2.3.4",
        Priority=0,
        CommandDataSetType=0x0000,
    )


def _response(sock: socket.socket) -> Dataset:
    pdu_type, body = _read_pdu(sock)
    assert pdu_type == pdu.PduType.P_DATA_TF
    assert body[5] == 0x03  # one complete command fragment
    return decode_dataset(BytesIO(body[6:]), True, True)


def _echo_works(node: Node) -> bool:
    ae = AE(ae_title=SCU_AE)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.settings.ae_title)
    try:
        return assoc.is_established and assoc.send_c_echo().Status == 0
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


@pytest.mark.parametrize(
    ("first_pdu", "reason"),
    [
        # A type PS3.8 does not define is unrecognized (9.3.1: reason 1) ...
        (b"\x09\x00\x00\x00\x00\x04GET ", pdu.AbortReason.UNRECOGNIZED_PDU),
        (b"GET / HTTP/1.1\r\n\r\n", pdu.AbortReason.UNRECOGNIZED_PDU),
        # ... a defined one in the wrong state is unexpected (reason 2).
        (b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", pdu.AbortReason.UNEXPECTED_PDU),
    ],
)
def test_garbage_instead_of_an_association_request_is_aborted(
    node: Node, first_pdu: bytes, reason: int
) -> None:
    with _connect(node) as sock:
        sock.sendall(first_pdu)
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == pdu.PduType.A_ABORT
        assert body[2:] == bytes([0x02, reason])
        assert sock.recv(1) == b""  # and the connection is closed
    assert _echo_works(node)


def test_echo_then_release_over_a_raw_socket(node: Node) -> None:
    with _associate(node) as sock:
        for fragment in pdu.command_pdus(1, _command(0x0030), 16384):
            sock.sendall(fragment)
        response = _response(sock)
        assert response.CommandField == 0x8030
        assert response.MessageIDBeingRespondedTo == 5
        assert response.Status == 0
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert _read_pdu(sock)[0] == pdu.PduType.A_RELEASE_RP


def test_an_operation_the_node_does_not_perform_gets_a_failure_status(node: Node) -> None:
    with _associate(node) as sock:
        for fragment in pdu.command_pdus(1, _command(0x0020), 16384):  # C-FIND-RQ
            sock.sendall(fragment)
        response = _response(sock)
        assert response.CommandField == 0x8020
        assert response.Status == 0x0211  # unrecognized operation
        for fragment in pdu.command_pdus(1, _command(0x0030, 6), 16384):
            sock.sendall(fragment)
        assert _response(sock).Status == 0  # the association goes on


def test_a_fragmented_command_is_reassembled(node: Node) -> None:
    with _associate(node) as sock:
        fragments = pdu.command_pdus(1, _command(0x0030), 30)
        assert len(fragments) == 3
        for fragment in fragments:
            sock.sendall(fragment)
        assert _response(sock).Status == 0


def test_data_on_a_context_that_was_not_accepted_is_aborted(node: Node) -> None:
    with _associate(node) as sock:
        sock.sendall(pdu.command_pdus(3, _command(0x0030), 16384)[0])
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == pdu.PduType.A_ABORT
        assert body[2:] == bytes([0x02, pdu.AbortReason.INVALID_PARAMETER_VALUE])
    assert _echo_works(node)


def test_release_in_the_middle_of_an_instance_is_aborted_and_nothing_kept(node: Node) -> None:
    with _associate(node) as sock:
        sock.sendall(pdu.command_pdus(1, _store_command(Verification), 16384)[0])
        data = struct.pack(">IBB", 2 + 100, 1, 0x00) + b"\0" * 100  # not the last fragment
        sock.sendall(struct.pack(">BxI", 0x04, len(data)) + data)
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert _read_pdu(sock)[0] == pdu.PduType.A_ABORT
    assert node.receive_leftovers() == []
    with node.session() as session:
        assert session.scalars(select(Instance)).all() == []


def test_associations_over_the_limit_are_rejected_as_transient(start_node: NodeFactory) -> None:
    node = start_node(max_associations=1)
    with _associate(node):
        ae = AE(ae_title=SCU_AE)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title=node.settings.ae_title)
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.result == 0x02  # transient: try again later
        assert assoc.acceptor.primitive.diagnostic == 0x02  # local limit exceeded
        ae.shutdown()
    assert _echo_works(node)


def test_a_repeated_request_answered_from_memory_is_still_checked(start_node: NodeFactory) -> None:
    """The same request bytes again: the remembered answer, but the limit still applies."""
    node = start_node(max_associations=1)
    with _associate(node) as first:
        with _connect(node) as second:
            second.sendall(_association_request(node))
            pdu_type, body = _read_pdu(second)
            assert pdu_type == pdu.PduType.A_ASSOCIATE_RJ
            assert body[1:4] == bytes([0x02, 0x03, 0x02])  # transient, local limit exceeded
        first.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-RELEASE-RQ
        assert _read_pdu(first)[0] == pdu.PduType.A_RELEASE_RP
    wait_until(lambda: _echo_works(node), 10, 0.05)  # the first association is gone
    with _associate(node) as third:
        assert third.fileno() >= 0


def test_a_store_whose_sop_class_differs_from_its_context_is_refused(node: Node) -> None:
    with _associate(node) as sock:  # context 1 is Verification
        sock.sendall(pdu.command_pdus(1, _store_command(CTImageStorage), 0)[0])
        data = struct.pack(">IBB", 2 + 100, 1, 0x02) + b"\0" * 100  # the last fragment
        sock.sendall(struct.pack(">BxI", 0x04, len(data)) + data)
        response = _response(sock)
        assert response.CommandField == 0x8001
        assert response.Status == 0x0122
    assert node.receive_leftovers() == []
    assert node.spooled_files() == []
    counted = wait_until(lambda: refusal_counts(node.session_factory), 10, 0.05)
    assert [(status, cause, n) for (status, cause, _ae), n in counted.items()] == [
        (0x0122, "context-mismatch", 1)
    ]


# ------------------------------------------------------------------ hostile peers
def _peak_rss_while(action: Callable[[], None], seconds: float) -> int:
    """This process's peak RSS growth (bytes) while ``action`` runs and ``seconds`` after."""
    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        action()
        time.sleep(seconds)
    finally:
        done.set()
        sampler.join()
    return peak - baseline


@pytest.mark.parametrize(
    "header",
    [
        b"\x05\x00\x10\x00\x00\x00",  # A-RELEASE-RQ announcing 256 MiB
        b"\x07\x00\xff\xff\xff\xff",  # A-ABORT announcing 4 GiB
        b"\x04\x00\x00\x01\x00\x00",  # P-DATA-TF over the node's maximum PDU (16 KiB)
    ],
)
def test_a_pdu_longer_than_its_type_allows_is_aborted_unread(
    start_node: NodeFactory, header: bytes
) -> None:
    node = start_node(max_pdu_size=16384)
    answers: list[tuple[int, bytes]] = []
    with _associate(node) as sock:

        def send() -> None:
            sock.sendall(header + b"\0" * 4)
            answers.append(_read_pdu(sock))

        grown = _peak_rss_while(send, 0.3)
    assert answers == [(pdu.PduType.A_ABORT, bytes([0, 0, 0x02, 0x06]))]
    assert grown < 32 << 20, f"RSS grew by {grown >> 20} MiB"
    assert _echo_works(node)


def test_an_unknown_pdu_type_in_an_association_is_unrecognized(node: Node) -> None:
    with _associate(node) as sock:
        sock.sendall(b"\x0a\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert _read_pdu(sock) == (pdu.PduType.A_ABORT, bytes([0, 0, 0x02, 0x01]))


def _trickle(sock: socket.socket, data: bytes, interval: float) -> int:
    """Send ``data`` a byte at a time until the peer closes; how many bytes were sent."""
    for sent in range(len(data)):
        try:
            sock.sendall(data[sent : sent + 1])
        except OSError:
            return sent
        time.sleep(interval)
        ready, _, _ = readiness.select([sock], [], [], 0)
        if ready:
            return sent + 1
    return len(data)


def test_an_association_request_trickled_in_is_cut_at_the_acse_timeout(
    start_node: NodeFactory,
) -> None:
    node = start_node(acse_timeout_seconds=1)
    request = _association_request(node)
    with _connect(node) as sock:
        sent = _trickle(sock, request, 0.05)  # 20 bytes/s: every read well within 1 s
        assert sent < len(request), "the whole request came in: ARTIM never fired"
    assert _echo_works(node)


def test_a_pdu_trickled_in_is_cut_at_the_network_timeout(start_node: NodeFactory) -> None:
    node = start_node(network_timeout_seconds=1)
    echo = pdu.command_pdus(1, _command(0x0030), 16384)[0]
    with _associate(node) as sock:
        sent = _trickle(sock, echo, 0.05)
        assert sent < len(echo), "the whole PDU came in: no bound on receiving it"
    assert _echo_works(node)


def test_idle_connections_do_not_lock_out_senders(start_node: NodeFactory) -> None:
    node = start_node(max_associations=2)
    cap = node.scp.settings.max_pending_connections
    idle = [_connect(node) for _ in range(cap + 20)]
    try:
        wait_until(lambda: len(node.scp._pending) == cap, 10, 0.02)
        result = echoscu("127.0.0.1", node.port, node.settings.ae_title)
        assert result.returncode == 0, result.stderr
        for sock in idle[:21]:  # the oldest were dropped, one more for echoscu's connection
            sock.settimeout(5)
            assert sock.recv(1) == b""
    finally:
        for sock in idle:
            sock.close()


def test_an_association_limit_still_counts_negotiated_ones(start_node: NodeFactory) -> None:
    node = start_node(max_associations=1)
    with _associate(node), _connect(node) as idle:
        idle.sendall(_association_request(node))
        pdu_type, body = _read_pdu(idle)
        assert pdu_type == pdu.PduType.A_ASSOCIATE_RJ
        assert body[1:4] == bytes([0x02, 0x03, 0x02])


def _no_traceback(caplog: pytest.LogCaptureFixture) -> list[str]:
    assert [record for record in caplog.records if record.exc_info] == []
    return [record.getMessage() for record in caplog.records if record.levelno >= 30]


def test_a_calling_ae_title_that_is_not_ascii_is_rejected_cleanly(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    request = bytearray(_association_request(node))
    request[26:42] = "ÄRZTE".encode().ljust(16, b" ")
    with _connect(node) as sock:
        sock.sendall(request)
        pdu_type, body = _read_pdu(sock)
    assert pdu_type == pdu.PduType.A_ASSOCIATE_RJ
    assert body[1:4] == bytes([0x01, 0x01, 0x03])  # calling AE title not recognized
    assert _no_traceback(caplog) == [
        "rejected association from ?@127.0.0.1: calling AE title is not ASCII text"
    ]


def test_a_context_without_transfer_syntax_is_aborted_cleanly(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    request = associate_rq(node.settings.ae_title, SCU_AE, [(1, Verification, [])])
    with _connect(node) as sock:
        sock.sendall(request)
        assert _read_pdu(sock) == (pdu.PduType.A_ABORT, bytes([0, 0, 0x02, 0x06]))
    (line,) = _no_traceback(caplog)
    assert "presentation context 1 proposes no transfer syntax" in line


def test_two_requests_at_once_cannot_both_take_the_last_place(
    start_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = start_node(max_associations=1)
    policy = node.scp._policy
    decide = policy.negotiate

    def slow_decision(*args: object) -> object:
        time.sleep(0.3)  # both requests are being decided at once
        return decide(*args)

    monkeypatch.setattr(policy, "negotiate", slow_decision)
    sockets = [_connect(node), _connect(node)]
    answers: list[int] = []

    def request(sock: socket.socket) -> None:
        sock.sendall(_association_request(node))
        answers.append(_read_pdu(sock)[0])

    threads = [threading.Thread(target=request, args=(sock,)) for sock in sockets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for sock in sockets:
        sock.close()
    assert sorted(answers) == [pdu.PduType.A_ASSOCIATE_AC, pdu.PduType.A_ASSOCIATE_RJ]
