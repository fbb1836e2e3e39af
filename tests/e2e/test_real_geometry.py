"""Real scanners' geometry end to end: a gantry-tilted head CT and a PA + lateral, via Orthanc.

Orthanc sends the Philips head phantom (tilt -18.5 degrees) and a two-view
DX series to the node; ``fixture-tissue-bands`` (TEST FIXTURE network)
segments the CT, ``cxr-classify`` (fixture weights) classifies the
radiographs.  What comes back to Orthanc is checked: SEG frames lying on
the tilted source slices, SR volumes from the true slice pitch, one SR
with a group per class and view, every object dciodvfy-clean.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from tests.support.dciodvfy import dciodvfy_errors
from tests.support.model_fixtures import (
    MeanIntensityClassifierFixture,
    write_model_folder,
    write_tissue_bands_model,
)
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.radiograph import two_view_series
from tests.support.real_data import real_images
from tests.support.sr import assert_frames_on_source_slices
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def _delivered(node: NodeProcesses) -> dict | None:
    status = node.status()
    jobs = status["jobs"]
    expected = {"fixture-tissue-bands": "2 succeeded", "cxr-classify": "1 succeeded"}
    done = len(jobs) == 2 and all(
        job["deliveries"] == expected[job["pipeline"].split()[0]] for job in jobs
    )
    return status if done else None


def _download(orthanc: OrthancServer, study_uid: str, folder: Path) -> dict[str, list[Path]]:
    """The node's results in Orthanc for one study, saved, by SOP class."""
    found: dict[str, list[Path]] = {}
    for item in orthanc.instances_of_study_uid(study_uid):
        if item["SOPClassUID"] in (SEG_CLASS, SR_CLASS):
            path = folder / f"{item['ID']}.dcm"
            path.write_bytes(orthanc.download(item["ID"]))
            found.setdefault(item["SOPClassUID"], []).append(path)
    return found


def test_tilted_head_ct_and_two_views_through_orthanc(tmp_path: Path) -> None:
    ct_files = real_images("ct-head-phantom-gantry-tilt")
    ct = [pydicom.dcmread(path, stop_before_pixels=True) for path in ct_files]
    views = two_view_series()
    view_files = []
    for index, ds in enumerate(views):
        view_files.append(tmp_path / f"view{index}.dcm")
        ds.save_as(view_files[-1], enforce_file_format=True)
    models = tmp_path / "models"
    bands = write_tissue_bands_model(models)
    write_model_folder(
        models / "cxr-classify", MeanIntensityClassifierFixture([0.1, 0.3, 0.9, 0.95])
    )
    rules = [
        {"name": "bands", "pipeline": bands, "modality": ["CT"]},
        {"name": "chest", "pipeline": "cxr-classify", "modality": ["DX"]},
    ]
    node = NodeProcesses(
        tmp_path, {"AINODE_MODELS_DIR": str(models), "AINODE_ROUTING_RULES": json.dumps(rules)}
    )
    orthanc = OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]})
    with orthanc, node:
        node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        node.start("run")
        node.wait_listening()
        for path in [*ct_files, *view_files]:
            orthanc.upload(path)
        studies = [orthanc.find_study(ct[0].StudyInstanceUID)]
        studies.append(orthanc.find_study(views[0].StudyInstanceUID))
        assert orthanc.store_to_modality("ainode", studies)["FailedInstancesCount"] == 0
        wait_until(
            lambda: _delivered(node),
            timeout=300,
            message=lambda: f"{node.status()}\n{node.logs()[-4000:]}",
        )
        ct_results = _download(orthanc, ct[0].StudyInstanceUID, tmp_path)
        view_results = _download(orthanc, views[0].StudyInstanceUID, tmp_path)

    (seg_path,) = ct_results[SEG_CLASS]
    (sr_path,) = ct_results[SR_CLASS]
    (view_sr_path,) = view_results[SR_CLASS]
    for path in (seg_path, sr_path, view_sr_path):
        assert dciodvfy_errors(path) == []

    seg = hd.seg.segread(seg_path)
    sources = assert_frames_on_source_slices(seg, ct)
    spacing = [float(v) for v in ct[0].PixelSpacing]
    pitch = 2.5 * np.cos(np.deg2rad(float(ct[0].GantryDetectorTilt)))
    pixels = seg.get_pixels_by_source_instance(sources, segment_numbers=[1, 2])
    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(sr_path).content)
    volumes = [
        float(group.get_measurements(name=codes.SCT.Volume)[0].value)
        for group in report.get_volumetric_roi_measurement_groups()
    ]
    expected = pixels.reshape(-1, 2).sum(axis=0) * spacing[0] * spacing[1] * pitch / 1000
    np.testing.assert_allclose(volumes, expected, rtol=1e-4)

    view_report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(view_sr_path).content)
    groups = view_report.get_image_measurement_groups()
    by_view = {ds.SOPInstanceUID: ds.ViewPosition for ds in views}
    assert sorted(by_view[g.source_images[0].referenced_sop_instance_uid] for g in groups) == (
        ["LL"] * 4 + ["PA"] * 4
    )
