"""Sending one HL7 message over MLLP and reading its acknowledgement (the ``hl7`` package).

One connection per message: the node sends a result message now and then,
so a connection kept open would mostly be a connection to re-open after the
RIS dropped it.  The ``hl7`` package's asyncio client frames the message
(MLLP start block, end block, carriage return) and reads the framed ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass

import hl7
from hl7.mllp import open_hl7_connection

from core.config import Hl7Destination
from core.errors import TransientError

#: MSA-1 codes that mean the receiver took the message (original and enhanced mode).
ACCEPTED = {"AA", "CA"}


@dataclass(frozen=True)
class Acknowledgement:
    """The receiver's answer: MSA-1 code, MSA-3 text and the whole ACK as received."""

    code: str
    text: str
    raw: str

    @property
    def accepted(self) -> bool:
        """Whether the receiver accepted the message (AA or CA)."""
        return self.code in ACCEPTED


def parse_ack(raw: str) -> Acknowledgement:
    """The acknowledgement in ``raw`` (an ACK message).

    Raises
    ------
    TransientError
        If ``raw`` is not an ACK with an MSA segment (the receiver is then
        treated as not having answered).
    """
    try:
        msa = hl7.parse(raw).segment("MSA")
        return Acknowledgement(str(msa(1)), str(msa(3)) if len(msa) > 3 else "", raw)
    except (KeyError, IndexError, hl7.ParseException) as exc:
        raise TransientError(f"unreadable acknowledgement ({type(exc).__name__})") from exc


async def _exchange(
    destination: Hl7Destination, message: str, timeout: float, tls: ssl.SSLContext | None
) -> str:
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(
            destination.host,
            destination.port,
            encoding="utf-8",
            ssl=tls,
            server_hostname=destination.host if tls is not None else None,
        ),
        timeout,
    )
    try:
        writer.writemessage(hl7.parse(message))
        await writer.drain()
        return str(await asyncio.wait_for(reader.readmessage(), timeout))
    finally:
        writer.close()
        # A receiver that closes right after its ACK resets our TLS close_notify:
        # the ACK is read, so the message is delivered all the same.
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


def send_message(
    destination: Hl7Destination, message: str, *, timeout: float, tls: ssl.SSLContext | None = None
) -> Acknowledgement:
    """Send ``message`` (ER7) to ``destination``; its acknowledgement.

    Raises
    ------
    TransientError
        If the receiver cannot be reached, presents a TLS certificate that
        ``tls`` does not trust, closes the connection or does not acknowledge
        within ``timeout`` seconds.
    """
    try:
        raw = asyncio.run(_exchange(destination, message, timeout, tls))
    except TimeoutError as exc:
        raise TransientError(f"no acknowledgement from {destination} within {timeout:g} s") from exc
    except ssl.SSLCertVerificationError as exc:
        reason = getattr(exc, "verify_message", None) or exc.reason
        raise TransientError(
            f"cannot send to {destination}: its TLS certificate is not trusted ({reason})"
        ) from exc
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise TransientError(f"cannot send to {destination} ({type(exc).__name__})") from exc
    return parse_ack(raw)
