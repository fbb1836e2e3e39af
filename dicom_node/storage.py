"""Storing a received instance: check it, spool it durably, record it, answer a status.

:class:`InstanceStore` is what the Storage SCP calls once a C-STORE dataset
has arrived in its receive file.  Every failure is turned into a specific
DIMSE status (see :class:`core.errors.StoreStatus`) and a log line with UIDs
only, never a false success: success is answered only after the file is
fsynced under its final name and its row is committed.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID

from core.errors import InputRejected, StoreStatus
from dicom_node.header import PIXEL_DATA, UNDEFINED, WANTED, ScannedHeader, scan_header
from dicom_node.receive import ReceiveFile
from dicom_node.received import (
    ReceivedInstance,
    Recorder,
    StudyIdentifiers,
    recording_failure_reason,
)
from dicom_node.spool import InstanceSpool

log = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
DEFER_BYTES = 4096
#: What the sender is told when an instance was not recorded because of a fault of the node.
RECORDING_FAILED = "recording failed"
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def _text(value: object) -> str | None:
    return str(value).strip() or None if value is not None else None


@dataclass(frozen=True)
class InstanceHeader:
    """What an instance is filed and recorded under, read from its header."""

    uids: dict[str, str]
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    series_description: str | None
    identifiers: StudyIdentifiers


def checked_header(
    path: Path,
    head: bytes,
    file_size: int,
    dataset_offset: int | None,
    transfer_syntax: str | None,
) -> InstanceHeader:
    """Check the header of a received Part-10 file whose first bytes ``head`` are in memory.

    The Storage SCP keeps those bytes as the file arrives and knows where the
    dataset begins and its transfer syntax (it wrote the file meta itself), so
    the header is scanned without reading the file back.  Without them, or
    when the scan is unsure, pydicom reads ``path``.  Both give the same answers.

    Raises
    ------
    InputRejected
        If the file is not a readable dataset, lacks a required UID, or its
        pixel data is cut short.
    """
    scanned = None
    if head and dataset_offset is not None and transfer_syntax is not None:
        scanned = scan_header(head, dataset_offset, transfer_syntax, len(head) >= file_size)
    if scanned is None or transfer_syntax is None:
        scanned, transfer_syntax = _read_with_pydicom(path)
    return _checked(scanned, transfer_syntax, file_size)


@functools.lru_cache(maxsize=64)
def _is_compressed(transfer_syntax: str) -> bool:
    """Whether pixel data in ``transfer_syntax`` is encapsulated (a UID check costs a regex)."""
    return UID(transfer_syntax).is_compressed


def _read_with_pydicom(path: Path) -> tuple[ScannedHeader, str]:
    """The same facts as :func:`scan_header`, read by pydicom (any transfer syntax)."""
    try:
        dataset = dcmread(path, defer_size=DEFER_BYTES)
        values = {
            keyword: dataset.get(keyword) for keyword in WANTED.values() if keyword in dataset
        }
        transfer_syntax = dataset.file_meta.TransferSyntaxUID
        transfer_syntax.is_compressed  # noqa: B018 - an unknown syntax raises here
        has_pixel_data = PIXEL_DATA in dataset
        length = end = None
        if has_pixel_data:
            element = dataset.get_item(PIXEL_DATA, keep_deferred=True)
            if isinstance(element, RawDataElement):
                if element.length != UNDEFINED:
                    length = element.length
                    if element.value_tell is not None:
                        end = element.value_tell + element.length
            elif isinstance(element.value, bytes):
                # Already decoded by pydicom (implicit VR resolves OB/OW on read).
                length = len(element.value)
    except Exception as exc:
        raise InputRejected(
            f"unreadable dataset ({type(exc).__name__})", StoreStatus.CANNOT_UNDERSTAND
        ) from exc
    return ScannedHeader(values, has_pixel_data, length, end), str(transfer_syntax)


def _checked(scanned: ScannedHeader, transfer_syntax: str, file_size: int) -> InstanceHeader:
    values = scanned.values
    uids = {keyword: _text(values.get(keyword)) for keyword in _REQUIRED_UIDS}
    missing = [keyword for keyword, value in uids.items() if not value]
    if missing:
        raise InputRejected(f"missing {', '.join(missing)}", StoreStatus.MISSING_UIDS)
    too_long = [keyword for keyword, value in uids.items() if len(str(value)) > MAX_UID_LENGTH]
    if too_long:
        raise InputRejected(
            f"UID longer than 64 characters: {', '.join(too_long)}", StoreStatus.INVALID_UID
        )
    check_pixel_data_size(scanned, _is_compressed(transfer_syntax), file_size)
    return InstanceHeader(
        uids={keyword: str(value) for keyword, value in uids.items()},
        transfer_syntax_uid=transfer_syntax,
        modality=_text(values.get("Modality")),
        body_part=_text(values.get("BodyPartExamined")),
        series_description=_text(values.get("SeriesDescription")),
        identifiers=StudyIdentifiers(
            accession_number=_text(values.get("AccessionNumber")),
            patient_id=_text(values.get("PatientID")),
            study_date=_text(values.get("StudyDate")),
            requested_procedure=_text(values.get("RequestedProcedureDescription"))
            or _text(values.get("StudyDescription")),
        ),
    )


def check_pixel_data_size(scanned: ScannedHeader, compressed: bool, file_size: int) -> None:
    """Reject an image whose pixel data is cut short or smaller than its header declares.

    Catches truncated files and absurd dimensions at receive time, so the
    sender learns of them now instead of a job failing later.

    Raises
    ------
    InputRejected
        If the image attributes are unreadable or the pixel data is short.
    """
    values = scanned.values
    if "Rows" not in values:
        return
    if not scanned.has_pixel_data:
        raise InputRejected("image without pixel data", StoreStatus.CANNOT_UNDERSTAND)
    length = scanned.pixel_data_length
    if length is None:
        return
    if scanned.pixel_data_end is not None and scanned.pixel_data_end > file_size:
        raise InputRejected("pixel data cut short", StoreStatus.CANNOT_UNDERSTAND)
    if compressed:
        return
    try:
        expected = (
            int(values["Rows"])  # type: ignore[arg-type]
            * int(values["Columns"])  # type: ignore[arg-type]
            * int(values.get("SamplesPerPixel", 1))  # type: ignore[arg-type]
            * int(values.get("NumberOfFrames", 1) or 1)  # type: ignore[arg-type]
            * int(values["BitsAllocated"])  # type: ignore[arg-type]
            // 8
        )
    except (KeyError, TypeError, ValueError) as exc:
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
        recorder: Recorder,
        on_recorded: Callable[[int], None] = lambda _study_id: None,
    ) -> None:
        self.spool = spool
        self.recorder = recorder
        self._on_recorded = on_recorded

    def store(
        self, received: ReceiveFile, request_uid: str, calling_ae: str, transfer_syntax: str
    ) -> StoreOutcome:
        """Check, spool and record one received dataset; the receive file is consumed."""
        try:
            return self._store(received, request_uid, calling_ae or None, transfer_syntax)
        finally:
            received.discard()

    def _store(
        self,
        received: ReceiveFile,
        request_uid: str,
        calling_ae: str | None,
        transfer_syntax: str,
    ) -> StoreOutcome:
        if received.error is not None:
            return self._out_of_resources(request_uid, "cannot receive", received.error)
        received.flush()
        try:
            header = checked_header(
                received.path,
                received.head,
                received.size,
                received.dataset_offset,
                transfer_syntax,
            )
        except InputRejected as exc:
            log.warning("rejected instance %s from %s: %s", request_uid, calling_ae, exc)
            return StoreOutcome(exc.status, str(exc))
        uids = header.uids
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
        replaced = self.spool.holds(relative)
        try:
            stored = self.spool.store(received, relative)
        except OSError as exc:
            return self._out_of_resources(request_uid, "cannot spool", exc)
        item = ReceivedInstance(
            study_uid=uids["StudyInstanceUID"],
            series_uid=uids["SeriesInstanceUID"],
            sop_instance_uid=uids["SOPInstanceUID"],
            sop_class_uid=uids["SOPClassUID"],
            transfer_syntax_uid=header.transfer_syntax_uid,
            modality=header.modality,
            body_part=header.body_part,
            series_description=header.series_description,
            calling_ae=calling_ae,
            path=str(stored.relative_path),
            size_bytes=stored.size_bytes,
            identifiers=header.identifiers,
        )
        try:
            study_id = self.recorder.record(item)
        except Exception as exc:
            # Answered as a failure of this instance alone, whatever kept it from being
            # recorded: the sender keeps its copy, and the association goes on.
            reason = recording_failure_reason(exc, request_uid, RECORDING_FAILED)
            if not replaced:
                self.spool.absolute(relative).unlink(missing_ok=True)
            return StoreOutcome(StoreStatus.OUT_OF_RESOURCES, reason)
        self._on_recorded(study_id)
        return StoreOutcome(StoreStatus.SUCCESS)

    @staticmethod
    def _out_of_resources(request_uid: str, what: str, exc: OSError) -> StoreOutcome:
        reason = "disk full" if exc.errno == errno.ENOSPC else type(exc).__name__
        log.error("%s instance %s: %s", what, request_uid, reason)
        return StoreOutcome(StoreStatus.OUT_OF_RESOURCES, f"{what}: {reason}")
