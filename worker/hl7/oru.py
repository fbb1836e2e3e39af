"""The HL7 v2.5.1 ORU^R01 of a job's result, built and validated with hl7apy.

What a RIS or reporting worklist needs to file the result with its order
(IHE RAD-128 style): PID-3 the patient ID, OBR-3 and OBR-18 the accession
number, OBR-4 the requested procedure, an OBX with the Study Instance UID
(DCM 110180), then one OBX per finding (CWE) and per measurement (NM, UCUM
units) of the job's TID 1500 SR, each group of one structure or finding with
its own OBX-4 sub-ID.  The site's ``AINODE_HL7_ABNORMAL_FLAGS`` set OBX-8 of
a finding; a critical flag (AA, HH, LL) makes TQ1-9 priority stat, the
standard having no field of its own for an AI's priority.  No patient name is
kept by the node: PID-5 says so with name type U (unspecified).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message, Segment
from pydicom import Dataset

#: HL7 table 0078 flags that make the order's priority stat.
CRITICAL_FLAGS = {"AA", "HH", "LL"}
#: Concept names of SR content items that are context, not findings.
_SKIPPED_CODES = {"Finding category", "Algorithm Family", "Derivation"}


@dataclass(frozen=True)
class OrderContext:
    """The study and job facts an ORU carries (patient data: never logged)."""

    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    study_date: date | None
    requested_procedure: str | None
    pipeline: str
    pipeline_version: str
    finished_at: datetime


@dataclass(frozen=True)
class Observation:
    """One OBX: a finding (CWE) or a measurement (NM) of one group of the SR."""

    group: int
    value_type: str
    code: str
    value: str
    units: str = ""


def _escape(text: str) -> str:
    """``text`` with HL7's delimiters escaped (``\\F\\`` and friends)."""
    escapes = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}
    return "".join(escapes.get(char, char) for char in text).replace("\r", " ").replace("\n", " ")


def _coded(item: Dataset) -> str:
    return "^".join(
        _escape(str(item.get(keyword, "")))
        for keyword in ("CodeValue", "CodeMeaning", "CodingSchemeDesignator")
    )


def observations(report: Dataset) -> list[Observation]:
    """The findings and measurements of an SR, numbered by the container that holds them.

    Walks the content tree: every CODE (other than context such as the
    finding category) and NUM item that a container CONTAINS becomes an OBX;
    the items of one measurement group share an OBX-4 sub-ID.
    """
    rows: list[Observation] = []
    groups: dict[int, int] = {}

    def walk(container: Dataset) -> None:
        for item in container.get("ContentSequence", []):
            if item.get("RelationshipType") != "CONTAINS":
                continue
            name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            if item.ValueType == "CONTAINER":
                walk(item)
                continue
            if name is None or str(name.get("CodeMeaning", "")) in _SKIPPED_CODES:
                continue
            group = groups.setdefault(id(container), len(groups) + 1)
            if item.ValueType == "CODE":
                rows.append(
                    Observation(group, "CWE", _coded(name), _coded(item.ConceptCodeSequence[0]))
                )
            elif item.ValueType == "NUM" and item.get("MeasuredValueSequence"):
                measured = item.MeasuredValueSequence[0]
                units = _coded(measured.MeasurementUnitsCodeSequence[0])
                value = f"{float(measured.NumericValue):.6g}"
                rows.append(Observation(group, "NM", _coded(name), value, units))

    walk(report)
    return rows


def abnormal_flag(observation: Observation, flags: Mapping[str, str]) -> str:
    """The site's OBX-8 flag for a finding (matched on its code meaning or value)."""
    if observation.value_type != "CWE" or not flags:
        return ""
    value, meaning = observation.value.split("^")[:2]
    wanted = {key.lower(): flag for key, flag in flags.items()}
    return wanted.get(meaning.lower(), wanted.get(value.lower(), ""))


@dataclass(frozen=True)
class Parties:
    """MSH-3 to MSH-6: who sends and who receives."""

    sending_application: str
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""


def build_oru(
    context: OrderContext,
    report: Dataset,
    *,
    control_id: str,
    parties: Parties,
    flags: Mapping[str, str],
    now: datetime,
) -> str:
    """The ORU^R01 (ER7 text, segments separated by CR) of one job's SR.

    Raises
    ------
    hl7apy.exceptions.ValidationError
        If the message does not validate against HL7 v2.5.1 (a bug: the node
        sends nothing half-valid).
    """
    message = Message("ORU_R01", version="2.5.1", validation_level=VALIDATION_LEVEL.STRICT)
    _fill_msh(message.msh, parties, control_id, now)
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    _add_pid(result, context)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    rows = observations(report)
    flagged = [abnormal_flag(row, flags) for row in rows]
    _add_tq1(order, critical=bool(CRITICAL_FLAGS & set(flagged)))
    _fill_obr(order.obr, context)
    lines = [
        Observation(0, "ST", "110180^Study Instance UID^DCM", context.study_instance_uid),
        *rows,
    ]
    for index, (row, flag) in enumerate(zip(lines, ["", *flagged], strict=True), start=1):
        _fill_obx(order.add_group("ORU_R01_OBSERVATION").obx, index, row, flag, context)
    message.validate()
    return message.to_er7()


def _fill_msh(msh: Segment, parties: Parties, control_id: str, now: datetime) -> None:
    """MSH: sender and receiver, time, message type, control ID, production, UTF-8."""
    msh.msh_3 = _escape(parties.sending_application)
    msh.msh_4 = _escape(parties.sending_facility)
    msh.msh_5 = _escape(parties.receiving_application)
    msh.msh_6 = _escape(parties.receiving_facility)
    msh.msh_7 = now.strftime("%Y%m%d%H%M%S")
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = control_id
    msh.msh_11 = "P"
    msh.msh_18 = "UNICODE UTF-8"


def _add_pid(result: Group, context: OrderContext) -> None:
    """PID: the patient ID (PI), and a name of type U as the node keeps none."""
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_1 = "1"
    patient.pid.pid_3 = f"{_escape(context.patient_id or '')}^^^^PI"
    patient.pid.pid_5 = "^^^^^^U"


def _add_tq1(order: Group, *, critical: bool) -> None:
    """TQ1: priority stat when a finding is flagged critical, else routine."""
    timing = order.add_group("ORU_R01_TIMING_QTY")
    timing.tq1.tq1_1 = "1"
    timing.tq1.tq1_9 = "S^Stat^HL70078" if critical else "R^Routine^HL70078"


def _fill_obr(obr: Segment, context: OrderContext) -> None:
    """OBR: the accession (OBR-3, OBR-18), requested procedure, study date, results time, final."""
    obr.obr_1 = "1"
    accession = _escape(context.accession_number or "")
    obr.obr_3 = accession
    procedure = _escape(context.requested_procedure or context.pipeline)
    obr.obr_4 = f"{_escape(context.pipeline)}^{procedure}^L"
    if context.study_date is not None:
        obr.obr_7 = context.study_date.strftime("%Y%m%d")
    obr.obr_18 = accession
    obr.obr_22 = context.finished_at.strftime("%Y%m%d%H%M%S")
    obr.obr_24 = "RAD"
    obr.obr_25 = "F"


def _fill_obx(obx: Segment, index: int, row: Observation, flag: str, context: OrderContext) -> None:
    """OBX ``index``: one observation, final, with its group sub-ID, units and abnormal flag."""
    obx.obx_1 = str(index)
    obx.obx_2 = row.value_type
    obx.obx_3 = row.code
    obx.obx_4 = str(row.group) if row.group else ""
    obx.obx_5 = row.value
    if row.units:
        obx.obx_6 = row.units
    if flag:
        obx.obx_8 = flag
    obx.obx_11 = "F"
    obx.obx_14 = context.finished_at.strftime("%Y%m%d%H%M%S")
