"""Storage Commitment SCU: asking a destination to commit what it was sent (N-ACTION).

The push model (PS3.4 Annex J): the node sends N-ACTION "Request Storage
Commitment" with a Transaction UID and the SOP instances; the peer answers
the N-ACTION at once and reports later with N-EVENT-REPORT, on a new
association to the node's SCP (:mod:`dicom_node.commitment.inbox`).  The
association is released right after the N-ACTION response.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from pydicom import Dataset
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StorageCommitmentPushModel

from core.config import Destination
from core.errors import TransientError
from dicom_node.commitment.inbox import COMMITMENT_INSTANCE
from dicom_node.scu import associate

#: N-ACTION Action Type ID "Request Storage Commitment".
REQUEST_COMMITMENT = 1


def commitment_request(transaction_uid: str, references: Sequence[tuple[str, str]]) -> Dataset:
    """The N-ACTION information: ``transaction_uid`` and (SOP class, SOP instance) references."""
    request = Dataset()
    request.TransactionUID = transaction_uid
    items = []
    for sop_class_uid, sop_instance_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class_uid
        item.ReferencedSOPInstanceUID = sop_instance_uid
        items.append(item)
    request.ReferencedSOPSequence = items
    return request


def request_commitment(
    destination: Destination,
    transaction_uid: str,
    references: Sequence[tuple[str, str]],
    *,
    calling_ae: str,
    timeout: float = 60.0,
    tls: ssl.SSLContext | None = None,
) -> str | None:
    """Send N-ACTION for ``references`` to ``destination``; None, or why the peer refused it.

    Raises
    ------
    TransientError
        If no association with Storage Commitment can be established, or the
        peer does not answer (it may be down; try again later).
    """
    assoc = associate(
        destination,
        [build_context(StorageCommitmentPushModel)],
        calling_ae=calling_ae,
        timeout=timeout,
        tls=tls,
        refused="storage commitment association",
    )
    try:
        status, _reply = assoc.send_n_action(
            commitment_request(transaction_uid, references),
            REQUEST_COMMITMENT,
            StorageCommitmentPushModel,
            COMMITMENT_INSTANCE,
        )
    except ValueError:  # no accepted presentation context
        return f"{destination} does not accept Storage Commitment"
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code is None:
        raise TransientError(f"no N-ACTION response from {destination}")
    return None if int(code) == 0 else f"storage commitment refused: status 0x{int(code):04X}"
