"""SEG type per destination with real peers: Orthanc takes LABELMAP, a dcmtk storescp BINARY.

Orthanc 1.10.1 (Debian) does not know Label Map Segmentation Storage
(1.2.840.10008.5.1.4.1.1.66.7): by default it rejects the presentation
context, so the node cannot even associate to send it; with
``UnknownSopClassAccepted: true`` it stores and returns the object intact.

Two pipelines run on one CT: ``fixture-tissue-bands`` (TEST FIXTURE network;
soft tissue and bone never overlap) gives Orthanc a LABELMAP SEG + SR and the
storescp a BINARY SEG + SR; ``ct-lungs`` (a body outline around the lungs,
which no label map can hold) gives both the BINARY pair.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import dcmread

from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dciodvfy import dciodvfy_errors, labelmap_dciodvfy_errors
from tests.support.dcmtk import StoreSCP
from tests.support.model_fixtures import write_tissue_bands_model
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.sr import referenced_segmentations
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

BINARY_SEG = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SEG = "1.2.840.10008.5.1.4.1.1.66.7"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
PATIENT_NAME = "LABELMAP^SECRET"


def _results(orthanc: OrthancServer, study_uid: str) -> dict[tuple[str, str], str]:
    """Orthanc id of each SEG/SR of the study by (SOP class, pipeline)."""
    return {
        (item["SOPClassUID"], item["Tags"]["ManufacturerModelName"]): item["ID"]
        for item in orthanc.instances_of_study_uid(study_uid)
        if item["SOPClassUID"] in (BINARY_SEG, LABELMAP_SEG, SR_CLASS)
    }


def _all_delivered(node: NodeProcesses) -> dict | None:
    status = node.status()
    jobs = status["jobs"]
    done = len(jobs) == 2 and all(job["deliveries"] == "4 succeeded" for job in jobs)
    return status if done else None


def test_labelmap_destination_gets_labelmap_and_binary_destination_binary(
    tmp_path: Path,
) -> None:
    bands = write_tissue_bands_model(tmp_path / "models")
    rules = [
        {"name": "bands", "pipeline": bands, "modality": ["CT"]},
        {"name": "lungs", "pipeline": "ct-lungs", "modality": ["CT"]},
    ]
    study = generate_ct_phantom(
        slices=24,
        rows=64,
        columns=64,
        pixel_spacing=6.0,
        slice_thickness=6.0,
        patient_name=PATIENT_NAME,
    )
    files = write_phantom(study, tmp_path / "ct")
    node = NodeProcesses(
        tmp_path,
        {"AINODE_MODELS_DIR": str(tmp_path / "models"), "AINODE_ROUTING_RULES": json.dumps(rules)},
    )
    orthanc = OrthancServer(
        {"ainode": ["AINODE", "127.0.0.1", node.port]},
        extra_config={"UnknownSopClassAccepted": True},
    )
    scp = StoreSCP(aet="BINARYSCP", output_dir=tmp_path / "storescp")
    with orthanc, scp, node:
        node.env["AINODE_DESTINATIONS"] = (
            f"ORTHANC@127.0.0.1:{orthanc.dicom_port}/labelmap,BINARYSCP@127.0.0.1:{scp.port}"
        )
        node.start("run")
        node.wait_listening()
        for path in files:
            orthanc.upload(path)
        study_id = orthanc.find_study(study.study_instance_uid)
        assert orthanc.store_to_modality("ainode", [study_id])["FailedInstancesCount"] == 0

        status = wait_until(
            lambda: _all_delivered(node),
            timeout=120,
            message=lambda: f"{node.status()}\n{node.logs()[-4000:]}",
        )
        assert {job["pipeline"].split()[0] for job in status["jobs"]} == {bands, "ct-lungs"}
        in_orthanc = _results(orthanc, study.study_instance_uid)
        assert set(in_orthanc) == {
            (LABELMAP_SEG, bands),
            (SR_CLASS, bands),
            (BINARY_SEG, "ct-lungs"),  # segments overlap: BINARY stands in for LABELMAP
            (SR_CLASS, "ct-lungs"),
        }
        received_files = scp.wait_for_files(4)
        received = [dcmread(path) for path in received_files]
        assert sorted((ds.SOPClassUID, ds.ManufacturerModelName) for ds in received) == sorted(
            [
                (BINARY_SEG, bands),
                (SR_CLASS, bands),
                (BINARY_SEG, "ct-lungs"),
                (SR_CLASS, "ct-lungs"),
            ]
        )

        downloaded = {}
        for key, orthanc_id in in_orthanc.items():
            downloaded[key] = tmp_path / f"{orthanc_id}.dcm"
            downloaded[key].write_bytes(orthanc.download(orthanc_id))

        # Replaying a job re-sends the same objects: Orthanc still holds one of each.
        bands_job = next(job["job"] for job in status["jobs"] if job["pipeline"].startswith(bands))
        node.cli("replay", bands_job)
        wait_until(lambda: _all_delivered(node), timeout=60, message=lambda: str(node.status()))
        assert _results(orthanc, study.study_instance_uid) == in_orthanc

        logs = node.logs()
        assert PATIENT_NAME not in logs and "SECRET" not in logs

    labelmap = hd.seg.segread(downloaded[LABELMAP_SEG, bands])
    assert labelmap.SegmentationType == "LABELMAP"
    assert labelmap.StudyInstanceUID == study.study_instance_uid
    assert [labelmap.get_segment_description(n).segment_label for n in (1, 2)] == [
        "Soft tissue",
        "Bone",
    ]
    assert labelmap_dciodvfy_errors(downloaded[LABELMAP_SEG, bands]) == []
    labelmap_sr = hd.sr.srread(downloaded[SR_CLASS, bands])
    assert referenced_segmentations(downloaded[SR_CLASS, bands]) == {
        (LABELMAP_SEG, labelmap.SOPInstanceUID)
    }
    assert labelmap_dciodvfy_errors(downloaded[SR_CLASS, bands]) == []
    assert hd.seg.segread(downloaded[BINARY_SEG, "ct-lungs"]).number_of_segments == 3
    for path in [downloaded[BINARY_SEG, "ct-lungs"], downloaded[SR_CLASS, "ct-lungs"]]:
        assert dciodvfy_errors(path) == []
    for path in received_files:
        assert dciodvfy_errors(path) == []
    labelmap_series = {labelmap.SeriesInstanceUID, labelmap_sr.SeriesInstanceUID}
    assert not labelmap_series & {ds.SeriesInstanceUID for ds in received}
