"""Deterministic UIDs for result objects.

A result's Series and SOP Instance UIDs are derived from what was analysed
(study, series, the exact set of input instances) and by which pipeline
version, so re-running a job or re-sending its results yields the same UIDs
and the PACS stores each object once instead of duplicating it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.uid import generate_uid

from core import __version__

if TYPE_CHECKING:
    from core.config import SegType

UID_ROOT = "1.2.826.0.1.3680043.8.498."


def input_key(sop_instance_uids: Iterable[str]) -> str:
    """A fingerprint of a job's input: the sorted SOP Instance UIDs it covers."""
    digest = hashlib.sha256()
    for uid in sorted(set(sop_instance_uids)):
        digest.update(uid.encode("ascii", "replace"))
        digest.update(b"\0")
    return digest.hexdigest()


def derived_uid(*parts: str) -> str:
    """A UID under the node's root, the same for the same ``parts``.

    The parts are joined with a separator that cannot occur in a UID:
    pydicom concatenates its entropy sources as they are, so without it
    ``("1.2.3", "45.6")`` and ``("1.2.34", "5.6")`` would give the same UID.
    """
    return generate_uid(prefix=UID_ROOT, entropy_srcs=["\x00".join(("pacs-ai-node", *parts))])


@dataclass(frozen=True)
class ResultUIDs:
    """Series and SOP Instance UIDs of one job's SEG and SR."""

    seg_series: str
    seg_instance: str
    sr_series: str
    sr_instance: str

    @classmethod
    def for_job(
        cls, *, study_uid: str, series_uid: str, pipeline: str, version: str, key: str
    ) -> ResultUIDs:
        """Derive the UIDs of a job's results from its identity (not from its row id)."""
        base = (study_uid, series_uid, pipeline, version, key)
        return cls(
            seg_series=derived_uid(*base, "seg-series"),
            seg_instance=derived_uid(*base, "seg-instance"),
            sr_series=derived_uid(*base, "sr-series"),
            sr_instance=derived_uid(*base, "sr-instance"),
        )

    @property
    def sc_series(self) -> str:
        """Series of the job's Secondary Captures (one set, whatever the SEG type)."""
        return derived_uid(self.seg_series, "sc-series")

    def sc_instance(self, number: int) -> str:
        """SOP Instance UID of the job's ``number``-th Secondary Capture (from 1)."""
        return derived_uid(self.seg_instance, "sc-instance", str(number))

    def kos(self, variant: str) -> tuple[str, str]:
        """Series and SOP Instance UIDs of the KOS that references ``variant`` (``seg+sr``...).

        Derived from the UIDs of one SEG type (:meth:`for_seg_type`), so each
        SEG type and each set of referenced formats has a KOS of its own:
        destinations taking different formats never get a KOS pointing at
        objects they do not hold, and a re-run rebuilds the same ones.
        """
        return derived_uid(self.seg_series, "kos-series"), derived_uid(
            self.seg_instance, "kos-instance", variant
        )

    def for_seg_type(self, seg_type: SegType) -> ResultUIDs:
        """The UIDs of the job's SEG of ``seg_type`` and of the SR that references it.

        BINARY keeps these UIDs (those of every result made before LABELMAP
        existed); a LABELMAP SEG and its SR are other objects in other series,
        so their four UIDs are derived from these: as deterministic, never equal.
        """
        if seg_type == "BINARY":
            return self
        variant = seg_type.lower()
        return ResultUIDs(
            seg_series=derived_uid(self.seg_series, variant),
            seg_instance=derived_uid(self.seg_instance, variant),
            sr_series=derived_uid(self.sr_series, variant),
            sr_instance=derived_uid(self.sr_instance, variant),
        )


#: The node's Implementation Class UID (association negotiation, file meta), one per version.
IMPLEMENTATION_CLASS_UID = derived_uid("implementation", __version__)
#: The node's Implementation Version Name (at most 16 characters).
IMPLEMENTATION_VERSION_NAME = f"AINODE_{__version__}"[:16]
