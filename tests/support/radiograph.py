"""A synthetic chest radiograph (DX, for presentation) for classification tests."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

__all__ = ["make_radiograph", "two_view_series"]


def make_radiograph(
    *,
    seed: int = 0,
    size: int = 256,
    brightness: float = 0.5,
    pixel_spacing: float = 0.3,
    patient_name: str = "RADIOGRAPH^TEST",
    patient_id: str = "RG0001",
) -> pydicom.Dataset:
    """One DX image: a bright ellipse (the chest) on a dark background, with noise.

    Parameters
    ----------
    seed:
        Seeds the noise and the UIDs.
    size:
        Rows and columns.
    brightness:
        Mean stored value of the chest as a fraction of 4095.
    pixel_spacing:
        ImagerPixelSpacing (mm).
    """
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[:size, :size]
    chest = ((rows - size / 2) / (0.4 * size)) ** 2 + ((columns - size / 2) / (0.35 * size)) ** 2
    image = np.where(chest <= 1.0, brightness * 4095, 200.0) + rng.normal(0, 20, (size, size))
    pixels = np.clip(image, 0, 4095).astype(np.uint16)

    def uid(name: str) -> str:
        return str(generate_uid(entropy_srcs=["radiograph", str(seed), patient_id, name]))

    ds = pydicom.Dataset()
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = uid("instance")
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.Modality = "DX"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "RG" + ds.StudyInstanceUID[-8:]
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "pacs-ai-node tests"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImagerPixelSpacing = [pixel_spacing, pixel_spacing]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def two_view_series() -> list[pydicom.Dataset]:
    """A PA (256 px) and a lateral (200 px) radiograph in one series, lateral sent first."""
    pa, lateral = make_radiograph(seed=11), make_radiograph(seed=12, size=200)
    for number, (ds, view) in enumerate(((pa, "PA"), (lateral, "LL")), 1):
        ds.StudyInstanceUID, ds.SeriesInstanceUID = pa.StudyInstanceUID, pa.SeriesInstanceUID
        ds.PatientName, ds.PatientID, ds.AccessionNumber = "", "RG0001", "RG1"
        ds.InstanceNumber, ds.ViewPosition = number, view
    return [lateral, pa]
