"""The SCP's acceptor at the protocol level: raw sockets that misbehave, and the limits.

Whatever a peer sends, the answer is a PDU the standard defines (A-ABORT,
A-ASSOCIATE-RJ, a failure status), the association ends cleanly, nothing is
left in the spool, and the node goes on serving others.
"""

from __future__ import annotations

import socket
import struct
from io import BytesIO

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
from dicom_node import pdu
from tests.dicom_node.conftest import Node, NodeFactory
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


def test_garbage_instead_of_an_association_request_is_aborted(node: Node) -> None:
    with _connect(node) as sock:
        sock.sendall(b"\x09\x00\x00\x00\x00\x04GET ")
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == pdu.PduType.A_ABORT
        assert body[2:] == bytes([0x02, pdu.AbortReason.UNEXPECTED_PDU])
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
