"""Event handlers bound to the node's AE: C-ECHO, C-STORE and caller checks.

Handlers are thin, in pynetdicom's style: the store handler makes the
durable write and the database row and answers a status; every failure is
turned into a specific DIMSE status (see :class:`core.errors.StoreStatus`)
and a log line with UIDs only, never a false success.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event
from sqlalchemy.exc import SQLAlchemyError

from core.config import AllowedCaller
from core.errors import InputRejected, StoreStatus, VerificationStatus
from dicom_node.receive import receive_error
from dicom_node.recorder import InstanceRecorder, ReceivedInstance
from dicom_node.spool import InstanceSpool

log = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
DEFER_BYTES = 4096
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
_REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def handle_echo(event: Event) -> int:
    """Answer C-ECHO: the node is up."""
    return VerificationStatus.SUCCESS


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


def handle_store(
    event: Event,
    spool: InstanceSpool,
    recorder: InstanceRecorder,
    on_recorded: Callable[[int], None],
) -> int:
    """Store one instance durably, record it, and answer the C-STORE status."""
    request_uid = str(event.request.AffectedSOPInstanceUID or "")
    calling_ae = event.assoc.requestor.ae_title.strip() or None
    received = event.dataset_path
    failed_write = receive_error(event.request)
    if failed_write is not None:
        received.unlink(missing_ok=True)
        reason = "disk full" if failed_write.errno == errno.ENOSPC else type(failed_write).__name__
        log.error("cannot receive instance %s: %s", request_uid, reason)
        return StoreStatus.OUT_OF_RESOURCES
    try:
        dataset, uids = read_received(received)
    except InputRejected as exc:
        log.warning("rejected instance %s from %s: %s", request_uid, calling_ae, exc)
        return exc.status
    if uids["SOPInstanceUID"] != request_uid:
        log.warning("rejected instance %s: dataset says %s", request_uid, uids["SOPInstanceUID"])
        return StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS

    relative = spool.relative_path(
        uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]
    )
    replaced = spool.absolute(relative).exists()
    try:
        stored = spool.store(received, relative)
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else f"{type(exc).__name__}: {exc}"
        log.error("cannot spool instance %s: %s", request_uid, reason)
        return StoreStatus.OUT_OF_RESOURCES

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
        study_id = recorder.record(item)
    except SQLAlchemyError as exc:
        log.error("cannot record instance %s: %s", request_uid, type(exc).__name__)
        if not replaced:
            spool.absolute(relative).unlink(missing_ok=True)
        return StoreStatus.OUT_OF_RESOURCES
    on_recorded(study_id)
    return StoreStatus.SUCCESS


def handle_accepted(event: Event, allowed: Sequence[AllowedCaller]) -> None:
    """Abort an association from a host the allow-list does not admit for its AE title."""
    if not allowed:
        return
    requestor = event.assoc.requestor
    ae_title = requestor.ae_title.strip()
    if not any(entry.admits(ae_title, requestor.address) for entry in allowed):
        log.warning(
            "aborting association from %s at %s: host not allowed", ae_title, requestor.address
        )
        event.assoc.abort()


def bound_handlers(
    spool: InstanceSpool,
    recorder: InstanceRecorder,
    allowed: Sequence[AllowedCaller],
    on_recorded: Callable[[int], None],
) -> list[tuple]:
    """The (event, handler, args) triples the Storage SCP binds to its AE."""
    return [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [spool, recorder, on_recorded]),
        (evt.EVT_ACCEPTED, handle_accepted, [list(allowed)]),
    ]
