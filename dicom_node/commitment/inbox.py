"""Storage Commitment reports the SCP receives, kept durably until they are applied.

A destination with Storage Commitment answers the node's N-ACTION with an
N-EVENT-REPORT, usually on a new association to the node's SCP.  The report
is written to the spool (temp, fsync, rename) before the SCP answers success,
like a received instance, and applied to the deliveries afterwards
(:mod:`worker.commitment`): by the main process at once, or by its recovery
sweep when a receiver process took the report.  A report is thus never lost,
even if the database is down when it arrives.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pynetdicom.sop_class import StorageCommitmentPushModel

from core.dicom_status import EventReportStatus
from core.files import write_durably
from dicom_node.store.receive import part10_header

log = logging.getLogger(__name__)

#: N-EVENT-REPORT Event Type IDs of Storage Commitment (PS3.4 J.3.3).
ALL_COMMITTED, SOME_FAILED = 1, 2
#: Largest report accepted (a reference costs about 150 bytes).
MAX_REPORT_BYTES = 16 << 20
#: The well-known SOP Instance of Storage Commitment Push Model (PS3.4 J.3.5).
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
_SUFFIX = ".dcm"


class CommitmentInbox:
    """The folder of Storage Commitment reports not yet applied to the deliveries.

    Parameters
    ----------
    folder:
        Where reports are kept (``<spool>/commitment``).
    on_report:
        Called after each report is stored (the main process applies it then).
    """

    def __init__(self, folder: Path, on_report: Callable[[], None] = lambda: None) -> None:
        self.folder = folder
        self._on_report = on_report

    def receive(
        self, event_type_id: int | None, data: bytes, transfer_syntax: str, peer: str
    ) -> int:
        """Keep the event information ``data`` of an N-EVENT-REPORT; the status to answer."""
        if event_type_id not in (ALL_COMMITTED, SOME_FAILED):
            log.warning("storage commitment report from %s: event type %s", peer, event_type_id)
            return EventReportStatus.NO_SUCH_EVENT_TYPE
        header = part10_header(
            StorageCommitmentPushModel, COMMITMENT_INSTANCE, transfer_syntax, peer
        )
        path = self.folder / f"{time.time_ns():020d}-{uuid.uuid4().hex}{_SUFFIX}"
        try:
            write_durably(path, lambda handle: handle.write(header + data))
            transaction_uid = str(dcmread(path).TransactionUID)
        except AttributeError:
            path.unlink(missing_ok=True)
            log.warning("storage commitment report from %s without a Transaction UID", peer)
            return EventReportStatus.INVALID_ARGUMENT
        except Exception as exc:
            path.unlink(missing_ok=True)
            log.error("cannot keep a storage commitment report from %s: %s", peer, exc)
            return EventReportStatus.PROCESSING_FAILURE
        log.info("storage commitment report for transaction %s from %s", transaction_uid, peer)
        self._on_report()
        return EventReportStatus.SUCCESS

    def pending(self) -> list[Path]:
        """The reports not yet applied, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob(f"*{_SUFFIX}"))
