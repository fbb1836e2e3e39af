"""Run dicom3tools' ``dciodvfy`` on a file and collect the errors it reports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["dciodvfy_available", "dciodvfy_errors", "dciodvfy_report"]


def dciodvfy_available() -> bool:
    """Whether the ``dciodvfy`` executable is on ``PATH``."""
    return shutil.which("dciodvfy") is not None


def dciodvfy_report(path: str | Path) -> list[str]:
    """All lines ``dciodvfy`` prints for ``path`` (stdout and stderr together).

    Parameters
    ----------
    path:
        A DICOM Part 10 file.

    Returns
    -------
    list of str
        Every non-empty output line, e.g. ``"Error - ..."`` or ``"Warning - ..."``.
    """
    completed = subprocess.run(
        ["dciodvfy", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    lines = (completed.stdout + "\n" + completed.stderr).splitlines()
    return [line.strip() for line in lines if line.strip()]


def dciodvfy_errors(path: str | Path) -> list[str]:
    """The lines of ``dciodvfy``'s report for ``path`` that start with ``Error``.

    Parameters
    ----------
    path:
        A DICOM Part 10 file.

    Returns
    -------
    list of str
        The error lines; empty when the object is valid for its IOD.
    """
    return [line for line in dciodvfy_report(path) if line.startswith("Error")]
