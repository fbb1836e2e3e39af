"""What the Storage SCP needs of the node's settings, in a form a receiver process can load cheaply.

A receiver process (see :mod:`dicom_node.receivers.pool`) runs only the SCP.
Loading :class:`core.config.Settings` there would import pydantic and
pydantic-settings, about 20 MB in every receiver; this plain, frozen copy of
the few settings the SCP reads travels to it as JSON instead.  The main
process builds it from the validated settings, so the values are checked once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.config import Settings

#: Fewest connections allowed to wait for negotiation at once, whatever the association limit.
MIN_PENDING_CONNECTIONS = 8
#: Settings holding a path, or None (JSON has no path type).
_PATHS = ("spool_path", "incoming_dir", "tls_cert_file", "tls_key_file", "tls_ca_file")


@dataclass(frozen=True)
class ScpSettings:
    """The Storage SCP's settings: AE title, address, allow-list, limits, timeouts, TLS files.

    ``allowed_callers`` holds ``(AE title, host or None)`` pairs, ``None``
    meaning from any host; an empty allow-list admits every caller.
    """

    ae_title: str
    host: str
    port: int
    allowed_callers: tuple[tuple[str, str | None], ...]
    max_associations: int
    max_pdu_size: int
    acse_timeout_seconds: float
    network_timeout_seconds: float
    spool_path: Path
    incoming_dir: Path
    tls_enabled: bool
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    log_level: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ScpSettings:
        """The SCP's part of the node's validated settings (each field read by its own name)."""
        values = {field.name: getattr(settings, field.name) for field in fields(cls)}
        values["allowed_callers"] = tuple(
            (caller.ae_title, caller.host) for caller in settings.allowed_callers
        )
        return cls(**values)

    def to_json(self) -> str:
        """These settings as JSON, for a receiver process."""
        values = asdict(self)
        for name in _PATHS:
            if values[name] is not None:
                values[name] = str(values[name])
        return json.dumps(values)

    @classmethod
    def from_json(cls, text: str) -> ScpSettings:
        """Settings sent by :meth:`to_json`."""
        values: dict[str, Any] = json.loads(text)
        for name in _PATHS:
            if values[name] is not None:
                values[name] = Path(values[name])
        values["allowed_callers"] = tuple(
            (ae_title, host) for ae_title, host in values["allowed_callers"]
        )
        return cls(**values)

    @property
    def max_pending_connections(self) -> int:
        """Connections that may wait to negotiate at once (then the oldest is dropped).

        As many as the association limit, and never fewer than
        :data:`MIN_PENDING_CONNECTIONS`, so senders connecting together are not dropped.
        """
        return max(self.max_associations, MIN_PENDING_CONNECTIONS)

    @property
    def allowed_hosts(self) -> frozenset[str] | None:
        """Hosts that may connect at all, or None when any host may (then AE titles decide)."""
        if not self.allowed_callers or any(host is None for _, host in self.allowed_callers):
            return None
        return frozenset(host for _, host in self.allowed_callers if host is not None)

    def admits(self, ae_title: str, host: str) -> bool:
        """Whether the allow-list lets ``ae_title`` associate from ``host``."""
        calling = ae_title.strip()
        return not self.allowed_callers or any(
            calling == allowed and allowed_host in (None, host)
            for allowed, allowed_host in self.allowed_callers
        )
