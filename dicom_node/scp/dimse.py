"""DIMSE command sets: decoding requests and encoding responses (PS3.7 section 9 and 10).

A command set is a small group-0000 dataset, always Implicit VR Little Endian.
The Storage SCP only needs a handful of its elements, so they are read and
written here directly: decoding a command this way costs microseconds, which
matters at hundreds of instances a second (a general dataset decoder costs
a hundred times more).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

#: Command Data Set Type value meaning "no dataset follows" (PS3.7 E.1).
NO_DATASET = 0x0101

_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UL = struct.Struct("<I")

_AFFECTED_SOP_CLASS = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_MESSAGE_ID_RESPONDED = 0x0120
_DATASET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_AFFECTED_SOP_INSTANCE = 0x1000
_EVENT_TYPE_ID = 0x1002
_MAX_ERROR_COMMENT = 64


class CommandField(IntEnum):
    """The DIMSE command codes the node answers (responses are ``code | 0x8000``)."""

    C_STORE_RQ = 0x0001
    C_ECHO_RQ = 0x0030
    N_EVENT_REPORT_RQ = 0x0100
    C_CANCEL_RQ = 0x0FFF


class MalformedCommand(ValueError):
    """A command set that cannot be decoded (the association is then aborted)."""


@dataclass(frozen=True)
class Command:
    """The elements of a DIMSE request command that the Storage SCP uses."""

    command_field: int
    message_id: int
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    has_dataset: bool = False
    event_type_id: int | None = None


def _text(value: bytes) -> str:
    return value.rstrip(b"\0 ").decode("ascii", "replace")


def decode_command(data: bytes | bytearray | memoryview) -> Command:
    """Decode an Implicit VR Little Endian command set.

    Raises
    ------
    MalformedCommand
        If the bytes are not a well-formed group-0000 dataset, or the
        Command Field or Message ID is missing.
    """
    view = memoryview(data)
    values: dict[int, bytes] = {}
    offset = 0
    while offset < len(view):
        if offset + _ELEMENT.size > len(view):
            raise MalformedCommand("truncated element header")
        group, element, length = _ELEMENT.unpack_from(view, offset)
        offset += _ELEMENT.size
        if group != 0x0000 or offset + length > len(view):
            raise MalformedCommand(f"unexpected element ({group:04X},{element:04X})")
        values[element] = bytes(view[offset : offset + length])
        offset += length
    try:
        command_field = _US.unpack(values.pop(_COMMAND_FIELD))[0]
        message_id = _US.unpack(values.pop(_MESSAGE_ID))[0]
        dataset_type = _US.unpack(values.pop(_DATASET_TYPE, _US.pack(NO_DATASET)))[0]
        event_type = values.pop(_EVENT_TYPE_ID, None)
        event_type_id = _US.unpack(event_type)[0] if event_type is not None else None
    except (KeyError, struct.error) as exc:
        raise MalformedCommand(f"missing or malformed {exc}") from exc
    return Command(
        command_field=command_field,
        message_id=message_id,
        affected_sop_class_uid=_text(values.pop(_AFFECTED_SOP_CLASS, b"")),
        affected_sop_instance_uid=_text(values.pop(_AFFECTED_SOP_INSTANCE, b"")),
        has_dataset=dataset_type != NO_DATASET,
        event_type_id=event_type_id,
    )


def _element(tag: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, tag, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _comment(value: str) -> bytes:
    raw = value.encode("ascii", "replace")[:_MAX_ERROR_COMMENT]
    return raw + b" " if len(raw) % 2 else raw


def encode_response(request: Command, status: int, error_comment: str = "") -> bytes:
    """The response command set to ``request`` with ``status``.

    ``error_comment`` (failures only) tells the sender's operator why; it must
    never carry patient data (the node puts only reasons like "missing
    SeriesInstanceUID" there).
    """
    elements = []
    if request.affected_sop_class_uid:
        elements.append(_element(_AFFECTED_SOP_CLASS, _uid(request.affected_sop_class_uid)))
    elements += [
        _element(_COMMAND_FIELD, _US.pack(request.command_field | 0x8000)),
        _element(_MESSAGE_ID_RESPONDED, _US.pack(request.message_id)),
        _element(_DATASET_TYPE, _US.pack(NO_DATASET)),
        _element(_STATUS, _US.pack(status)),
    ]
    if error_comment and status != 0:
        elements.append(_element(_ERROR_COMMENT, _comment(error_comment)))
    if request.affected_sop_instance_uid:
        elements.append(_element(_AFFECTED_SOP_INSTANCE, _uid(request.affected_sop_instance_uid)))
    if request.event_type_id is not None:
        elements.append(_element(_EVENT_TYPE_ID, _US.pack(request.event_type_id)))
    body = b"".join(elements)
    return _element(0x0000, _UL.pack(len(body))) + body
