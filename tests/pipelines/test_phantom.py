"""The synthetic CT phantom: determinism, CT Image IOD, labels aligned with the volume."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    RLELossless,
)

from pipelines.phantom import LABELS, PhantomStudy, generate_ct_phantom, write_phantom

SMALL = {"slices": 6, "rows": 48, "columns": 48, "pixel_spacing": 7.0}


def _dciodvfy_errors(path: Path) -> list[str]:
    completed = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    lines = (completed.stdout + "\n" + completed.stderr).splitlines()
    return [line.strip() for line in lines if line.strip().startswith("Error")]


def _centroid_lps(volume: hd.Volume, mask: np.ndarray) -> np.ndarray:
    """Patient (LPS) coordinates of the centroid of ``mask``."""
    index = np.argwhere(mask).mean(axis=0)
    return (volume.affine @ np.append(index, 1.0))[:3]


def test_same_seed_same_study() -> None:
    first, second = generate_ct_phantom(**SMALL), generate_ct_phantom(**SMALL)
    assert first.study_instance_uid == second.study_instance_uid
    assert first.series_instance_uid == second.series_instance_uid
    np.testing.assert_array_equal(first.labels, second.labels)
    for a, b in zip(first.datasets, second.datasets, strict=True):
        assert a.SOPInstanceUID == b.SOPInstanceUID
        assert a.PixelData == b.PixelData


def test_other_seed_other_study() -> None:
    first, other = generate_ct_phantom(**SMALL), generate_ct_phantom(**SMALL, seed=1)
    assert first.study_instance_uid != other.study_instance_uid
    assert first.datasets[0].SOPInstanceUID != other.datasets[0].SOPInstanceUID
    assert first.datasets[0].PixelData != other.datasets[0].PixelData


def test_given_study_uid_and_patient() -> None:
    study = generate_ct_phantom(
        **SMALL, study_instance_uid="1.2.3.4", patient_name="DOE^JANE", patient_id="X9"
    )
    assert study.study_instance_uid == "1.2.3.4"
    for ds in study.datasets:
        assert ds.StudyInstanceUID == "1.2.3.4"
        assert ds.SeriesInstanceUID == study.series_instance_uid
        assert (ds.PatientName, ds.PatientID) == ("DOE^JANE", "X9")


def test_ct_image_attributes(phantom: PhantomStudy) -> None:
    datasets = phantom.datasets
    assert len(datasets) == 64
    assert len({ds.SOPInstanceUID for ds in datasets}) == 64
    assert sorted(int(ds.InstanceNumber) for ds in datasets) == list(range(1, 65))
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    ds = datasets[0]
    assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == "CT"
    assert ds.BodyPartExamined == "CHEST"
    assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in ds.PixelSpacing] == [2.5, 2.5]
    assert float(ds.SliceThickness) == 2.5
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (128, 128, 16)
    assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024, 1)
    assert ds.pixel_array.dtype == np.uint16
    assert ds.pixel_array.shape == (128, 128)


def test_shuffle_reorders_the_same_instances() -> None:
    ordered = generate_ct_phantom(**SMALL).datasets
    shuffled = generate_ct_phantom(**SMALL, shuffle=True).datasets
    assert [ds.InstanceNumber for ds in ordered] == list(range(1, 7))
    assert [ds.InstanceNumber for ds in shuffled] != list(range(1, 7))
    assert {ds.SOPInstanceUID for ds in ordered} == {ds.SOPInstanceUID for ds in shuffled}


def test_labels_and_intensities(phantom: PhantomStudy) -> None:
    labels = phantom.labels
    assert labels.dtype == np.uint8
    assert labels.shape == (64, 128, 128)
    assert set(np.unique(labels)) == {0, *LABELS}
    volume = hd.get_volume_from_series(phantom.datasets)
    means = {value: volume.array[labels == value].mean() for value in (0, *LABELS)}
    assert means[0] < -950
    assert -50 < means[1] < 100
    assert -900 < means[2] < -750 and -900 < means[3] < -750
    assert means[4] > 250
    assert 0 < means[5] < 120


@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (1, 0, 0, 0, -1, 0), (-1, 0, 0, 0, 1, 0), (0.8, 0.6, 0, -0.6, 0.8, 0)],
    ids=["axial", "feet-first-axis", "mirrored-x", "rotated"],
)
def test_labels_follow_patient_anatomy(phantom_factory, orientation) -> None:
    study, data = phantom_factory(image_orientation=orientation)
    reference = hd.get_volume_from_series(study.datasets)
    np.testing.assert_allclose(reference.affine, data.volume.affine)
    labels = study.labels
    body = _centroid_lps(reference, labels > 0)
    left = _centroid_lps(reference, labels == 2)
    right = _centroid_lps(reference, labels == 3)
    liver = _centroid_lps(reference, labels == 5)
    spine = _centroid_lps(reference, labels == 4)
    assert left[0] > body[0] + 40 > body[0] - 40 > right[0]  # LPS: patient left is +x
    assert liver[2] < right[2] - 30  # below the right lung
    assert liver[0] < body[0]  # on the patient's right
    assert spine[1] > body[1] + 40  # posterior is +y
    assert reference.array[labels == 2].mean() < -700


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_written_files_pass_dciodvfy(tmp_path: Path, syntax: str) -> None:
    study = generate_ct_phantom(**SMALL, transfer_syntax_uid=syntax)
    paths = write_phantom(study, tmp_path / "out")
    assert [p.name for p in paths] == [f"CT{i:06d}.dcm" for i in range(1, 7)]
    for path in (paths[0], paths[-1]):
        assert _dciodvfy_errors(path) == []
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPInstanceUID == study.datasets[0].SOPInstanceUID
    np.testing.assert_array_equal(ds.pixel_array, study.datasets[0].pixel_array)


def test_written_files_follow_dataset_order(phantom: PhantomStudy, phantom_files) -> None:
    assert len(phantom_files) == 64
    for ds, path in zip(phantom.datasets[:3], phantom_files[:3], strict=True):
        assert path.name == f"CT{int(ds.InstanceNumber):06d}.dcm"
        assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == ds.SOPInstanceUID


def test_rle_lossless_round_trip(tmp_path: Path) -> None:
    plain = generate_ct_phantom(**SMALL)
    rle = generate_ct_phantom(**SMALL, transfer_syntax_uid=RLELossless)
    path = write_phantom(rle, tmp_path)[0]
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(ds.pixel_array, plain.datasets[0].pixel_array)
    assert _dciodvfy_errors(path) == []


def test_a_compressed_phantom_keeps_the_uids_of_its_arguments() -> None:
    first, again = (generate_ct_phantom(**SMALL, transfer_syntax_uid=RLELossless) for _ in "ab")
    plain = generate_ct_phantom(**SMALL)
    uids = [[ds.SOPInstanceUID for ds in study.datasets] for study in (first, again, plain)]
    assert uids[0] == uids[1] == uids[2]


@pytest.mark.parametrize("syntax", [ExplicitVRBigEndian, JPEGLosslessSV1, "1.2.3"])
def test_unsupported_transfer_syntax(syntax: str) -> None:
    with pytest.raises(ValueError, match="transfer syntax"):
        generate_ct_phantom(**SMALL, transfer_syntax_uid=syntax)


def test_rejects_non_orthonormal_orientation() -> None:
    with pytest.raises(ValueError, match="orthonormal"):
        generate_ct_phantom(**SMALL, image_orientation=(1, 0, 0, 1, 0, 0))
