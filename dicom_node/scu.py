"""Storage SCU: C-STORE of files to a DICOM peer (results to the PACS, ``ainode send``).

One association per call; each file is offered in its own transfer syntax,
and a file the peer refuses is reported with its status rather than
stopping the others.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext, build_context

from core.config import Destination
from core.dicom_status import PEER_STORED
from core.errors import TransientError

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128


@dataclass(frozen=True)
class SendOutcome:
    """The peer's answer to one file: its DIMSE status, or why it was not sent."""

    path: Path
    sop_instance_uid: str | None
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the peer stored the file (success or a warning status)."""
        return self.status in PEER_STORED


def _header(path: Path) -> tuple[str, str, str]:
    dataset = dcmread(path, stop_before_pixels=True)
    return (
        str(dataset.SOPClassUID),
        str(dataset.SOPInstanceUID),
        str(dataset.file_meta.TransferSyntaxUID),
    )


def associate(
    destination: Destination,
    contexts: Sequence[PresentationContext],
    *,
    calling_ae: str,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    max_pdu_size: int | None = None,
    refused: str = "association",
) -> Association:
    """Open one association with ``destination`` proposing ``contexts`` (DICOM TLS with ``tls``).

    ``max_pdu_size`` None keeps pynetdicom's default; ``refused`` names what
    could not be had in the error (``no <refused> with <destination>``).

    Raises
    ------
    TransientError
        If the association cannot be established (peer down, refused).
    """
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = list(contexts)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    if max_pdu_size is not None:
        ae.maximum_pdu_size = max_pdu_size
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        tls_args=(tls, destination.host) if tls is not None else None,
    )
    if not assoc.is_established:
        raise TransientError(f"no {refused} with {destination}")
    return assoc


def store_files(
    destination: Destination,
    paths: Sequence[Path],
    *,
    calling_ae: str,
    timeout: float = 60.0,
    max_pdu_size: int = 0,
    tls: ssl.SSLContext | None = None,
) -> list[SendOutcome]:
    """C-STORE ``paths`` to ``destination`` over one association (DICOM TLS with ``tls``).

    Raises
    ------
    TransientError
        If the association cannot be established (peer down, refused).
    """
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    outcomes: list[SendOutcome] = []
    headers: dict[Path, tuple[str, str, str]] = {}
    for path in paths:
        try:
            headers[path] = _header(path)
        except (InvalidDicomError, OSError, AttributeError) as exc:
            outcomes.append(SendOutcome(path, None, None, f"not a DICOM file: {exc}"))
    contexts = sorted({(sop_class, syntax) for sop_class, _, syntax in headers.values()})
    if len(contexts) > MAX_CONTEXTS:
        raise ValueError(f"{len(contexts)} SOP class/transfer syntax pairs; at most 128")
    if not headers:
        return outcomes

    assoc = associate(
        destination,
        [build_context(sop_class, [syntax]) for sop_class, syntax in contexts],
        calling_ae=calling_ae,
        timeout=timeout,
        tls=tls,
        max_pdu_size=max_pdu_size,
    )
    try:
        for path, (_, sop_uid, _) in headers.items():
            outcomes.append(_send_one(assoc, path, sop_uid))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def _send_one(assoc: Association, path: Path, sop_uid: str) -> SendOutcome:
    if not assoc.is_established:
        return SendOutcome(path, sop_uid, None, "association lost")
    try:
        response = assoc.send_c_store(path)
    except (ValueError, RuntimeError) as exc:
        return SendOutcome(path, sop_uid, None, str(exc))
    status = getattr(response, "Status", None)
    if status is None:
        return SendOutcome(path, sop_uid, None, "no response (timeout or abort)")
    error = None if int(status) in PEER_STORED else f"status 0x{int(status):04X}"
    return SendOutcome(path, sop_uid, int(status), error)
