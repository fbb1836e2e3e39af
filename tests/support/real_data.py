"""Real scanner DICOM (``AINODE_REAL_DATA_DIR``, default ``../shared/data/real``) for tests.

The folder is not part of the repository: a test that needs one of its cases
calls :func:`real_case`, which skips the test with a clear reason where the
case is absent, and :func:`real_images` to list the image files of a case as
a PACS would send them (licence files and Philips ``DIRFILE`` left out).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.misc import is_dicom

from core.config import load_settings

__all__ = ["real_case", "real_images"]

_REPOSITORY = Path(__file__).resolve().parents[2]
#: Read once, at import: tests that isolate their settings clear ``AINODE_*`` later.
_ROOT = load_settings().real_data_dir.expanduser()


def real_case(name: str) -> Path:
    """The folder of real case ``name``; skips the calling test where it is absent."""
    folder = (_ROOT if _ROOT.is_absolute() else _REPOSITORY / _ROOT) / name
    if not folder.is_dir():
        pytest.skip(f"real DICOM case {name!r} absent: no folder {folder} (AINODE_REAL_DATA_DIR)")
    return folder


def real_images(name: str) -> list[Path]:
    """The DICOM image files of real case ``name``, sorted by name; skips where absent."""
    folder = real_case(name)
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.name != "DIRFILE" and is_dicom(path)
    )
