"""What the Storage SCP hands on for each stored instance, and to whom.

Kept apart from the database code (:mod:`dicom_node.recorder`): receiver
processes import this and never SQLAlchemy, which saves each of them the
memory of the database layer (the main process records their rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReceivedInstance:
    """The facts about one stored instance that go into the database."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    series_description: str | None
    calling_ae: str | None
    path: str
    size_bytes: int


class RecordingFailed(Exception):
    """An instance's row could not be recorded: the database failed, or the process writing it."""


class Recorder(Protocol):
    """Whatever records received instances: the database itself, or a process that writes to it."""

    def record(self, received: ReceivedInstance) -> int:
        """Record ``received`` durably; returns its study id.

        Raises :class:`RecordingFailed` when the database (or the process that
        writes to it) cannot record it.
        """
        ...
