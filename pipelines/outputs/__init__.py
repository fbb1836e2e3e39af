"""Output builders: DICOM SEG and TID 1500 SR from a pipeline result."""

from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.report import ReportHeader
from pipelines.outputs.seg import build_segmentation, segment_tracking_uid
from pipelines.outputs.sr import build_measurement_report

__all__ = [
    "ReportHeader",
    "ResultProvenance",
    "build_measurement_report",
    "build_segmentation",
    "segment_tracking_uid",
]
