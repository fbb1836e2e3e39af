"""Every result kind through a real PACS: Orthanc → node → model pipelines → SR/SEG in Orthanc.

One embedded node (``ainode run``) with four routes: a DX radiograph goes
to ``cxr-classify`` (classification SR), a chest CT to ``ct-nodule-detect``
(detection SR) and to ``ct-organs-demo`` (the shipped demo UNet: SEG + SR),
and an MR study of three series to ``mr-brain-seg`` (multi-series: SEG +
SR).  The operator weights of cxr-classify, ct-nodule-detect and
mr-brain-seg are TEST FIXTURE TorchScript models written by the test
(:mod:`tests.support.model_fixtures`).
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pytest

from pipelines.phantom import generate_ct_phantom, write_phantom
from pipelines.registry import get_spec
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.model_fixtures import (
    BrightRegionDetectorFixture,
    ChannelArgmaxSegmenterFixture,
    MeanIntensityClassifierFixture,
    write_model_folder,
)
from tests.support.mr import BRAIN_SERIES, STUDY_UID, mr_series
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.radiograph import make_radiograph
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
RULES = [
    {"name": "cxr", "pipeline": "cxr-classify", "modality": ["DX", "CR"]},
    {"name": "nodules", "pipeline": "ct-nodule-detect", "modality": ["CT"], "min_instances": 3},
    {"name": "organs", "pipeline": "ct-organs-demo", "modality": ["CT"], "min_instances": 3},
    {"name": "brain", "pipeline": "mr-brain-seg", "modality": ["MR"]},
]


def _results(orthanc: OrthancServer, study_uid: str) -> list[dict]:
    return [
        item
        for item in orthanc.instances_of_study_uid(study_uid)
        if item["SOPClassUID"] in (SEG_CLASS, SR_CLASS)
    ]


def _report(path: Path) -> hd.sr.MeasurementReport:
    return hd.sr.MeasurementReport.from_sequence(hd.sr.srread(path).content)


def test_classification_detection_and_segmentation_come_back(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_model_folder(
        models / "cxr-classify", MeanIntensityClassifierFixture([0.1, 0.3, 0.9, 0.95])
    )
    write_model_folder(models / "ct-nodule-detect", BrightRegionDetectorFixture(level=0.95))
    write_model_folder(models / "mr-brain-seg", ChannelArgmaxSegmenterFixture())
    radiograph = make_radiograph(seed=11, patient_id="E2E-XR")
    radiograph.save_as(tmp_path / "dx.dcm", enforce_file_format=True)
    ct = generate_ct_phantom(
        slices=48, rows=112, columns=112, pixel_spacing=3.0, slice_thickness=3.0, seed=4242
    )
    ct_files = write_phantom(ct, tmp_path / "ct")
    mr_files = [
        path
        for role, *parameters in BRAIN_SERIES
        for path in write_phantom(mr_series(*parameters), tmp_path / role)
    ]

    node = NodeProcesses(
        tmp_path, {"AINODE_MODELS_DIR": str(models), "AINODE_ROUTING_RULES": json.dumps(RULES)}
    )
    with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc, node:
        node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        listing = node.cli("pipelines", check=False).stdout
        assert "cxr-classify 1.0.0 classification [gpu] sha256:" in listing
        node.start("run")
        node.wait_listening()
        for path in [tmp_path / "dx.dcm", *ct_files, *mr_files]:
            orthanc.upload(path)
        uids = (radiograph.StudyInstanceUID, ct.study_instance_uid, STUDY_UID)
        sent = orthanc.store_to_modality("ainode", [orthanc.find_study(uid) for uid in uids])
        assert sent["FailedInstancesCount"] == 0
        assert sent["InstancesCount"] == 1 + len(ct_files) + len(mr_files)

        expected = {radiograph.StudyInstanceUID: 1, ct.study_instance_uid: 3, STUDY_UID: 2}
        found = wait_until(
            lambda: (
                all(len(_results(orthanc, uid)) >= n for uid, n in expected.items())
                and {uid: _results(orthanc, uid) for uid in expected}
            ),
            timeout=180,
            message=lambda: node.logs()[-4000:],
        )
        status = wait_until(
            lambda: (
                (s := node.status())["jobs"]
                and len(s["jobs"]) == 4
                and all(job["deliveries"].endswith("succeeded") for job in s["jobs"])
                and s
            ),
            timeout=60,
            message=lambda: str(node.status()),
        )
        assert {job["state"] for job in status["jobs"]} == {"succeeded"}
        assert {job["device"] for job in status["jobs"]} == {"cpu"}
        assert all(len(job["weights"]) == 12 for job in status["jobs"])

        downloaded: dict[str, Path] = {}
        for uid, items in found.items():
            for item in items:
                path = tmp_path / f"{item['ID']}.dcm"
                path.write_bytes(orthanc.download(item["ID"]))
                assert dciodvfy_errors(path) == []
                downloaded[f"{uid}:{item['SOPClassUID']}:{item['ID']}"] = path

    xr_sr = [p for key, p in downloaded.items() if key.startswith(radiograph.StudyInstanceUID)]
    (classification,) = xr_sr
    groups = _report(classification).get_image_measurement_groups()
    assert [str(group.finding_type.meaning) for group in groups] == [
        "Pneumothorax",
        "Pleural effusion",
        "Lung consolidation",
        "Cardiomegaly",
    ]

    ct_srs = [
        hd.sr.srread(p)
        for key, p in downloaded.items()
        if key.startswith(f"{ct.study_instance_uid}:{SR_CLASS}")
    ]
    by_model = {sr.ManufacturerModelName: sr for sr in ct_srs}
    detection = hd.sr.MeasurementReport.from_sequence(by_model["ct-nodule-detect"].content)
    assert len(detection.get_planar_roi_measurement_groups()) >= 1
    organs = by_model["ct-organs-demo"]
    assert organs.SeriesDescription.startswith("DEMO MODEL AI SR ct-organs-demo")
    (seg_path,) = [
        p for key, p in downloaded.items() if key.startswith(f"{ct.study_instance_uid}:{SEG_CLASS}")
    ]
    seg = hd.seg.segread(seg_path)
    assert seg.number_of_segments == 5
    assert seg.SeriesDescription.startswith("DEMO MODEL")
    assert get_spec("ct-organs-demo").version in seg.SoftwareVersions[1]

    (brain_seg,) = [
        p for key, p in downloaded.items() if key.startswith(f"{STUDY_UID}:{SEG_CLASS}")
    ]
    assert hd.seg.segread(brain_seg).number_of_segments == 4
