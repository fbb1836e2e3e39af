"""Helpers for the fault-injection suite (``tests/faults``): data, the node's DB, processes.

Everything here talks to real processes over loopback: phantoms are written as
Part-10 files, sent with pynetdicom, and the node's database is read directly
(plain SQL, no ORM session shared with the node) so a test can look at the
source of truth while node processes are stopped or killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread

from .orthanc import OrthancServer
from .ports import LOOPBACK
from .processes import BackgroundProcess

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"

#: Small intervals so recovery happens within seconds (settings the node reads).
FAST_RECOVERY_ENV = {
    "AINODE_RECOVERY_INTERVAL_SECONDS": "1",
    "AINODE_JOB_HEARTBEAT_SECONDS": "0.5",
    "AINODE_JOB_STALE_SECONDS": "3",
    "AINODE_JOB_REQUEUE_SECONDS": "2",
    "AINODE_NETWORK_TIMEOUT_SECONDS": "10",
    "AINODE_DELIVERY_BACKOFF_SECONDS": "0.2",
    "AINODE_DELIVERY_BACKOFF_MAX_SECONDS": "1",
}


#: ``start_node(node, workers=1)`` of the fault suite: migrate, start, wait; (serve, workers).
StartNode = Callable[..., tuple[BackgroundProcess, list[BackgroundProcess]]]

#: Folder of the test-only ``sitecustomize`` that holds a worker inside its job.
HOOKS = Path(__file__).parent / "hooks"


def job_delay_env(seconds: float) -> dict[str, str]:
    """Environment that makes ``ainode worker`` sleep ``seconds`` inside each job.

    The delay is injected from outside the node, as the bench injects its
    timers: ``tests/support/hooks`` goes first on ``PYTHONPATH``.
    """
    path = os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "TEST_HOOK_JOB_DELAY_SECONDS": str(seconds)}


# ---------------------------------------------------------------------- data
def write_study(
    folder: Path,
    seed: int,
    slices: int = 30,
    rows: int = 96,
    columns: int = 96,
    **kwargs: Any,
) -> tuple[Any, list[Path]]:
    """A small phantom CT series on disk: ``(PhantomStudy, files in slice order)``."""
    from pipelines.phantom import generate_ct_phantom, write_phantom

    study = generate_ct_phantom(
        slices=slices,
        rows=rows,
        columns=columns,
        pixel_spacing=384.0 / max(rows, columns),
        slice_thickness=5.0,
        seed=seed,
        **kwargs,
    )
    return study, write_phantom(study, folder)


def sop_uid(path: Path) -> str:
    """The SOP Instance UID of a Part-10 file."""
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ---------------------------------------------------------------------- sending
def send_files(
    port: int,
    paths: Sequence[Path],
    called_ae: str = "AINODE",
    calling_ae: str = "FAULTSCU",
    timeout: float = 30.0,
) -> list[int | None]:
    """C-STORE ``paths`` over one pynetdicom association; one status per file.

    ``None`` for a file that got no response (association lost).  Raises
    ``ConnectionError`` when no association can be established.
    """
    from pynetdicom import AE
    from pynetdicom.presentation import build_context

    headers = [dcmread(path, stop_before_pixels=True) for path in paths]
    contexts = sorted({(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in headers})
    ae = AE(ae_title=calling_ae)
    ae.requested_contexts = [build_context(sop, [syntax]) for sop, syntax in contexts]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(LOOPBACK, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"no association with {called_ae}@{LOOPBACK}:{port}")
    statuses: list[int | None] = []
    try:
        for path in paths:
            if not assoc.is_established:
                statuses.append(None)
                continue
            try:
                response = assoc.send_c_store(path)
            except (RuntimeError, ValueError):
                statuses.append(None)
                continue
            status = getattr(response, "Status", None)
            statuses.append(int(status) if status is not None else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def echo_ok(port: int, called_ae: str = "AINODE") -> bool:
    """Whether the SCP answers C-ECHO with success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="FAULTECHO")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate(LOOPBACK, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return getattr(status, "Status", None) == 0x0000
    finally:
        if assoc.is_established:
            assoc.release()


# ---------------------------------------------------------------------- the node's DB
def sqlite_url(workdir: Path) -> str:
    """The embedded database URL of a :class:`NodeProcesses` in ``workdir``."""
    return f"sqlite:///{workdir / 'var' / 'ainode.db'}"


class NodeDB:
    """Plain-SQL read access to the node's database (no pooled connections kept)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.url = url
        self.engine = create_engine(url, poolclass=NullPool)

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Every row of a query as dicts."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql), params)]

    def scalar(self, sql: str, **params: Any) -> Any:
        """The first column of the first row."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def jobs(self) -> list[dict[str, Any]]:
        """Every job with its study UID, ordered by id."""
        return self.rows(
            "SELECT j.id, j.state, j.attempts, j.error, s.study_instance_uid AS study_uid "
            "FROM jobs j JOIN studies s ON s.id = j.study_id ORDER BY j.id"
        )

    def jobs_of(self, study_uid: str) -> list[dict[str, Any]]:
        """The jobs of one study."""
        return [job for job in self.jobs() if job["study_uid"] == study_uid]

    def job_events(self, job_id: int) -> list[dict[str, Any]]:
        """A job's history."""
        return self.rows(
            "SELECT state, message FROM job_events WHERE job_id = :job ORDER BY id", job=job_id
        )

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery with its result kind, job and study UID."""
        return self.rows(
            "SELECT d.id, d.state, d.attempts, d.last_status, d.last_error, d.destination, "
            "d.delivered_at, "
            "r.kind, r.job_id, s.study_instance_uid AS study_uid "
            "FROM deliveries d JOIN results r ON r.id = d.result_id "
            "JOIN jobs j ON j.id = r.job_id JOIN studies s ON s.id = j.study_id ORDER BY d.id"
        )

    def instance_count(self, study_uid: str | None = None) -> int:
        """Received instances (of one study, or all)."""
        if study_uid is None:
            return int(self.scalar("SELECT count(*) FROM instances") or 0)
        return int(
            self.scalar(
                "SELECT count(*) FROM instances i JOIN series se ON se.id = i.series_id "
                "JOIN studies s ON s.id = se.study_id WHERE s.study_instance_uid = :uid",
                uid=study_uid,
            )
            or 0
        )

    def instance_uids(self, study_uid: str) -> set[str]:
        """SOP Instance UIDs recorded for a study."""
        return {
            row["sop_instance_uid"]
            for row in self.rows(
                "SELECT i.sop_instance_uid FROM instances i JOIN series se ON se.id = i.series_id "
                "JOIN studies s ON s.id = se.study_id WHERE s.study_instance_uid = :uid",
                uid=study_uid,
            )
        }

    def study(self, study_uid: str) -> dict[str, Any] | None:
        """The study row, or None."""
        rows = self.rows(
            "SELECT id, state, routing_note FROM studies WHERE study_instance_uid = :uid",
            uid=study_uid,
        )
        return rows[0] if rows else None

    def error_texts(self) -> list[str]:
        """Every free-text error/note column the node writes."""
        texts: list[str] = []
        for sql in (
            "SELECT error AS t FROM jobs",
            "SELECT message AS t FROM job_events",
            "SELECT routing_note AS t FROM studies",
            "SELECT last_error AS t FROM deliveries",
        ):
            texts += [row["t"] for row in self.rows(sql) if row["t"]]
        return texts

    def dispose(self) -> None:
        """Release the engine."""
        self.engine.dispose()


def node_db(node: Any) -> NodeDB:
    """Direct read access to the database of a :class:`NodeProcesses`."""
    return NodeDB(node.env.get("AINODE_DATABASE_URL") or sqlite_url(node.workdir))


# ---------------------------------------------------------------------- spool
def spool_leftovers(spool: Path) -> list[Path]:
    """Half-written files: anything in ``<spool>/tmp`` and any ``*.partial`` in the spool."""
    leftovers = (
        [p for p in (spool / "tmp").rglob("*") if p.is_file()] if (spool / "tmp").exists() else []
    )
    leftovers += [p for p in spool.rglob("*.partial") if p.is_file()]
    return sorted(set(leftovers))


def spooled_instances(spool: Path) -> list[Path]:
    """Complete instance files under ``<spool>/incoming``."""
    incoming = spool / "incoming"
    return sorted(p for p in incoming.rglob("*.dcm") if p.is_file()) if incoming.exists() else []


# ---------------------------------------------------------------------- processes
def kill_hard(process: BackgroundProcess) -> None:
    """SIGKILL a node process's whole group (no clean-up runs) and reap it."""
    assert process.proc is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.proc.pid, signal.SIGKILL)
    process.proc.wait(timeout=30)


def alive(process: BackgroundProcess) -> bool:
    """Whether a started process is still running."""
    return process.proc is not None and process.proc.poll() is None


def open_fds(pid: int) -> int:
    """Number of open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def thread_count(pid: int) -> int:
    """Number of threads of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/task"))


# ---------------------------------------------------------------------- destinations
def result_objects(orthanc: OrthancServer, study_uid: str) -> list[dict[str, Any]]:
    """SEG and SR instances Orthanc holds for a study."""
    return [
        item
        for item in orthanc.instances_of_study_uid(study_uid)
        if item["SOPClassUID"] in (SEG_CLASS, SR_CLASS)
    ]


def result_classes(orthanc: OrthancServer, study_uid: str) -> list[str]:
    """Sorted SOP classes of the results Orthanc holds for a study."""
    return sorted(item["SOPClassUID"] for item in result_objects(orthanc, study_uid))


def cli_json(node: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ainode ARGS`` without failing the test on a non-zero exit (caller checks)."""
    return node.cli(*args, check=False)
