"""Key Object Selection of a job: the key images, and the result objects a destination holds.

A worklist or viewer that shows KOS ("key images", "flagged images") opens
the slices where the AI found each structure and the SEG, SR and Secondary
Captures sent with them.  Built with highdicom's validated constructor; the
document title is DCM 113000 "Of Interest".
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.report import device_observer


def build_key_object_selection(
    key_images: Sequence[Dataset],
    results: Sequence[Dataset],
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    provenance: ResultProvenance,
) -> hd.ko.KeyObjectSelectionDocument:
    """A KOS referencing ``key_images`` (source instances) and ``results`` (SEG, SR, SC)."""
    referenced = [*key_images, *results]
    content = hd.ko.KeyObjectSelection(
        document_title=codes.DCM.OfInterest,
        referenced_objects=referenced,
        observer_device_context=device_observer(provenance),
        description=f"AI key images {provenance.pipeline_name} {provenance.pipeline_version}"[
            :1024
        ],
    )
    return hd.ko.KeyObjectSelectionDocument(
        evidence=referenced,
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=provenance.manufacturer,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=provenance.default_series_description("KO"),
    )
