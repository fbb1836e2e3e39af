"""Fault 9: poison input, then a well-behaved sender.

Truncated datasets, wrong VRs, non-image SOP classes (Basic Text SR,
Encapsulated PDF), absurd dimensions (65535 x 65535 with a few KiB of pixel
data) and a bounded, seeded fuzz of ~200 connections of raw junk PDUs.  Each
poison instance is either refused with a failure status or accepted and then
fails its job with a reason (never a stuck job, never a dead process); the
non-image objects are stored and left unrouted.  Afterwards the node still
answers C-ECHO and processes a good study.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.support.dcmtk import StoreSCP, echoscu
from tests.support.faults import NodeDB, StartNode, alive, echo_ok, send_files, write_study
from tests.support.node import NodeProcesses
from tests.support.raw_dicom import Part10, RawAssociation, fuzz_connection, fuzz_payloads
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
FUZZ_SEED = 20261124
FUZZ_CONNECTIONS = 200
FUZZ_BUDGET_SECONDS = 60.0
FUZZ_RECOVERY_SECONDS = 30.0


def _is_failure(status: int | None) -> bool:
    """A DIMSE status that tells the sender the instance was not stored."""
    if status is None:
        return False
    return status in (0x0110, 0x0122, 0x0124) or (status & 0xF000) in (0xA000, 0xC000)


def _pixel_offset(dataset: bytes) -> int:
    offset = dataset.rfind(PIXEL_DATA_TAG)
    assert offset > 0
    return offset


def _header_truncated(item: Part10) -> bytes:
    # Cut in the middle of the header, after the study/series UIDs.
    return item.dataset[: int(_pixel_offset(item.dataset) * 0.8) | 1]


def _pixels_truncated(item: Part10) -> bytes:
    start = _pixel_offset(item.dataset)
    return item.dataset[: start + (len(item.dataset) - start) // 3]


def _wrong_vr(item: Part10) -> bytes:
    # Rows (0028,0010) US 2 -> DS with a text that is not a number.
    rows = b"\x28\x00\x10\x00US\x02\x00"
    at = item.dataset.find(rows)
    assert at > 0
    return item.dataset[:at] + b"\x28\x00\x10\x00DS\x04\x00abc " + item.dataset[at + 10 :]


def _huge(item: Part10) -> bytes:
    data = item.dataset
    for tag in (b"\x28\x00\x10\x00US\x02\x00", b"\x28\x00\x11\x00US\x02\x00"):
        at = data.find(tag)
        assert at > 0
        data = data[: at + 8] + b"\xff\xff" + data[at + 10 :]
    return data


def _non_image(folder: Path, sop_class: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.StudyDate, ds.StudyTime = "POISON^DOC", "P1", "", ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    if sop_class == ENCAPSULATED_PDF:
        ds.Modality, ds.MIMETypeOfEncapsulatedDocument = "DOC", "application/pdf"
        ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
        ds.DocumentTitle, ds.BurnedInAnnotation = "poison", "NO"
    else:
        ds.Modality, ds.ValueType, ds.CompletionFlag = "SR", "CONTAINER", "COMPLETE"
        ds.VerificationFlag, ds.ContinuityOfContent = "UNVERIFIED", "SEPARATE"
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _send_raw(port: int, sop_class: str, payloads: list[tuple[str, bytes]]) -> list[int | None]:
    statuses: list[int | None] = []
    with RawAssociation(port, abstract_syntaxes=(sop_class,)) as association:
        for sop_uid, data in payloads:
            try:
                statuses.append(association.c_store_bytes(sop_class, sop_uid, data))
            except (OSError, ConnectionError):
                statuses.append(None)
                break
    return statuses


def test_poison_input_is_refused_or_fails_cleanly_and_node_keeps_serving(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    with StoreSCP(aet="RESULTS") as results:
        node = make_node({"AINODE_DESTINATIONS": f"RESULTS@127.0.0.1:{results.port}"})
        serve, (worker,) = start_node(node)
        db = open_db(node)

        # Poison CT series: every instance of a 10-slice series is damaged the same way.
        poisoned: dict[str, list[int | None]] = {}
        for name, damage, seed in (
            ("header-truncated", _header_truncated, 91),
            ("pixels-truncated", _pixels_truncated, 92),
            ("wrong-vr", _wrong_vr, 93),
            ("huge", _huge, 94),
        ):
            study, files = write_study(tmp_path / name, seed=seed, slices=10)
            items = [Part10.read(path) for path in files]
            payloads = [(item.sop_instance, damage(item)) for item in items]
            statuses = _send_raw(node.port, items[0].sop_class, payloads)
            assert None not in statuses, f"{name}: association lost: {statuses}"
            poisoned[study.study_instance_uid] = statuses
            for status in statuses:
                assert status == 0x0000 or _is_failure(status), f"{name}: status {status:#06x}"
            assert alive(serve), f"{name} killed the SCP\n{node.logs()[-3000:]}"

        # Non-image objects: stored, never routed to a pipeline.
        documents = [
            _non_image(tmp_path, BASIC_TEXT_SR),
            _non_image(tmp_path, ENCAPSULATED_PDF),
        ]
        for path in documents:
            status = send_files(node.port, [path])
            assert status == [0x0000] or _is_failure(status[0]), status

        # A bounded fuzz of raw junk on the DICOM port.
        started = time.monotonic()
        for payload in fuzz_payloads(FUZZ_SEED, FUZZ_CONNECTIONS):
            fuzz_connection(node.port, payload)
            assert time.monotonic() - started < FUZZ_BUDGET_SECONDS, "fuzz loop over budget"
        assert alive(serve), f"fuzzing killed the SCP\n{node.logs()[-3000:]}"
        # Junk connections may hold association slots until the network timeout
        # (10 s here); a well-behaved sender must be served again after that.
        wait_until(
            lambda: echo_ok(node.port),
            timeout=FUZZ_RECOVERY_SECONDS,
            message=lambda: f"no C-ECHO after the fuzz\n{node.logs()[-3000:]}",
        )
        assert echoscu("127.0.0.1", node.port, "AINODE").returncode == 0

        # A well-behaved sender is still served and its study is processed.
        good, good_files = write_study(tmp_path / "good", seed=95)
        assert send_files(node.port, good_files) == [0x0000] * len(good_files)
        wait_until(
            lambda: any(
                j["study_uid"] == good.study_instance_uid and j["state"] == "succeeded"
                for j in db.jobs()
            ),
            timeout=90,
            message=lambda: f"{db.jobs()}\n{node.logs()[-4000:]}",
        )
        results.wait_for_files(2, timeout=60)

        # Every accepted poison series ended in a failed job with a reason; nothing hangs.
        for study_uid, statuses in poisoned.items():
            if 0x0000 not in statuses:
                continue
            jobs = wait_until(
                lambda uid=study_uid: (
                    (jobs := db.jobs_of(uid))
                    and all(j["state"] in ("succeeded", "failed") for j in jobs)
                    and jobs
                ),
                timeout=60,
                message=lambda uid=study_uid: f"{db.jobs_of(uid)}\n{node.logs()[-3000:]}",
            )
            for job in jobs:
                assert job["state"] == "failed" and job["error"], job
        for path in documents:
            uid = str(dcmread(path).StudyInstanceUID)
            study = db.study(uid)
            if study is not None:
                wait_until(lambda uid=uid: db.study(uid)["state"] != "receiving", timeout=30)
                assert db.jobs_of(uid) == [], f"a non-image object was routed: {db.jobs_of(uid)}"
                assert db.study(uid)["state"] == "unrouted"
        assert alive(serve) and alive(worker)
