"""Storing a received instance: check it, spool it durably, record it, answer a status.

:class:`InstanceStore` is what the Storage SCP calls once a C-STORE dataset
has arrived in its receive file.  Every failure is turned into a specific
DIMSE status (see :class:`core.dicom_status.StoreStatus`) and a log line with UIDs
only, never a false success: success is answered only after the file is
fsynced under its final name and its row is committed.  Each refusal is also
counted (status, a fixed cause, calling AE) through the recorder, best effort.
"""

from __future__ import annotations

import errno
import functools
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID

from core.dicom_status import StoreStatus
from core.errors import InputRejected
from dicom_node.recording.received import (
    ReceivedInstance,
    Recorder,
    Refusal,
    StudyIdentifiers,
    recording_failure_reason,
)
from dicom_node.store.header import ScannedHeader, scan_header
from dicom_node.store.receive import HEAD_BYTES, ReceiveFile
from dicom_node.store.spool import InstanceSpool, SpooledFile
from dicom_node.store.structure import MalformedDataset, parse_dataset

log = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
#: Bits of one sample of Float Pixel Data and Double Float Pixel Data (BitsAllocated aside).
FLOAT_PIXEL_BITS = {0x7FE00008: 32, 0x7FE00009: 64}
#: Photometric interpretations whose uncompressed pixel data is 4:2:2 chroma subsampled.
SUBSAMPLED_422 = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422"})
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
    the usual image (its pixel data of defined length ending the file) is
    checked without reading the file back.  Anything else, or when the scan is
    unsure, is parsed whole (:mod:`dicom_node.store.structure`): encapsulated pixel
    data to its delimiter, what follows the pixel data, big endian, deflate.
    Both give the same answers.  Without an offset, the file meta says where
    the dataset starts.

    Raises
    ------
    InputRejected
        If the file is not one complete, well-formed dataset, lacks a required
        UID, or its pixel data is cut short.
    """
    if dataset_offset is None or transfer_syntax is None:
        dataset_offset, transfer_syntax = _file_meta(path)
    scanned = None
    if head:
        scanned = scan_header(head, dataset_offset, transfer_syntax, len(head) >= file_size)
    if scanned is None or not _scan_is_whole(scanned, file_size):
        try:
            scanned = parse_dataset(path, dataset_offset, transfer_syntax)
        except MalformedDataset as exc:
            raise InputRejected(f"malformed dataset: {exc}", StoreStatus.CANNOT_UNDERSTAND) from exc
    return _checked(scanned, transfer_syntax, file_size)


def _scan_is_whole(scanned: ScannedHeader, file_size: int) -> bool:
    """Whether the scan saw the whole file: none of it is left unchecked.

    A scan that found no pixel data has walked every byte; one that stopped
    at pixel data of defined length has, when that ends the file (or runs
    past its end, which is refused as cut short).
    """
    if not scanned.has_pixel_data:
        return True
    return scanned.pixel_data_end is not None and scanned.pixel_data_end >= file_size


def _file_meta(path: Path) -> tuple[int, str]:
    """Where the dataset of the Part-10 file ``path`` begins, and its transfer syntax."""
    try:
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
        if head[128:132] != b"DICM":
            raise ValueError("no DICM prefix")
        offset, transfer_syntax = 132, ""
        while head[offset : offset + 2] == b"\x02\x00":
            element, vr = struct.unpack_from("<H2s", head, offset + 2)
            if vr in (b"OB", b"UN", b"UT", b"SQ"):
                (length,), value = struct.unpack_from("<I", head, offset + 8), offset + 12
            else:
                (length,), value = struct.unpack_from("<H", head, offset + 6), offset + 8
            if element == 0x0010:
                transfer_syntax = head[value : value + length].decode("ascii").strip("\0 ")
            offset = value + length
        _is_compressed(transfer_syntax)  # an unknown syntax raises here
    except (OSError, ValueError, struct.error) as exc:
        raise InputRejected(
            f"unreadable dataset ({type(exc).__name__})", StoreStatus.CANNOT_UNDERSTAND
        ) from exc
    return offset, transfer_syntax


@functools.lru_cache(maxsize=64)
def _is_compressed(transfer_syntax: str) -> bool:
    """Whether pixel data in ``transfer_syntax`` is encapsulated (a UID check costs a regex)."""
    return UID(transfer_syntax).is_compressed


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
        bits = FLOAT_PIXEL_BITS.get(scanned.pixel_data_tag) or int(values["BitsAllocated"])  # type: ignore[arg-type]
        expected = (
            int(values["Rows"])  # type: ignore[arg-type]
            * int(values["Columns"])  # type: ignore[arg-type]
            * _samples_per_pixel(values)
            * int(values.get("NumberOfFrames", 1) or 1)  # type: ignore[arg-type]
            * bits
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


def _samples_per_pixel(values: dict[str, str | int]) -> int:
    """Samples each pixel takes on average: 2 for 4:2:2 subsampled colour (PS3.3 C.7.6.3.1.2)."""
    if str(values.get("PhotometricInterpretation", "")).strip() in SUBSAMPLED_422:
        return 2
    return int(values.get("SamplesPerPixel", 1))


#: Why an instance was refused, in a word each (counted in ``instance_refusals``).
INVALID_INSTANCE = "invalid-instance"
UID_MISMATCH = "uid-mismatch"
CONTEXT_MISMATCH = "context-mismatch"
DISK_FULL = "disk-full"
RECEIVE_ERROR = "receive-error"
SPOOL_ERROR = "spool-error"
NOT_RECORDED = "not-recorded"


@dataclass(frozen=True)
class StoreResponse:
    """The C-STORE status to answer and, for a failure, a reason for the sender (no PHI).

    ``cause`` is the fixed word a refusal is counted under.
    """

    status: int
    reason: str = ""
    cause: str = ""


def _received_instance(
    header: InstanceHeader, calling_ae: str | None, stored: SpooledFile
) -> ReceivedInstance:
    """The row of an instance spooled under ``stored``, as the recorder takes it."""
    uids = header.uids
    return ReceivedInstance(
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


class InstanceStore:
    """Turns received C-STORE datasets into spooled, recorded instances.

    Every refused instance is counted through the recorder (status, cause,
    calling AE), best effort: the count never changes what is answered.

    Parameters
    ----------
    spool:
        Where instances are stored durably.
    recorder:
        Where they are recorded (study, series and instance rows) and refusals counted.
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

    def handle_store(
        self, received: ReceiveFile, request_uid: str, calling_ae: str, transfer_syntax: str
    ) -> StoreResponse:
        """Check, spool and record one received dataset; the receive file is consumed."""
        try:
            response = self._handle_store(
                received, request_uid, calling_ae or None, transfer_syntax
            )
        finally:
            received.discard()
        if response.status != StoreStatus.SUCCESS:
            self._count_refusal(response, calling_ae or None)
        return response

    def refuse_other_sop_class(self, calling_ae: str) -> StoreResponse:
        """Refuse (and count) a dataset sent on the presentation context of another SOP class."""
        response = StoreResponse(
            StoreStatus.SOP_CLASS_NOT_SUPPORTED,
            "SOP class differs from the context's",
            CONTEXT_MISMATCH,
        )
        self._count_refusal(response, calling_ae or None)
        return response

    def _count_refusal(self, response: StoreResponse, calling_ae: str | None) -> None:
        try:
            self.recorder.refused(Refusal(response.status, response.cause, calling_ae))
        except Exception:
            log.exception("cannot count a refused instance")

    def _handle_store(
        self,
        received: ReceiveFile,
        request_uid: str,
        calling_ae: str | None,
        transfer_syntax: str,
    ) -> StoreResponse:
        if received.error is not None:
            return _out_of_resources(request_uid, "cannot receive", received.error, RECEIVE_ERROR)
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
            return StoreResponse(exc.status, str(exc), INVALID_INSTANCE)
        if header.uids["SOPInstanceUID"] != request_uid:
            log.warning(
                "rejected instance %s: dataset says %s", request_uid, header.uids["SOPInstanceUID"]
            )
            return StoreResponse(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                "SOP Instance UID differs from the command's",
                UID_MISMATCH,
            )
        return self._spool_and_record(received, header, calling_ae)

    def _spool_and_record(
        self, received: ReceiveFile, header: InstanceHeader, calling_ae: str | None
    ) -> StoreResponse:
        """Store a checked instance under its UIDs and record it; success once committed."""
        uids = header.uids
        sop_uid = uids["SOPInstanceUID"]
        relative = self.spool.relative_path(
            uids["StudyInstanceUID"], uids["SeriesInstanceUID"], sop_uid
        )
        replaced = self.spool.holds(relative)
        try:
            stored = self.spool.commit(received, relative)
        except OSError as exc:
            return _out_of_resources(sop_uid, "cannot spool", exc, SPOOL_ERROR)
        try:
            study_id = self.recorder.record(_received_instance(header, calling_ae, stored))
        except Exception as exc:
            # Answered as a failure of this instance alone, whatever kept it from being
            # recorded: the sender keeps its copy, and the association goes on.
            reason = recording_failure_reason(exc, sop_uid, RECORDING_FAILED)
            if not replaced:
                self.spool.absolute(relative).unlink(missing_ok=True)
            return StoreResponse(StoreStatus.OUT_OF_RESOURCES, reason, NOT_RECORDED)
        self._on_recorded(study_id)
        return StoreResponse(StoreStatus.SUCCESS)


def _out_of_resources(request_uid: str, what: str, exc: OSError, cause: str) -> StoreResponse:
    """A failure of the node's disk: logged (UID only) and answered Out of Resources."""
    disk_full = exc.errno == errno.ENOSPC
    reason = "disk full" if disk_full else type(exc).__name__
    log.error("%s instance %s: %s", what, request_uid, reason)
    return StoreResponse(
        StoreStatus.OUT_OF_RESOURCES, f"{what}: {reason}", DISK_FULL if disk_full else cause
    )
