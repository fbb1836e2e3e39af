"""Storing a received instance: check it, spool it durably, record it, answer a status.

:class:`InstanceStore` is what the Storage SCP calls once a C-STORE dataset
has arrived in its receive file.  Every failure is turned into a specific
DIMSE status (see :class:`core.errors.StoreStatus`) and a log line with UIDs
only, never a false success: success is answered only after the file is
fsynced under its final name and its row is committed.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from sqlalchemy.exc import SQLAlchemyError

from core.errors import InputRejected, StoreStatus
from dicom_node.receive import ReceiveFile
from dicom_node.recorder import InstanceRecorder, ReceivedInstance
from dicom_node.spool import InstanceSpool

log = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
DEFER_BYTES = 4096
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def _text(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    return str(value).strip() or None if value is not None else None


def read_received(path: Path) -> tuple[Dataset, dict[str, str]]:
    """Read the header of a received file and the UIDs it is filed under.

    Raises
    ------
    InputRejected
        If the file is not a readable dataset or lacks a required UID.
    """
    try:
        dataset = dcmread(path, defer_size=DEFER_BYTES)
        uids = {keyword: _text(dataset, keyword) for keyword in _REQUIRED_UIDS}
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        transfer_syntax.is_compressed  # noqa: B018 - an unknown syntax raises here
    except Exception as exc:
        raise InputRejected(
            f"unreadable dataset ({type(exc).__name__})", StoreStatus.CANNOT_UNDERSTAND
        ) from exc
    missing = [keyword for keyword, value in uids.items() if not value]
    if missing:
        raise InputRejected(f"missing {', '.join(missing)}", StoreStatus.MISSING_UIDS)
    too_long = [keyword for keyword, value in uids.items() if len(str(value)) > MAX_UID_LENGTH]
    if too_long:
        raise InputRejected(
            f"UID longer than 64 characters: {', '.join(too_long)}", StoreStatus.INVALID_UID
        )
    check_pixel_data_size(dataset, path.stat().st_size)
    return dataset, {keyword: str(value) for keyword, value in uids.items()}


def check_pixel_data_size(dataset: Dataset, file_size: int) -> None:
    """Reject an image whose pixel data is cut short or smaller than its header declares.

    Catches truncated files and absurd dimensions at receive time, so the
    sender learns of them now instead of a job failing later.  ``dataset``
    must have been read with its pixel data deferred (not loaded).

    Raises
    ------
    InputRejected
        If the image attributes are unreadable or the pixel data is short.
    """
    if "Rows" not in dataset:
        return
    if PIXEL_DATA not in dataset:
        raise InputRejected("image without pixel data", StoreStatus.CANNOT_UNDERSTAND)
    element = dataset.get_item(PIXEL_DATA, keep_deferred=True)
    if isinstance(element, RawDataElement):
        if element.length == UNDEFINED_LENGTH:
            return
        if element.value_tell is not None and element.value_tell + element.length > file_size:
            raise InputRejected("pixel data cut short", StoreStatus.CANNOT_UNDERSTAND)
        length = element.length
    else:
        # Already decoded by pydicom (implicit VR resolves OB/OW on read).
        value = element.value
        if not isinstance(value, bytes):
            return
        length = len(value)
    if dataset.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        expected = (
            int(dataset.Rows)
            * int(dataset.Columns)
            * int(dataset.get("SamplesPerPixel", 1))
            * int(dataset.get("NumberOfFrames", 1) or 1)
            * int(dataset.BitsAllocated)
            // 8
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputRejected(
            f"unreadable image attributes ({type(exc).__name__})", StoreStatus.CANNOT_UNDERSTAND
        ) from exc
    if length < expected:
        raise InputRejected(
            f"pixel data shorter than declared ({length} of {expected} bytes)",
            StoreStatus.CANNOT_UNDERSTAND,
        )


@dataclass(frozen=True)
class StoreOutcome:
    """The C-STORE status to answer and, for a failure, a reason for the sender (no PHI)."""

    status: int
    reason: str = ""


class InstanceStore:
    """Turns received C-STORE datasets into spooled, recorded instances.

    Parameters
    ----------
    spool:
        Where instances are stored durably.
    recorder:
        Where they are recorded (study, series and instance rows).
    on_recorded:
        Called with the study id after each instance is recorded (the
        stability monitor uses it to wake up).
    """

    def __init__(
        self,
        spool: InstanceSpool,
        recorder: InstanceRecorder,
        on_recorded: Callable[[int], None] = lambda _study_id: None,
    ) -> None:
        self.spool = spool
        self.recorder = recorder
        self._on_recorded = on_recorded

    def store(self, received: ReceiveFile, request_uid: str, calling_ae: str) -> StoreOutcome:
        """Check, spool and record one received dataset; the receive file is consumed."""
        try:
            return self._store(received, request_uid, calling_ae or None)
        finally:
            received.discard()

    def _store(
        self, received: ReceiveFile, request_uid: str, calling_ae: str | None
    ) -> StoreOutcome:
        if received.error is not None:
            return self._out_of_resources(request_uid, "cannot receive", received.error)
        received.flush()
        try:
            dataset, uids = read_received(received.path)
        except InputRejected as exc:
            log.warning("rejected instance %s from %s: %s", request_uid, calling_ae, exc)
            return StoreOutcome(exc.status, str(exc))
        if uids["SOPInstanceUID"] != request_uid:
            log.warning(
                "rejected instance %s: dataset says %s", request_uid, uids["SOPInstanceUID"]
            )
            return StoreOutcome(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Instance UID differs from the command's",
            )
        relative = self.spool.relative_path(
            uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]
        )
        replaced = self.spool.absolute(relative).exists()
        try:
            stored = self.spool.store(received, relative)
        except OSError as exc:
            return self._out_of_resources(request_uid, "cannot spool", exc)
        item = ReceivedInstance(
            study_uid=uids["StudyInstanceUID"],
            series_uid=uids["SeriesInstanceUID"],
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
            modality=_text(dataset, "Modality"),
            body_part=_text(dataset, "BodyPartExamined"),
            series_description=_text(dataset, "SeriesDescription"),
            calling_ae=calling_ae,
            path=str(stored.relative_path),
            size_bytes=stored.size_bytes,
        )
        try:
            study_id = self.recorder.record(item)
        except SQLAlchemyError as exc:
            log.error("cannot record instance %s: %s", request_uid, type(exc).__name__)
            if not replaced:
                self.spool.absolute(relative).unlink(missing_ok=True)
            return StoreOutcome(StoreStatus.OUT_OF_RESOURCES, "database unavailable")
        self._on_recorded(study_id)
        return StoreOutcome(StoreStatus.SUCCESS)

    @staticmethod
    def _out_of_resources(request_uid: str, what: str, exc: OSError) -> StoreOutcome:
        reason = "disk full" if exc.errno == errno.ENOSPC else type(exc).__name__
        log.error("%s instance %s: %s", what, request_uid, reason)
        return StoreOutcome(StoreStatus.OUT_OF_RESOURCES, f"{what}: {reason}")
