"""Parts every TID 1500 report of the node shares, whatever the result kind.

The observer (the node as a device), the algorithm identification (name,
version, parameters such as the weights' SHA-256 and the device), the
optional "outside validated input domain" evaluation, the header every report
takes (:class:`ReportHeader`) and the Comprehensive 3D SR document wrapper are
built here once, so segmentation, classification
and detection reports can never disagree about who made them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from pipelines.outputs.provenance import ResultProvenance

__all__ = [
    "INPUT_DOMAIN",
    "OUTSIDE_DOMAIN",
    "ReportHeader",
    "algorithm_id",
    "device_observer",
    "domain_evaluations",
    "measurement_report_document",
    "observation_context",
]

#: Concept name of the input-domain evaluation (private scheme: DICOM has no code for it).
INPUT_DOMAIN = Code("INPUT-DOMAIN", "99PACSAI", "Validated input domain")
#: Its value when the input lies outside the domain the pipeline was validated on.
OUTSIDE_DOMAIN = Code("OUTSIDE", "99PACSAI", "Outside validated input domain")


@dataclass(frozen=True)
class ReportHeader:
    """What every TID 1500 report of the node takes besides its result: identity and context.

    The segmentation, classification and detection reports share these
    arguments and hand them to :func:`measurement_report_document` unchanged.

    Parameters
    ----------
    series_instance_uid, sop_instance_uid, series_number:
        Identity of the new SR series and instance.
    provenance:
        Equipment and algorithm recorded in the report.
    procedure_reported:
        Procedure reported (CID 100), CT of unspecified body region by default.
    outside_domain:
        The input was outside the pipeline's validated domain: every group
        carries that qualitative evaluation.
    series_description:
        Defaults to e.g. ``"AI SR ct-lungs 1.0.0"``.
    """

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    provenance: ResultProvenance
    procedure_reported: Code = codes.LN.CTUnspecifiedBodyRegion
    outside_domain: bool = False
    series_description: str | None = None


def observation_context(provenance: ResultProvenance) -> hd.sr.ObservationContext:
    """Device observer context: the node (AE title) running the pipeline."""
    return hd.sr.ObservationContext(observer_device_context=device_observer(provenance))


def device_observer(provenance: ResultProvenance) -> hd.sr.ObserverContext:
    """The node as the device observer of its SR and KOS (the same UID for the same node)."""
    device_uid = generate_uid(
        entropy_srcs=["device-observer", provenance.manufacturer, provenance.device_serial_number]
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(device_uid),
        name=provenance.device_serial_number,
        manufacturer_name=provenance.manufacturer,
        model_name=provenance.manufacturer_model_name,
        serial_number=provenance.device_serial_number,
    )
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )


def algorithm_id(provenance: ResultProvenance) -> hd.sr.AlgorithmIdentification:
    """TID 4019 algorithm identification: name, version, parameters, family, manufacturer."""
    return hd.sr.AlgorithmIdentification(
        name=provenance.algorithm_name,
        version=provenance.pipeline_version,
        parameters=provenance.algorithm_parameters or None,
        family=provenance.algorithm_family,
        manufacturer=provenance.manufacturer,
    )


def domain_evaluations(outside_domain: bool) -> list[hd.sr.QualitativeEvaluation]:
    """The "outside validated input domain" evaluation, or nothing when inside."""
    if not outside_domain:
        return []
    return [hd.sr.QualitativeEvaluation(name=INPUT_DOMAIN, value=OUTSIDE_DOMAIN)]


def measurement_report_document(
    groups: Sequence[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    ],
    evidence: Sequence[Dataset],
    header: ReportHeader,
) -> hd.sr.Comprehensive3DSR:
    """Wrap measurement groups in a TID 1500 Measurement Report (Comprehensive 3D SR).

    Parameters
    ----------
    groups:
        The report's imaging measurement groups.
    evidence:
        Every object the groups reference (source images, the SEG).
    header:
        Identity of the new SR, equipment and procedure reported.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        COMPLETE, PRELIMINARY and UNVERIFIED (no human review).
    """
    provenance = header.provenance
    report = hd.sr.MeasurementReport(
        observation_context=observation_context(provenance),
        procedure_reported=header.procedure_reported,
        imaging_measurements=list(groups),
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(evidence),
        content=report[0],
        series_instance_uid=header.series_instance_uid,
        series_number=header.series_number,
        sop_instance_uid=header.sop_instance_uid,
        instance_number=1,
        **provenance.equipment(),
        series_description=header.series_description or provenance.default_series_description("SR"),
        is_complete=True,
    )
