"""A head CT routed on the default routes: no "lungs" reach the PACS, and the job says why.

The real head CT (BodyPartExamined BRAIN) goes through Orthanc to the node as
a PACS would send it, and once more with the tag removed and its own UIDs, as
real data often comes: the first is skipped on its tag, the second on its
content (a head is no chest-sized body).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.real_data import real_images
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

HEAD_CT = "ct-head-phantom-axial-5mm"
RESULT_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"}


def _untagged_copy(files: list[Path], folder: Path) -> list[Path]:
    """The series without Body Part Examined, under new UIDs (derived from the old ones)."""
    folder.mkdir()
    out = []
    for path in files:
        dataset = dcmread(path)
        del dataset.BodyPartExamined
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            new = generate_uid(entropy_srcs=["untagged", str(dataset.data_element(keyword).value)])
            setattr(dataset, keyword, new)
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        target = folder / path.name
        dataset.save_as(target, enforce_file_format=True)
        out.append(target)
    return out


def test_head_ct_yields_no_lungs_and_a_reason(tmp_path: Path) -> None:
    tagged = real_images(HEAD_CT)
    untagged = _untagged_copy(tagged, tmp_path / "untagged")
    studies = {str(dcmread(files[0]).StudyInstanceUID): files for files in (tagged, untagged)}
    node = NodeProcesses(tmp_path)
    with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc, node:
        node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        node.start("run")
        node.wait_listening()
        for study_uid, files in studies.items():
            for path in files:
                orthanc.upload(path)
            study_id = orthanc.find_study(study_uid)
            assert study_id is not None
            sent = orthanc.store_to_modality("ainode", [study_id])
            assert sent["FailedInstancesCount"] == 0 and sent["InstancesCount"] == len(files)

        status = wait_until(
            lambda: (
                len((s := node.status())["jobs"]) == 2
                and all(job["state"] == "skipped" for job in s["jobs"])
                and s
            ),
            timeout=120,
            message=lambda: f"{node.status()}\n{node.logs()[-4000:]}",
        )
        errors = sorted(job["error"] for job in status["jobs"])
        assert all(job["pipeline"].startswith("ct-lungs") for job in status["jobs"])
        assert errors[0].startswith("image content missing: no chest-sized body: the body is")
        assert errors[1].startswith("outside validated input domain: body part BRAIN not in")
        assert [job["deliveries"] for job in status["jobs"]] == ["-", "-"]
        for study_uid in studies:
            classes = {item["SOPClassUID"] for item in orthanc.instances_of_study_uid(study_uid)}
            assert classes.isdisjoint(RESULT_CLASSES), classes
