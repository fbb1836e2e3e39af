"""From a pipeline result to the DICOM objects sent back: SEG + SR, or an SR alone.

One function per job, whatever the result kind, so the task code does not
care which kind a pipeline produces: segmentation gives a SEG and a TID 1500
SR of its segments, once per SEG type the destinations take (BINARY, and
LABELMAP where asked for), and where a destination asks for them Secondary
Captures of the key images with the overlay burned in (``sc``) and a Key
Object Selection of the key images and of the objects it takes (``kos``);
classification and detection give a TID 1500 SR.
UIDs come from :class:`core.uids.ResultUIDs`, derived from the job's input,
so a re-run rebuilds identical objects.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from core import __version__
from core.config import SEG_TYPES, Destination, SegType
from core.errors import PipelineError
from core.uids import ResultUIDs
from pipelines.base import (
    ClassificationResult,
    DetectionResult,
    Pipeline,
    PipelineInput,
    PipelineResult,
    SegmentationResult,
    SegmentMeasurement,
    measure_segments,
)
from pipelines.outputs import ReportHeader, build_measurement_report, build_segmentation
from pipelines.outputs.checks import (
    OutputCheckFailed,
    check_references,
    check_segmentation_geometry,
    check_segments,
)
from pipelines.outputs.findings import build_classification_report, build_detection_report
from pipelines.outputs.key_objects import build_key_object_selection
from pipelines.outputs.provenance import ResultProvenance
from pipelines.outputs.secondary_capture import (
    MAX_KEY_IMAGES,
    build_secondary_captures,
    key_images,
)
from pipelines.outputs.seg import OverlappingSegmentsError
from pipelines.outputs.sources import result_sources

__all__ = [
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "BuiltResults",
    "ResultObject",
    "build_result_objects",
]

SEG_SERIES_NUMBER = 9901
SR_SERIES_NUMBER = 9902
SC_SERIES_NUMBER = 9903
KOS_SERIES_NUMBER = 9904

_PROCEDURES: dict[str, Code] = {
    "CT": codes.cid100.CTUnspecifiedBodyRegion,
    "MR": codes.cid100.MRIUnspecifiedBodyRegion,
    "PT": codes.cid100.PETUnspecifiedBodyRegion,
    "NM": codes.cid100.NMUnspecifiedBodyRegion,
}


@dataclass(frozen=True)
class ResultObject:
    """One DICOM object of a job and the SEG type of the destinations it is for.

    ``seg_type`` is None for an SR that references no SEG (classification,
    detection): it goes to every destination.
    """

    kind: str
    dataset: Dataset
    seg_type: SegType | None = None
    variant: str | None = None
    number: int | None = None

    @property
    def file_name(self) -> str:
        """File name in the job's results folder: ``seg.dcm``, ``sr-labelmap.dcm``, ``sc-2.dcm``."""
        parts = [self.kind]
        if self.seg_type is not None and self.seg_type != "BINARY":
            parts.append(self.seg_type.lower())
        if self.variant is not None:
            parts.append(self.variant)
        if self.number is not None:
            parts.append(str(self.number))
        return "-".join(parts) + ".dcm"


@dataclass
class BuiltResults:
    """A job's result objects, and why a SEG type that was asked for is missing (if so)."""

    objects: list[ResultObject]
    note: str | None = None


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
    seg_types: Collection[SegType] = ("BINARY",),
    destinations: Collection[Destination] = (),
) -> BuiltResults:
    """The result objects of one job: SEG + SR per SEG type, or one SR.

    A segmentation gives, for each of ``seg_types``, a SEG of that type and a
    TID 1500 SR that references *that* SEG, so every destination holds a
    consistent pair (the LABELMAP pair has UIDs of its own,
    :meth:`ResultUIDs.for_seg_type`).  A LABELMAP cannot hold overlapping
    segments (a body outline around the lungs): then no LABELMAP is built, the
    BINARY pair is (even if not asked for) and the note says why; LABELMAP
    destinations receive the BINARY pair (see :func:`worker.history.plan_deliveries`).

    Parameters
    ----------
    pipeline:
        The pipeline that produced ``result`` (identity, units, provenance).
    data:
        Its input.
    result:
        Segmentation, classification or detection result.
    uids:
        UIDs derived from the job (those of the BINARY SEG and its SR).
    ae_title:
        The node's AE title (device serial number, observer).
    outside_domain:
        The input was outside the pipeline's validated domain (flag policy).
    seg_types:
        The SEG types the job's destinations take (ignored for an SR-only result).
    destinations:
        Where the results go: Secondary Captures and KOS are built when one
        of them takes ``sc`` or ``kos`` (segmentation results only).

    Patient and study attributes the objects copy from the source are made
    valid first (:func:`pipelines.outputs.sources.result_sources`); the note
    names every attribute repaired or left out.
    """
    sources = result_sources(data.datasets)
    data = replace(data, datasets=sources.datasets)
    provenance = provenance_of(pipeline, ae_title)
    header = ReportHeader(
        series_instance_uid=uids.sr_series,
        sop_instance_uid=uids.sr_instance,
        series_number=SR_SERIES_NUMBER,
        provenance=provenance,
        procedure_reported=procedure_reported(data),
        outside_domain=outside_domain,
    )
    if isinstance(result, ClassificationResult | DetectionResult):
        objects = [ResultObject("sr", _findings_report(data, result, header))]
        check_result_objects(data, objects)
        return BuiltResults(objects, sources.note)
    measurements = measure_segments(data, result)
    objects, missing = _segmentation_pairs(
        pipeline, data, result, measurements, uids, header, seg_types
    )
    viewers = ViewerInputs(data, result, measurements, pipeline, provenance)
    objects += viewer_objects(viewers, objects, uids, destinations)
    check_result_objects(data, objects, measurements, pipeline.plausible_volume_ml)
    note = "; ".join(part for part in (sources.note, missing) if part) or None
    return BuiltResults(objects, note)


def _findings_report(
    data: PipelineInput, result: ClassificationResult | DetectionResult, header: ReportHeader
) -> Dataset:
    """The TID 1500 SR of a classification or a detection result."""
    if isinstance(result, ClassificationResult):
        return build_classification_report(data, result, header)
    return build_detection_report(data, result, header)


def _segmentation_pairs(
    pipeline: Pipeline,
    data: PipelineInput,
    result: SegmentationResult,
    measurements: Sequence[SegmentMeasurement],
    uids: ResultUIDs,
    header: ReportHeader,
    seg_types: Collection[SegType],
) -> tuple[list[ResultObject], str | None]:
    """A SEG and the SR that references it per SEG type, BINARY first; why a LABELMAP is missing.

    LABELMAP is tried first: when its segments overlap it cannot be built,
    and the BINARY pair stands in (built even if not asked for).  The SR of
    each pair takes the UIDs of its SEG type (:meth:`ResultUIDs.for_seg_type`).
    """
    wanted = set(seg_types) or {"BINARY"}
    objects: list[ResultObject] = []
    missing = None
    for seg_type in ("LABELMAP", "BINARY"):
        if seg_type not in wanted:
            continue
        typed = uids.for_seg_type(seg_type)
        try:
            seg = build_segmentation(
                data,
                result,
                series_instance_uid=typed.seg_series,
                sop_instance_uid=typed.seg_instance,
                series_number=SEG_SERIES_NUMBER,
                provenance=header.provenance,
                segmentation_type=seg_type.lower(),
            )
        except OverlappingSegmentsError:
            missing = "segments overlap: no LABELMAP SEG, LABELMAP destinations get the BINARY SEG"
            wanted.add("BINARY")
            continue
        sr = build_measurement_report(
            data,
            measurements,
            seg,
            replace(
                header, series_instance_uid=typed.sr_series, sop_instance_uid=typed.sr_instance
            ),
            intensity_unit=pipeline.intensity_unit,
        )
        objects += [ResultObject("seg", seg, seg_type), ResultObject("sr", sr, seg_type)]
    objects.sort(key=lambda item: SEG_TYPES.index(item.seg_type or "BINARY"))  # BINARY first
    return objects, missing


def check_result_objects(
    data: PipelineInput,
    objects: Sequence[ResultObject],
    measurements: Sequence[SegmentMeasurement] = (),
    plausible_volume_ml: Mapping[str, tuple[float, float]] | None = None,
) -> None:
    """Check the objects before any leaves (:mod:`pipelines.outputs.checks`).

    Raises
    ------
    PipelineError
        If one would be rejected or mislead: the job fails with the reason.
    """
    try:
        check_references(data.datasets, [item.dataset for item in objects])
        for item in objects:
            if item.kind == "seg":
                check_segmentation_geometry(data.datasets, item.dataset)
                check_segments(item.dataset, measurements, plausible_volume_ml or {})
    except OutputCheckFailed as exc:
        raise PipelineError(f"output check failed: {exc}") from exc


@dataclass(frozen=True)
class ViewerInputs:
    """What the Secondary Captures and KOS of a segmentation are made of."""

    data: PipelineInput
    result: SegmentationResult
    measurements: Sequence[SegmentMeasurement]
    pipeline: Pipeline
    provenance: ResultProvenance


def viewer_objects(
    inputs: ViewerInputs,
    made: Sequence[ResultObject],
    uids: ResultUIDs,
    destinations: Collection[Destination],
) -> list[ResultObject]:
    """The Secondary Captures and KOS the ``destinations`` ask for, next to the ``made`` SEG/SR.

    One set of SCs serves every destination; a KOS is built per SEG type made
    and per set of referenced formats (:attr:`Destination.kos_variant`).
    """
    wanted = {name for destination in destinations for name in destination.formats}
    if not wanted & {"sc", "kos"}:
        return []
    keys = [key.source for key in key_images(inputs.data, inputs.result)]
    if not keys:
        return []  # nothing found: no key images to capture or select
    captures: Sequence[Dataset] = ()
    if "sc" in wanted:  # a KOS references SCs only for a destination that takes them
        captures = build_secondary_captures(
            inputs.data,
            inputs.result,
            inputs.measurements,
            intensity_unit=inputs.pipeline.intensity_unit.meaning,
            series_instance_uid=uids.sc_series,
            sop_instance_uids=[uids.sc_instance(n) for n in range(1, MAX_KEY_IMAGES + 1)],
            series_number=SC_SERIES_NUMBER,
            provenance=inputs.provenance,
        )
    objects = [ResultObject("sc", sc, number=n) for n, sc in enumerate(captures, 1)]
    variants = sorted({d.kos_variant for d in destinations if d.kos_variant is not None})
    for seg_type in sorted({item.seg_type for item in made if item.seg_type}):
        for variant in variants:
            formats = variant.split("+")
            referenced = [
                item.dataset for item in made if item.seg_type == seg_type and item.kind in formats
            ]
            series_uid, instance_uid = uids.for_seg_type(seg_type).kos(variant)
            kos = build_key_object_selection(
                keys,
                referenced + (list(captures) if "sc" in formats else []),
                series_instance_uid=series_uid,
                sop_instance_uid=instance_uid,
                series_number=KOS_SERIES_NUMBER,
                provenance=inputs.provenance,
            )
            objects.append(ResultObject("kos", kos, seg_type, variant=variant))
    return objects
