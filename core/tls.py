"""TLS contexts for DICOM TLS (PS3.15 Annex B): the SCP's and the SCU's.

The SCP presents the node's certificate; when a CA file is configured it
also requires and verifies a client certificate signed by that CA, so only
holders of such a certificate can associate.  The SCU verifies the
destination's certificate against the same CA (or the system store) and
presents the node's certificate when one is configured.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from core.errors import ConfigurationError


class TlsFiles(Protocol):
    """The TLS settings a context is made from: the node's settings, or the SCP's part of them."""

    @property
    def tls_enabled(self) -> bool:
        """Whether associations use TLS."""

    @property
    def tls_cert_file(self) -> Path | None:
        """The node's certificate (PEM)."""

    @property
    def tls_key_file(self) -> Path | None:
        """The private key of that certificate (PEM)."""

    @property
    def tls_ca_file(self) -> Path | None:
        """The CA that peers' certificates must chain to (PEM); the SCP then requires them."""


def _load_identity(context: ssl.SSLContext, settings: TlsFiles) -> None:
    try:
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the node's TLS certificate/key: {exc}") from exc


def _load_ca(context: ssl.SSLContext, settings: TlsFiles) -> None:
    try:
        context.load_verify_locations(cafile=str(settings.tls_ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load the TLS CA file: {exc}") from exc


def server_context(settings: TlsFiles) -> ssl.SSLContext | None:
    """The SCP's context, or None when TLS is not configured."""
    if not settings.tls_enabled:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_identity(context, settings)
    if settings.tls_ca_file is not None:
        _load_ca(context, settings)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: TlsFiles, server_hostname_check: bool = True) -> ssl.SSLContext:
    """The SCU's context for a TLS destination: verify the peer, present our identity."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = server_hostname_check
    if settings.tls_ca_file is not None:
        _load_ca(context, settings)
    else:
        context.load_default_certs()
    if settings.tls_enabled:
        _load_identity(context, settings)
    return context
