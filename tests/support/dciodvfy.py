"""Run dicom3tools' ``dciodvfy`` on a file and collect the errors it reports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID

__all__ = [
    "LABELMAP_ALLOWED_ERRORS",
    "dciodvfy_available",
    "dciodvfy_errors",
    "dciodvfy_report",
    "labelmap_dciodvfy_errors",
]

SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.4")
LABEL_MAP_SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.7")

#: What Debian's dciodvfy (dicom3tools 2022) reports about a conformant Label Map
#: Segmentation or an SR referencing one: it predates DICOM 2024's Supplement 243, where
#: LABELMAP is a Segmentation Type, segment numbers need not start at 1 (highdicom
#: describes the background as segment 0), frames of a label map belong to no single
#: segment (no Segment Identification Sequence), and 66.7 is a segmentation SOP class.
LABELMAP_ALLOWED_ERRORS = (
    "Error - Unrecognized enumerated value <LABELMAP> for value 1 of attribute <Segmentation Type>",
    "Error - Value is zero for value 1 of attribute <Segment Number>",
    "Error - SegmentNumber not monotonically increasing from one by one - have "
    "SegmentSequence item number 1 (from one) with SegmentNumber of 0",
    "Error - Missing attribute Type 1 Required Element=<SegmentIdentificationSequence> "
    "Module=<SegmentationMacro>",
    "Error - Shall not be present for Referenced SOP Class that is not segmentation - "
    "attribute <ReferencedSegmentNumber>",
)


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


def labelmap_dciodvfy_errors(path: str | Path) -> list[str]:
    """``dciodvfy`` errors of a LABELMAP SEG (or an SR referencing one) beyond Supplement 243.

    dciodvfy does not know Label Map Segmentation Storage ("Information Object
    Not found").  Supplement 243 defines it as another SOP class of the same
    Segmentation IOD, so a LABELMAP SEG is checked as a copy declared
    Segmentation Storage: every module (patient, study, series, equipment,
    frame of reference, functional groups, pixels, references) is verified,
    and only the differences the 2024 standard allows
    (:data:`LABELMAP_ALLOWED_ERRORS`) are dropped.

    Parameters
    ----------
    path:
        A LABELMAP SEG, or an SR whose segment references point at one.

    Returns
    -------
    list of str
        The remaining error lines; empty when nothing else is wrong.
    """
    dataset = dcmread(path)
    with tempfile.TemporaryDirectory() as folder:
        if dataset.SOPClassUID == LABEL_MAP_SEGMENTATION_STORAGE:
            dataset.SOPClassUID = SEGMENTATION_STORAGE
            dataset.file_meta.MediaStorageSOPClassUID = SEGMENTATION_STORAGE
            path = Path(folder) / "as-segmentation.dcm"
            dataset.save_as(path, enforce_file_format=True)
        return [error for error in dciodvfy_errors(path) if error not in LABELMAP_ALLOWED_ERRORS]
