"""What the Storage SCP hands on for each stored instance, and to whom.

Kept apart from the database code (:mod:`dicom_node.recording.recorder`): receiver
processes import this and never SQLAlchemy, which saves each of them the
memory of the database layer (the main process records their rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyIdentifiers:
    """The order context of an instance's study: patient data, never logged.

    Kept on the study row (when ``AINODE_STORE_IDENTIFIERS`` is on) for the
    HL7 result message and the console; ``study_date`` is the DICOM DA text.
    """

    accession_number: str | None = None
    patient_id: str | None = None
    study_date: str | None = None
    requested_procedure: str | None = None

    def __repr__(self) -> str:
        """No values: a row that ends up in a log line or traceback shows no patient data."""
        return "StudyIdentifiers(...)"


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
    identifiers: StudyIdentifiers | None = None


@dataclass(frozen=True)
class Refusal:
    """An instance the Storage SCP refused: the status answered, its cause, the sender, when.

    ``cause`` is one of a few fixed words (see :mod:`dicom_node.store.c_store`);
    no UIDs, no patient data, so refusals can be counted and shown freely.
    """

    status: int
    cause: str
    calling_ae: str | None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class RecordingFailed(Exception):
    """An instance's row could not be recorded: the database failed, or the process writing it."""


def recording_failure_reason(exc: Exception, sop_instance_uid: str, other: str) -> str:
    """Log why ``sop_instance_uid`` was not recorded (UIDs only); what the sender is told.

    A :class:`RecordingFailed` names its cause and no patient data, so its
    text is passed on; any other fault is a fault of the node, logged with
    its traceback and told as ``other``.
    """
    if isinstance(exc, RecordingFailed):
        log.error("cannot record instance %s: %s", sop_instance_uid, exc)
        return str(exc)
    log.error("cannot record instance %s", sop_instance_uid, exc_info=exc)
    return other


class Recorder(Protocol):
    """Whatever records received instances: the database itself, or a process that writes to it."""

    def record(self, received: ReceivedInstance) -> int:
        """Record ``received`` durably; returns its study id.

        Raises :class:`RecordingFailed` when the database (or the process that
        writes to it) cannot record it.
        """
        ...

    def refused(self, refusal: Refusal) -> None:
        """Count ``refusal`` without waiting for the database; never raises.

        Best effort: whatever becomes of the count, the SCP answers the status
        it refused the instance with.
        """
        ...
