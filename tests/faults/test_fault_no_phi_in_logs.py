"""Security: no patient data in any log line or error text, even when things go wrong.

One patient (known name, ID and accession number) has a good study, a broken
study (its job fails), an instance the SCP rejects (no Series Instance UID) and
a non-image object that no rule routes; one destination is unreachable (its
deliveries fail).  No log line of any node process and no error text in the
database (``jobs.error``, ``job_events.message``, ``studies.routing_note``,
``deliveries.last_error``) may contain the name, the ID or the accession.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dcmtk import StoreSCP
from tests.support.faults import NodeDB, StartNode, send_files
from tests.support.node import NodeProcesses
from tests.support.ports import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

PATIENT_NAME = "PHIFAULT^SECRETNAME"
PATIENT_ID = "PID-SECRET-90210"
ACCESSION = "ACC-SECRET-5555"
SECRETS = (PATIENT_NAME, PATIENT_ID, ACCESSION, "PHIFAULT", "SECRETNAME", "SECRET-")


def _patient_study(folder: Path, seed: int, slices: int = 30) -> tuple[str, list[Path]]:
    study = generate_ct_phantom(
        slices=slices,
        rows=96,
        columns=96,
        pixel_spacing=4.0,
        slice_thickness=5.0,
        seed=seed,
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
    )
    for dataset in study.datasets:
        dataset.AccessionNumber = ACCESSION
    return study.study_instance_uid, write_phantom(study, folder)


def _text_sr(folder: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, ACCESSION
    ds.Modality, ds.SeriesDescription = "SR", f"report for {PATIENT_NAME}"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    path = folder / "text-sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
def test_no_phi_in_logs_or_error_texts(
    log_level: str,
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    good_uid, good = _patient_study(tmp_path / "good", seed=101)
    broken_uid, broken = _patient_study(tmp_path / "broken", seed=102)
    broken = broken[:10] + broken[15:]
    rejected = dcmread(good[0])
    del rejected.SeriesInstanceUID
    rejected.SOPInstanceUID = rejected.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    rejected_path = tmp_path / "rejected.dcm"
    rejected.save_as(rejected_path, enforce_file_format=True)
    document = _text_sr(tmp_path)

    with StoreSCP(aet="RESULTS") as results:
        dead = f"DEAD@127.0.0.1:{free_port()}"
        node = make_node(
            {
                "AINODE_DESTINATIONS": f"RESULTS@127.0.0.1:{results.port},{dead}",
                "AINODE_DELIVERY_MAX_ATTEMPTS": "2",
                "AINODE_LOG_LEVEL": log_level,
            }
        )
        start_node(node)
        assert set(send_files(node.port, good)) == {0x0000}
        assert set(send_files(node.port, broken)) == {0x0000}
        assert send_files(node.port, [rejected_path]) == [0xC001]
        assert send_files(node.port, [document]) == [0x0000]

        db = open_db(node)
        wait_until(
            lambda: (
                len(jobs := db.jobs()) == 2
                and all(j["state"] in ("succeeded", "failed") for j in jobs)
                and len(d := db.deliveries()) == 4
                and all(x["state"] in ("succeeded", "failed") for x in d)
            ),
            timeout=90,
            message=lambda: f"{db.jobs()} {db.deliveries()}\n{node.logs()[-3000:]}",
        )
        by_study = {job["study_uid"]: job for job in db.jobs()}
        assert by_study[good_uid]["state"] == "succeeded"
        assert by_study[broken_uid]["state"] == "failed" and by_study[broken_uid]["error"]
        failed = [d for d in db.deliveries() if d["state"] == "failed"]
        assert len(failed) == 2 and all(d["last_error"] for d in failed)
        document_uid = str(dcmread(document).StudyInstanceUID)
        wait_until(lambda: (db.study(document_uid) or {}).get("routing_note"), timeout=30)
        results.wait_for_files(2, timeout=30)
        status_output = node.cli("status").stdout + node.cli("status", "--json").stdout

        texts = db.error_texts()
        assert texts, "no error texts were produced; the check would be empty"
        logs = node.logs()
        for secret in SECRETS:
            leaking = [line for line in logs.splitlines() if secret in line]
            assert leaking == [], f"{secret!r} in the logs: {leaking[:3]}"
            assert [t for t in texts if secret in t] == [], f"{secret!r} in the database texts"
            assert secret not in status_output, f"{secret!r} in ainode status"
