"""DIMSE command sets: the node's decoder and encoder agree with pynetdicom's."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, N_EVENT_REPORT_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE, N_EVENT_REPORT
from pynetdicom.dsutils import decode as decode_dataset

from dicom_node.scp.dimse import CommandField, MalformedCommand, decode_command, encode_response

SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.77"


def _command_bytes(message: object) -> bytes:
    """The command set of a pynetdicom message, as the SCP receives it (PDV values joined)."""
    return b"".join(
        value[1:]
        for primitive in message.encode_msg(1, 0)  # type: ignore[attr-defined]
        for _context, value in primitive.presentation_data_value_list
        if value[0] & 0x01  # command fragment
    )


def test_decodes_a_c_store_request_from_pynetdicom() -> None:
    command = decode_command(_store_request_bytes(message_id=7))

    assert command.command_field == CommandField.C_STORE_RQ
    assert command.message_id == 7
    assert command.affected_sop_class_uid == CTImageStorage
    assert command.affected_sop_instance_uid == SOP_INSTANCE
    assert command.has_dataset


def test_decodes_a_c_echo_request() -> None:
    primitive = C_ECHO()
    primitive.MessageID = 3
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(primitive)

    command = decode_command(_command_bytes(message))

    assert command.command_field == CommandField.C_ECHO_RQ
    assert command.message_id == 3
    assert not command.has_dataset


def test_a_storage_commitment_report_is_decoded_and_answered_with_its_event_type() -> None:
    primitive = N_EVENT_REPORT()
    primitive.MessageID = 5
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.20.1"
    primitive.AffectedSOPInstanceUID = "1.2.840.10008.1.20.1.1"
    primitive.EventTypeID = 2
    primitive.EventInformation = BytesIO(b"\x08\x00\x95\x11\x02\x00\x00\x001\x00")
    message = N_EVENT_REPORT_RQ()
    message.primitive_to_message(primitive)

    request = decode_command(_command_bytes(message))
    response = decode_dataset(BytesIO(encode_response(request, 0)), True, True)

    assert request.command_field == CommandField.N_EVENT_REPORT_RQ and request.has_dataset
    assert request.event_type_id == 2
    assert (response.CommandField, response.EventTypeID, response.Status) == (0x8100, 2, 0)
    assert response.AffectedSOPInstanceUID == "1.2.840.10008.1.20.1.1"


@pytest.mark.parametrize("comment", ["", "missing SeriesInstanceUID", "x" * 100])
def test_response_is_a_valid_command_set(comment: str) -> None:
    request = decode_command(_store_request_bytes())

    encoded = encode_response(request, 0xC001, comment)
    dataset = decode_dataset(BytesIO(encoded), True, True)

    assert dataset.CommandGroupLength == len(encoded) - 12
    assert dataset.CommandField == 0x8001
    assert dataset.MessageIDBeingRespondedTo == 9
    assert dataset.Status == 0xC001
    assert dataset.AffectedSOPClassUID == CTImageStorage
    assert dataset.AffectedSOPInstanceUID == SOP_INSTANCE
    assert dataset.CommandDataSetType == 0x0101
    assert dataset.get("ErrorComment", "") == comment[:64]


def test_success_carries_no_error_comment() -> None:
    request = decode_command(_store_request_bytes())
    dataset = decode_dataset(BytesIO(encode_response(request, 0, "ignored")), True, True)
    assert dataset.Status == 0
    assert "ErrorComment" not in dataset


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x01\x04\x00",  # truncated header
        b"\x08\x00\x16\x00\x02\x00\x00\x00ab",  # not group 0000
        b"\x00\x00\x00\x01\x02\x00\x00\x00\x01\x00",  # no Message ID
        b"\x00\x00\x00\x01\xff\x00\x00\x00\x01\x00",  # length past the end
    ],
)
def test_malformed_commands_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedCommand):
        decode_command(data)


def _store_request_bytes(message_id: int = 9) -> bytes:
    """A C-STORE-RQ command set as pynetdicom encodes it."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = SOP_INSTANCE
    primitive.Priority = 0
    primitive.DataSet = BytesIO(b"\0" * 10)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return _command_bytes(message)
