"""MR-like multi-series studies for multi-series pipeline tests (phantom series relabelled MR)."""

from __future__ import annotations

from pydicom.uid import MRImageStorage

from pipelines.phantom import PhantomStudy, generate_ct_phantom

__all__ = ["BRAIN_SERIES", "mr_series"]

STUDY_UID = "1.2.826.0.1.3680043.8.498.4711"
FRAME_UID = "1.2.826.0.1.3680043.8.498.4712"

#: Role, SeriesDescription, seed, pixel spacing (mm), slices of a T1c + T2 + FLAIR study.
BRAIN_SERIES = (
    ("t1c", "T1 +C axial", 1, 1.5, 20),
    ("t2", "T2 TSE", 2, 2.0, 22),
    ("flair", "T2 FLAIR", 3, 1.5, 18),
)


def mr_series(
    description: str,
    seed: int,
    spacing: float,
    slices: int,
    *,
    study_uid: str = STUDY_UID,
    patient_id: str = "MR0001",
) -> PhantomStudy:
    """A phantom series relabelled as MR, in one study and frame of reference.

    The anatomy is the chest phantom's; only the header says MR, which is
    all routing and resampling look at.
    """
    study = generate_ct_phantom(
        slices=slices,
        rows=round(144 / spacing),
        columns=round(144 / spacing),
        pixel_spacing=spacing,
        slice_thickness=3.0,
        seed=seed,
        study_instance_uid=study_uid,
        patient_id=patient_id,
    )
    for ds in study.datasets:
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = FRAME_UID
    return study
