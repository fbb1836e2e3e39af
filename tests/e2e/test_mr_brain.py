"""``mr-brain`` end to end on a real T1 series: Orthanc → node → SEG + SR back in Orthanc.

A fresh node's default routes send an MR series to ``mr-brain``.  The SEG
and SR that come back are validated by dciodvfy; the SEG is read back and
compared voxel by voxel with the mask computed on the source images, and the
SR carries the brain volume in mL and the weights' SHA-256.  Skipped where
the real data or deepbet (``[brain]`` extra) are absent.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from pipelines.io import load_series
from pipelines.mr_brain.pipeline import MrBrainPipeline
from pipelines.mr_brain.weights import DEEPBET_WEIGHTS, deepbet_weights
from pipelines.outputs.agreement import dice, mask_on_source_images, seg_mask_on_source_images
from tests.support.dciodvfy import dciodvfy_errors
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.real_data import real_images
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
pytest.importorskip("deepbet", reason="deepbet comes with the [brain] extra")

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
CASE = "mr-t1-2d-sag-supine"


def test_real_t1_series_comes_back_with_a_brain_mask(tmp_path: Path) -> None:
    files = real_images(CASE)
    study_uid = pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    node = NodeProcesses(tmp_path)
    with OrthancServer({"ainode": ["AINODE", "127.0.0.1", node.port]}) as orthanc, node:
        node.env["AINODE_DESTINATIONS"] = f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"
        node.start("run")
        node.wait_listening()
        for path in files:
            orthanc.upload(path)
        sent = orthanc.store_to_modality("ainode", [orthanc.find_study(study_uid)])
        assert sent["FailedInstancesCount"] == 0

        def results() -> dict[str, dict] | None:
            jobs = node.status()["jobs"]
            assert not jobs or jobs[0]["state"] in ("queued", "running", "succeeded"), jobs
            found = {
                item["SOPClassUID"]: item
                for item in orthanc.instances_of_study_uid(study_uid)
                if item["SOPClassUID"] in (SEG_CLASS, SR_CLASS)
            }
            return found if len(found) == 2 else None

        found = wait_until(results, timeout=240, interval=1.0, message=lambda: node.logs()[-4000:])
        (job,) = node.status()["jobs"]
        assert (job["pipeline"], job["state"]) == ("mr-brain 1.0.0", "succeeded")
        seg_path, sr_path = tmp_path / "seg.dcm", tmp_path / "sr.dcm"
        seg_path.write_bytes(orthanc.download(found[SEG_CLASS]["ID"]))
        sr_path.write_bytes(orthanc.download(found[SR_CLASS]["ID"]))

    assert dciodvfy_errors(seg_path) == []
    assert dciodvfy_errors(sr_path) == []
    data = load_series(files)
    (mask,) = MrBrainPipeline(deepbet_weights(), "cpu").run(data).masks
    seg = hd.seg.segread(seg_path)
    assert str(seg.SegmentSequence[0].SegmentLabel) == "Brain"
    on_source = seg_mask_on_source_images(seg, data.datasets, segment_number=1)
    assert dice(on_source, mask_on_source_images(data.volume, mask, data.datasets)) >= 0.99

    report = hd.sr.MeasurementReport.from_sequence(hd.sr.srread(sr_path).content)
    (group,) = report.get_volumetric_roi_measurement_groups()
    volumes = group.get_measurements(name=codes.SCT.Volume)
    (volume,) = [m for m in volumes if m.method is None]  # HD-BET's, where installed, has one
    assert 1000 <= float(volume.value) <= 1900
    seg_algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    for parameters in (_text_values(pydicom.dcmread(sr_path)), seg_algorithm.AlgorithmParameters):
        assert f"weights_sha256={DEEPBET_WEIGHTS['model.pt']}" in parameters
        assert "model=deepbet 1.0.2" in parameters


def _text_values(item: pydicom.Dataset) -> str:
    """Every TEXT value of an SR content tree, one per line."""
    values = [str(item.get("TextValue", ""))]
    values.extend(_text_values(child) for child in item.get("ContentSequence", []))
    return "\n".join(values)
