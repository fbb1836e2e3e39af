"""dcmtk's storescu as a second real client: compressed and implicit-VR studies, a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from pipelines.phantom import generate_ct_phantom, write_phantom
from tests.support.dcmtk import StoreSCP, dcmcjpeg, dcmconv, storescu
from tests.support.node import NodeProcesses
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


def _study(folder: Path, seed: int) -> tuple[str, list[Path]]:
    study = generate_ct_phantom(
        slices=30, rows=96, columns=96, pixel_spacing=4.0, slice_thickness=5.0, seed=seed
    )
    return study.study_instance_uid, write_phantom(study, folder)


def _converted(files: list[Path], folder: Path, convert) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for path in files:
        target = folder / path.name
        convert(path, target)
        out.append(target)
    return out


def _without_series_uid(source: Path, target: Path) -> Path:
    dataset = dcmread(source)
    del dataset.SeriesInstanceUID
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.save_as(target)
    return target


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_storescu_compressed_and_implicit_studies_with_a_bad_file(
    tmp_path: Path, receiver_processes: int
) -> None:
    jpeg_uid, plain = _study(tmp_path / "a", seed=3)
    jpeg = _converted(plain, tmp_path / "a-jpeg", dcmcjpeg)
    implicit_uid, plain_b = _study(tmp_path / "b", seed=4)
    implicit = _converted(plain_b, tmp_path / "b-implicit", dcmconv)
    assert dcmread(jpeg[0]).file_meta.TransferSyntaxUID == JPEG_LOSSLESS_SV1
    assert dcmread(implicit[0]).file_meta.TransferSyntaxUID == IMPLICIT_VR_LITTLE_ENDIAN
    bad = _without_series_uid(plain_b[0], tmp_path / "bad.dcm")

    with StoreSCP(aet="RESULTS") as results, NodeProcesses(tmp_path) as node:
        node.env["AINODE_DESTINATIONS"] = f"RESULTS@127.0.0.1:{results.port}"
        node.env["AINODE_RECEIVER_PROCESSES"] = str(receiver_processes)
        node.start("run")
        node.wait_listening()

        compressed = storescu(
            "127.0.0.1", node.port, jpeg, called_ae="AINODE", extra_args=["--propose-lossless"]
        )
        assert compressed.failed == [] and len(compressed.succeeded) == len(jpeg)
        sent = storescu(
            "127.0.0.1",
            node.port,
            [*implicit[:15], bad, *implicit[15:]],
            called_ae="AINODE",
            extra_args=["-d"],
        )
        assert sent.status_of(bad) is not None and not sent.status_of(bad).ok
        assert sent.status_of(bad).status_code == 0xC001
        assert sent.failed == [str(bad)]
        assert len(sent.succeeded) == len(implicit)

        results.wait_for_files(4, timeout=120)
        status = wait_until(
            lambda: (
                len((s := node.status())["jobs"]) == 2
                and all(job["deliveries"] == "2 succeeded" for job in s["jobs"])
                and s
            ),
            timeout=60,
            message=lambda: str(node.status()),
        )
        assert {job["state"] for job in status["jobs"]} == {"succeeded"}
        assert {study["study_uid"] for study in status["studies"]} == {jpeg_uid, implicit_uid}
        counts = {study["study_uid"]: study["instances"] for study in status["studies"]}
        assert counts == {jpeg_uid: str(len(jpeg)), implicit_uid: str(len(implicit))}
        assert "missing SeriesInstanceUID" in node.logs()
        spooled = {path.name for path in (tmp_path / "var" / "incoming").rglob("*.dcm")}
        assert len(spooled) == len(jpeg) + len(implicit)
