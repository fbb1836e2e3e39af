"""Association negotiation of the Storage SCP: who may associate, and on what terms.

The A-ASSOCIATE-RQ is decoded and the A-ASSOCIATE-AC encoded by pynetdicom's
PDU classes, and presentation contexts are negotiated by pynetdicom's
``negotiate_as_acceptor`` (the node's preferred transfer syntax order wins).
What is the node's own is the policy: the called AE title must be the
node's, the calling AE title (and, per entry, the host) must be on the
allow-list when one is set, and an association over the limit is rejected
as transient so that the sender retries later.  A caller that is refused is
told why by the A-ASSOCIATE-RJ reason, never silently dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydicom import uid
from pydicom._uid_dict import UID_dictionary
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_as_acceptor
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification

from core.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.scp import pdu
from dicom_node.scp.settings import ScpSettings

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 Table 9-21.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)
_REJECT_CALLED_AE = (0x01, 0x01, 0x07)
_REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
_REJECT_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
_REJECT_LIMIT = (0x02, 0x03, 0x02)


def preferred_transfer_syntaxes() -> list[str]:
    """Every transfer syntax, in the order the SCP prefers them when a sender offers several.

    Lossless compression first (a sender offering it already holds the
    compressed bytes; accepting them avoids transcoding and is bit-exact),
    then uncompressed, then everything else (lossy syntaxes last, so the
    node never asks a sender to compress lossily what it holds uncompressed).
    """
    lossless = [
        uid.JPEGLosslessSV1,
        uid.JPEGLossless,
        uid.JPEGLSLossless,
        uid.JPEG2000Lossless,
        uid.RLELossless,
    ]
    uncompressed = [
        uid.ExplicitVRLittleEndian,
        uid.ImplicitVRLittleEndian,
        uid.DeflatedExplicitVRLittleEndian,
        uid.ExplicitVRBigEndian,
    ]
    first = [*lossless, *uncompressed]
    return first + [syntax for syntax in ALL_TRANSFER_SYNTAXES if syntax not in first]


def storage_sop_classes() -> list[str]:
    """Every Storage SOP class: pynetdicom's, and the retired and newer ones pydicom knows.

    pynetdicom lists only the current classes it knows; older modalities still
    send retired ones (Ultrasound Image Storage 1.2.840.10008.5.1.4.1.1.6) and
    an archive stores them all.  Storage Commitment and Storage Management
    are services, not storage classes.
    """
    known = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    more = [
        uid_value
        for uid_value, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class"
        and "Storage" in name
        and "Commitment" not in name
        and "Management" not in name
    ]
    return list(dict.fromkeys([*known, *sorted(more)]))


def supported_contexts() -> list[PresentationContext]:
    """Verification, every Storage SOP class and Storage Commitment, in every transfer syntax.

    Storage Commitment Push Model is accepted for the reports of the node's
    destinations (N-EVENT-REPORT): the node is its SCU, so a peer proposing
    the SCP role for it is granted that role.
    """
    syntaxes = preferred_transfer_syntaxes()
    abstract = [Verification, *storage_sop_classes()]
    commitment = build_context(StorageCommitmentPushModel, syntaxes)
    commitment.scu_role, commitment.scp_role = False, True
    return [*(build_context(sop_class, syntaxes) for sop_class in abstract), commitment]


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context of an established association."""

    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True)
class Accepted:
    """The association is accepted: the A-ASSOCIATE-AC to send and the agreed terms."""

    response: bytes
    calling_ae: str
    contexts: dict[int, AcceptedContext]
    peer_max_pdu: int


@dataclass(frozen=True)
class Rejected:
    """The association is refused: the A-ASSOCIATE-RJ to send and why (for the log)."""

    response: bytes
    calling_ae: str
    reason: str


#: Distinct association requests whose answers are kept (see ``AssociationPolicy.negotiate``).
MAX_REMEMBERED_REQUESTS = 64


class _QuietWhileDecoding(logging.Filter):
    """Drops pynetdicom's log records in a thread that is decoding a peer's request.

    pynetdicom logs a traceback for every undecodable text item (a UID or
    AE title that is not ASCII) before it raises; a remote peer must not be
    able to fill the node's log with them.  The SCP logs one line instead.
    """

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_QUIET = _QuietWhileDecoding()
for _name in ("utils", "pdu", "pdu_items", "pdu_primitives", "presentation"):
    logging.getLogger(f"pynetdicom.{_name}").addFilter(_QUIET)


@contextmanager
def _quiet_pynetdicom() -> Iterator[None]:
    _QUIET.active.on = True
    try:
        yield
    finally:
        _QUIET.active.on = False


def _decode(request_pdu: bytes) -> A_ASSOCIATE:
    """The A-ASSOCIATE primitive of an A-ASSOCIATE-RQ PDU (header included)."""
    try:
        request = A_ASSOCIATE_RQ()
        request.decode(request_pdu)
        return request.to_primitive()
    except Exception as exc:
        raise pdu.ProtocolViolation(f"undecodable A-ASSOCIATE-RQ ({type(exc).__name__})") from exc


def _unreadable_ae_title(request_pdu: bytes) -> tuple[str, tuple[int, int, int]] | None:
    """Why the request's called or calling AE title is not one (PS3.5 Table 6.2-1: AE), if so.

    Checked on the raw fields before decoding: an AE title is 16 bytes of the
    default repertoire without control characters or backslash (NUL padding
    is tolerated, as older senders use it).
    """
    for start, what, rejection in (
        (10, "called", _REJECT_CALLED_AE),
        (26, "calling", _REJECT_CALLING_AE),
    ):
        field = request_pdu[start : start + 16]
        if not all((0x20 <= byte < 0x7F and byte != 0x5C) or byte == 0 for byte in field):
            return f"{what} AE title is not ASCII text", rejection
    return None


class AssociationPolicy:
    """Decides on association requests for one Storage SCP.

    Parameters
    ----------
    settings:
        The node's AE title, allow-list, association limit and maximum PDU.
    """

    def __init__(self, settings: ScpSettings) -> None:
        self.ae_title = settings.ae_title
        self.admits = settings.admits
        self.max_associations = settings.max_associations
        self.max_pdu = settings.max_pdu_size
        self._contexts = supported_contexts()
        self._answers: dict[bytes, tuple[A_ASSOCIATE, Accepted]] = {}

    def negotiate(self, request_pdu: bytes, peer_host: str, active: int) -> Accepted | Rejected:
        """Answer an A-ASSOCIATE-RQ PDU (header included) from ``peer_host``.

        ``active`` counts the associations already open, this one excluded.

        Raises
        ------
        pdu.ProtocolViolation
            If the PDU cannot be decoded (the connection is then aborted).
        """
        # A sender repeats the same request for every association it opens; decoding
        # and negotiating 128 contexts cost ~15 ms of CPU, so known requests are answered
        # from memory (the checks that depend on the peer and the load still run).
        answer = self._answers.get(request_pdu)
        if answer is None:
            unreadable = _unreadable_ae_title(request_pdu)
            if unreadable is not None:
                reason, (result, source, diagnostic) = unreadable
                return Rejected(pdu.associate_reject(result, source, diagnostic), "?", reason)
            with _quiet_pynetdicom():
                primitive = _decode(request_pdu)
                accepted = self._accept(primitive, str(primitive.calling_ae_title).strip())
            if len(self._answers) >= MAX_REMEMBERED_REQUESTS:
                self._answers.clear()
            self._answers[request_pdu] = answer = (primitive, accepted)
        primitive, accepted = answer
        refusal = self._refusal(request_pdu, primitive, accepted.calling_ae, peer_host, active)
        if refusal is not None:
            reason, (result, source, diagnostic) = refusal
            return Rejected(
                pdu.associate_reject(result, source, diagnostic), accepted.calling_ae, reason
            )
        return accepted

    def _refusal(
        self, request_pdu: bytes, primitive: A_ASSOCIATE, calling: str, host: str, active: int
    ) -> tuple[str, tuple[int, int, int]] | None:
        protocol_version = int.from_bytes(request_pdu[6:8], "big")
        if not protocol_version & 0x0001:
            return "protocol version not supported", _REJECT_PROTOCOL_VERSION
        if str(primitive.application_context_name) != APPLICATION_CONTEXT_NAME:
            return "application context not supported", _REJECT_APPLICATION_CONTEXT
        if str(primitive.called_ae_title).strip() != self.ae_title:
            return "called AE title is not the node's", _REJECT_CALLED_AE
        if not self.admits(calling, host):
            return "calling AE title not allowed from this host", _REJECT_CALLING_AE
        if active >= self.max_associations:
            return "too many associations", _REJECT_LIMIT
        return None

    def _accept(self, primitive: A_ASSOCIATE, calling: str) -> Accepted:
        user_items = primitive.user_information
        peer_max_pdu = next(
            (
                int(item.maximum_length_received or 0)
                for item in user_items
                if isinstance(item, MaximumLengthNotification)
            ),
            0,
        )
        roles = {
            item.sop_class_uid: (item.scu_role, item.scp_role)
            for item in user_items
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        }
        for context in primitive.presentation_context_definition_list:
            if not context.transfer_syntax:
                raise pdu.ProtocolViolation(
                    f"presentation context {context.context_id} proposes no transfer syntax"
                )
        results, reply_roles = negotiate_as_acceptor(
            primitive.presentation_context_definition_list, self._contexts, roles or None
        )
        response = A_ASSOCIATE()
        response.application_context_name = APPLICATION_CONTEXT_NAME
        response.calling_ae_title = primitive.calling_ae_title
        response.called_ae_title = primitive.called_ae_title
        response.result = 0x00
        response.result_source = 0x01
        response.presentation_context_definition_results_list = results
        response.user_information = [*self._user_information(), *reply_roles]
        accept = A_ASSOCIATE_AC()
        accept.from_primitive(response)
        contexts = {
            int(cx.context_id): AcceptedContext(str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in results
            if cx.result == 0x00 and cx.context_id is not None
        }
        return Accepted(accept.encode(), calling, contexts, peer_max_pdu)

    def _user_information(self) -> list[object]:
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.max_pdu
        class_uid = ImplementationClassUIDNotification()
        class_uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        return [max_length, class_uid, version]
