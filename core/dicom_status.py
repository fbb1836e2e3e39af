"""The DIMSE status codes of the node, in one place (as pynetdicom's ``status`` module).

Every status the Storage SCP answers is a member of one of the enums below, so
that a handler names the failure it means instead of writing a number.  The
statuses the node reads from a peer's C-STORE responses are here too.
"""

from __future__ import annotations

from enum import IntEnum


class GeneralStatus(IntEnum):
    """Statuses any DIMSE request may be answered with (PS3.7 Annex C)."""

    UNRECOGNIZED_OPERATION = 0x0211


class VerificationStatus(IntEnum):
    """C-ECHO response statuses (PS3.7 9.3.5)."""

    SUCCESS = 0x0000


class StoreStatus(IntEnum):
    """C-STORE response statuses the Storage SCP answers (PS3.4 Annex B.2.3)."""

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    MISSING_UIDS = 0xC001
    INVALID_UID = 0xC002


class EventReportStatus(IntEnum):
    """N-EVENT-REPORT response statuses the SCP answers to Storage Commitment reports.

    PS3.7 10.1.1.1.8; the reports themselves are kept by
    :class:`dicom_node.commitment.inbox.CommitmentInbox`.
    """

    SUCCESS = 0x0000
    PROCESSING_FAILURE = 0x0110
    NO_SUCH_EVENT_TYPE = 0x0113
    INVALID_ARGUMENT = 0x0115


#: C-STORE response statuses from a peer that mean it stored the file: success and
#: the warnings (coercion 0xB000, elements discarded 0xB006, dataset does not match
#: 0xB007, and the general warnings 0x0001, 0x0107 attribute list error, 0x0116
#: attribute value out of range).
PEER_STORED = frozenset({0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
