"""From a pipeline result to the DICOM objects sent back: SEG + SR, or an SR alone.

One function per job, whatever the result kind, so the task code does not
care which kind a pipeline produces: segmentation gives a SEG and a TID 1500
SR of its segments; classification and detection give a TID 1500 SR.
UIDs come from :class:`core.uids.ResultUIDs`, derived from the job's input,
so a re-run rebuilds identical objects.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from core import __version__
from core.uids import ResultUIDs
from pipelines.base import (
    ClassificationResult,
    DetectionResult,
    Pipeline,
    PipelineInput,
    PipelineResult,
    measure_segments,
)
from pipelines.outputs import build_measurement_report, build_segmentation
from pipelines.outputs.findings import build_classification_report, build_detection_report
from pipelines.outputs.provenance import ResultProvenance

__all__ = ["SEG_SERIES_NUMBER", "SR_SERIES_NUMBER", "build_result_objects"]

SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902

_PROCEDURES: dict[str, Code] = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
}


def procedure_reported(data: PipelineInput) -> Code:
    """Procedure reported (CID 100) from the input's modality; X-ray for projection images."""
    modality = str(data.datasets[0].get("Modality", "")).upper()
    return _PROCEDURES.get(modality, codes.cid100.XRUnspecifiedBodyRegion)


def provenance_of(pipeline: Pipeline, ae_title: str) -> ResultProvenance:
    """Equipment and algorithm facts of ``pipeline`` as run on this node."""
    parameters = dict(pipeline.parameters)
    if pipeline.weights_sha256:
        parameters["weights_sha256"] = pipeline.weights_sha256
    parameters["device"] = pipeline.device
    return ResultProvenance(
        node_version=__version__,
        pipeline_name=pipeline.spec.name,
        pipeline_version=pipeline.spec.version,
        device_serial_number=ae_title,
        parameters=parameters,
        algorithm_family=pipeline.algorithm_family,
        demo=pipeline.demo,
    )


def build_result_objects(
    pipeline: Pipeline,
    data: PipelineInput,
    result: PipelineResult,
    uids: ResultUIDs,
    *,
    ae_title: str,
    outside_domain: bool,
) -> list[tuple[str, Dataset]]:
    """The result objects of one job as ``(kind, dataset)``: ``seg`` and/or ``sr``.

    Parameters
    ----------
    pipeline:
        The pipeline that produced ``result`` (identity, units, provenance).
    data:
        Its input.
    result:
        Segmentation, classification or detection result.
    uids:
        UIDs derived from the job.
    ae_title:
        The node's AE title (device serial number, observer).
    outside_domain:
        The input was outside the pipeline's validated domain (flag policy).
    """
    provenance = provenance_of(pipeline, ae_title)
    common = {
        "series_instance_uid": uids.sr_series,
        "sop_instance_uid": uids.sr_instance,
        "series_number": SR_SERIES_NUMBER,
        "provenance": provenance,
        "procedure_reported": procedure_reported(data),
        "outside_domain": outside_domain,
    }
    if isinstance(result, ClassificationResult):
        return [("sr", build_classification_report(data, result, **common))]
    if isinstance(result, DetectionResult):
        return [("sr", build_detection_report(data, result, **common))]
    seg = build_segmentation(
        data,
        result,
        series_instance_uid=uids.seg_series,
        sop_instance_uid=uids.seg_instance,
        series_number=SEG_SERIES_NUMBER,
        provenance=provenance,
    )
    sr = build_measurement_report(
        data,
        measure_segments(data, result),
        seg,
        intensity_unit=pipeline.intensity_unit,
        **common,
    )
    return [("seg", seg), ("sr", sr)]
