"""A throw-away certificate authority for DICOM TLS tests (made with the openssl CLI)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Identity:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


class ThrowawayCA:
    """A self-signed CA in ``folder`` that issues server and client certificates."""

    def __init__(self, folder: Path, name: str = "ainode-test-ca") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.cert = folder / f"{name}.crt"
        self.key = folder / f"{name}.key"
        _openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(self.key),
            "-out",
            str(self.cert),
        )

    def issue(self, name: str, ip: str = "127.0.0.1") -> Identity:
        """A certificate for ``name`` valid for the IP address ``ip``, signed by this CA."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        extensions = self.folder / f"{name}.ext"
        extensions.write_text(f"subjectAltName=IP:{ip}\n")
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(self.cert),
            "-CAkey",
            str(self.key),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            str(cert),
            "-extfile",
            str(extensions),
        )
        return Identity(cert=cert, key=key)
