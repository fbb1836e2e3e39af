"""Console tools: C-ECHO a destination, test the routing rules on a series, self-test.

The self-test generates a small CT phantom (synthetic, no patient) and sends
it to the node's own SCP, so it travels the whole path: receive, stability,
routing, pipeline, delivery to the configured destinations.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy.orm import Session

from core.config import Destination, Settings
from core.db.models import Series
from core.errors import TransientError
from core.routing import RoutingRule
from core.tls import client_context
from dicom_node.scu import associate
from scheduler.dispatch import series_facts

SELFTEST_CALLING_AE = "AINODE_SELFTEST"
SELFTEST_PATIENT_NAME = "SELFTEST^PHANTOM"


@dataclass(frozen=True)
class EchoResult:
    """A C-ECHO's outcome: ok, what was seen, how long it took."""

    ok: bool
    detail: str
    seconds: float


def echo(destination: Destination, settings: Settings) -> EchoResult:
    """Send a C-ECHO from the node's AE title to ``destination``, as a delivery would connect."""
    start = time.perf_counter()
    try:
        assoc = associate(
            destination,
            [build_context(Verification)],
            calling_ae=settings.ae_title,
            timeout=settings.acse_timeout_seconds,  # a person waits for the answer
            tls=client_context(settings) if destination.tls else None,
            refused="C-ECHO association",
        )
    except TransientError:
        return EchoResult(False, "association refused or peer unreachable", _since(start))
    try:
        status = assoc.send_c_echo()
        code = getattr(status, "Status", None)
        if code == 0x0000:
            return EchoResult(True, "C-ECHO success (0x0000)", _since(start))
        shown = f"0x{code:04X}" if code is not None else "no response"
        return EchoResult(False, f"C-ECHO answered {shown}", _since(start))
    finally:
        if assoc.is_established:
            assoc.release()


def _since(start: float) -> float:
    return time.perf_counter() - start


@dataclass(frozen=True)
class RuleVerdict:
    """One routing rule's verdict on a series: matched, or the reasons it did not."""

    rule: RoutingRule
    matched: bool
    reasons: list[str]
    chosen: bool


def rule_verdicts(rules: list[RoutingRule], series: Series) -> list[RuleVerdict]:
    """Every rule's verdict on ``series``, and which rules routing would choose."""
    facts = series_facts(series)
    chosen_pipelines: set[str] = set()
    verdicts = []
    for rule in rules:
        reasons = rule.mismatches(facts)
        chosen = not reasons and rule.pipeline not in chosen_pipelines
        if chosen:
            chosen_pipelines.add(rule.pipeline)
        elif not reasons:
            reasons = [f"an earlier rule already sends this series to {rule.pipeline}"]
        verdicts.append(RuleVerdict(rule, not reasons or chosen, reasons, chosen))
    return verdicts


def series_by_id(session: Session, series_id: int) -> Series | None:
    """The received series with this id."""
    return session.get(Series, series_id)


@dataclass(frozen=True)
class SelfTest:
    """What the self-test sent: the phantom's study UID, files stored, and when."""

    study_instance_uid: str
    sent: int
    failed: int
    started: float


def self_test(settings: Settings) -> SelfTest:
    """Generate a small CT phantom and C-STORE it to the node's own SCP."""
    from dicom_node.scu import store_files
    from pipelines.phantom import generate_ct_phantom, write_phantom

    study = generate_ct_phantom(
        slices=40,
        rows=96,
        columns=96,
        pixel_spacing=4.0,
        slice_thickness=5.0,
        seed=int(time.time()),
        patient_name=SELFTEST_PATIENT_NAME,
        patient_id="SELFTEST",
    )
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "", "::") else settings.host
    own = Destination(ae_title=settings.ae_title, host=host, port=settings.port)
    started = time.time()
    with tempfile.TemporaryDirectory(dir=settings.spool_path) as folder:
        files = write_phantom(study, Path(folder))
        tls = client_context(settings) if settings.tls_enabled else None
        outcomes = store_files(own, files, calling_ae=SELFTEST_CALLING_AE, tls=tls)
    failed = sum(1 for outcome in outcomes if not outcome.ok)
    return SelfTest(study.study_instance_uid, len(outcomes) - failed, failed, started)
