"""Self-test of the peer harness: Orthanc, dcmtk storescu/storescp, Redis, PostgreSQL.

Flow: storescu -> Orthanc (checked over REST) -> Orthanc C-STORE -> storescp
(checked on disk). Every server is started on free loopback ports and stopped by
PID in fixture teardown.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pydicom
import pytest
import redis
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.support.dcmtk import StoreSCP, echoscu, storescu
from tests.support.orthanc import OrthancServer
from tests.support.services import ensure_postgres, ensure_redis, fresh_postgres_database

pytestmark = pytest.mark.e2e

ORTHANC_AET = "ORTHANC"
SCP_AET = "PEERSCP"


def _write_ct_series(directory: Path, slices: int = 2, size: int = 16) -> tuple[str, list[Path]]:
    """Write a tiny, valid axial CT series; return its StudyInstanceUID and files."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    paths = []
    for index in range(slices):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_uid, ""
        ds.PatientName, ds.PatientID = "Harness^Peer", "HARNESS1"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "", "1", ""
        ds.Modality, ds.Manufacturer = "CT", "pacs-ai-node tests"
        ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, float(index) * 2.5]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 2.5
        ds.KVP = 120
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        pixels = np.full((size, size), 1024, dtype=np.uint16)
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1024 + 40 + index
        ds.PixelData = pixels.tobytes()
        path = directory / f"ct{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study_uid, paths


@pytest.fixture(scope="module")
def storescp() -> Iterator[StoreSCP]:
    """A dcmtk storescp on a free port, stopped by PID afterwards."""
    with StoreSCP(aet=SCP_AET) as scp:
        yield scp


@pytest.fixture(scope="module")
def orthanc(storescp: StoreSCP) -> Iterator[OrthancServer]:
    """A private Orthanc that knows the storescp as modality ``peerscp``."""
    with OrthancServer({"peerscp": storescp.modality}, aet=ORTHANC_AET) as server:
        yield server


@pytest.fixture
def ct_series(tmp_path: Path) -> tuple[str, list[Path]]:
    """A two-slice CT series on disk."""
    return _write_ct_series(tmp_path / "ct")


def test_storescu_into_orthanc_then_orthanc_to_storescp(
    orthanc: OrthancServer, storescp: StoreSCP, ct_series: tuple[str, list[Path]]
) -> None:
    study_uid, files = ct_series
    assert echoscu(orthanc.host, orthanc.dicom_port, ORTHANC_AET).returncode == 0

    sent = storescu(orthanc.host, orthanc.dicom_port, files, called_ae=ORTHANC_AET)
    assert sent.returncode == 0, sent.stderr
    assert sent.failed == [], sent.stderr
    assert sorted(sent.succeeded) == sorted(str(f) for f in files)

    instances = orthanc.instances_of_study_uid(study_uid)
    expected_sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert {i["SOPInstanceUID"] for i in instances} == expected_sops
    assert {i["SOPClassUID"] for i in instances} == {CTImageStorage}
    assert {i["Modality"] for i in instances} == {"CT"}
    downloaded = pydicom.dcmread(io.BytesIO(orthanc.download(instances[0]["ID"])))
    assert downloaded.SOPInstanceUID == instances[0]["SOPInstanceUID"]
    assert orthanc.statistics()["CountInstances"] >= len(files)

    assert orthanc.echo("peerscp")
    study_id = orthanc.find_study(study_uid)
    assert study_id is not None
    answer = orthanc.store_to_modality("peerscp", [study_id])
    assert answer["FailedInstancesCount"] == 0
    assert answer["InstancesCount"] == len(files)

    received = storescp.wait_for_files(len(files), timeout=10)
    received_sops = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in received}
    assert expected_sops <= received_sops


def test_storescu_reports_each_failed_file_and_keeps_going(
    orthanc: OrthancServer, ct_series: tuple[str, list[Path]], tmp_path: Path
) -> None:
    study_uid, files = ct_series
    not_dicom = tmp_path / "not-dicom.dcm"
    not_dicom.write_text("not a DICOM file")
    missing = tmp_path / "missing.dcm"

    sent = storescu(
        orthanc.host,
        orthanc.dicom_port,
        [files[0], not_dicom, missing, files[1]],
        called_ae=ORTHANC_AET,
    )

    assert sorted(sent.succeeded) == sorted(str(f) for f in files), sent.stderr
    assert set(sent.failed) == {str(not_dicom), str(missing)}
    bad = sent.status_of(not_dicom)
    assert bad is not None and bad.status is None and bad.errors
    assert len(orthanc.instances_of_study_uid(study_uid)) == len(files)


def test_orthanc_echo_to_unreachable_modality_is_false(orthanc: OrthancServer) -> None:
    orthanc.add_modality("nobody", "NOBODY", "127.0.0.1", 1)
    assert orthanc.echo("nobody", timeout=2) is False


def test_redis_answers() -> None:
    url = ensure_redis()
    client = redis.Redis.from_url(url)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_fresh_postgres_database_round_trip() -> None:
    ensure_postgres()
    url, drop = fresh_postgres_database("harness")
    name = url.rsplit("/", 1)[1]
    assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:5432/")
    conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        drop()  # terminates the open connection first
    finally:
        conn.close()
        drop()  # idempotent
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    assert row == (0,)
