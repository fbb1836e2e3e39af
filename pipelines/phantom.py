"""Synthetic CT chest phantom: DICOM CT slices plus the ground-truth label map.

The anatomy is defined analytically in patient coordinates (LPS, mm) and
sampled at the voxel centres of the requested grid, so any slice orientation
can be produced and the labels always match the geometry of the DICOM
objects.  ``labels`` is indexed ``(slice, row, column)`` exactly like
``highdicom.get_volume_from_series(datasets).array``: highdicom makes
``(slice, row, column)`` a right-handed system, so slices are ordered along
``column direction x row direction`` (for the default axial orientation:
head to feet, i.e. *decreasing* patient z), whatever the order of the files.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import get_encoder
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from scipy import ndimage

__all__ = ["LABELS", "PhantomStudy", "generate_ct_phantom", "write_phantom"]

LABELS: dict[int, str] = {1: "body", 2: "left lung", 3: "right lung", 4: "spine", 5: "liver"}

#: Mean attenuation (HU) per label; index 0 is the surrounding air.
_HU = np.array([-1000.0, 40.0, -850.0, -850.0, 400.0, 60.0], dtype=np.float32)
_NOISE_HU = 15.0
_RESCALE_INTERCEPT = -1024
#: Patient position (mm) of the centre of the scanned range.
_CENTRE = np.array([0.0, 0.0, -150.0])
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass
class PhantomStudy:
    """A synthetic CT series and its ground truth.

    Attributes
    ----------
    datasets:
        One CT Image Storage instance per slice, with pixel data.
    labels:
        ``uint8`` label map (values of :data:`LABELS`, 0 = air), shape
        ``(slices, rows, columns)``, indexed like the array of
        ``highdicom.get_volume_from_series(datasets)``.
    study_instance_uid, series_instance_uid:
        UIDs shared by all ``datasets``.
    """

    datasets: list[pydicom.Dataset]
    labels: np.ndarray
    study_instance_uid: str
    series_instance_uid: str


def _ellipsoid(points: np.ndarray, centre: Sequence[float], axes: Sequence[float]) -> np.ndarray:
    """Boolean mask of the points (``(..., 3)``, mm) inside an axis-aligned ellipsoid."""
    d = (points - np.asarray(centre, np.float32)) / np.asarray(axes, np.float32)
    return np.einsum("...i,...i->...", d, d) <= 1.0


@dataclass(frozen=True)
class _Anatomy:
    """Seeded variations of the phantom anatomy (mm, LPS, z relative to the centre)."""

    scale: np.ndarray  # body, right lung z, left lung z, spine radius
    shift: np.ndarray  # x, y of the lungs, liver and spine
    vessels: np.ndarray  # (n, 2) x, y of vessel axes

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Anatomy:
        scale = rng.uniform(0.95, 1.05, size=4)
        shift = rng.uniform(-4.0, 4.0, size=2)
        sides = np.repeat([-1.0, 1.0], 3)
        vessels = np.stack(
            [sides * rng.uniform(45.0, 85.0, 6), rng.uniform(-20.0, 30.0, 6)], axis=1
        )
        return cls(scale=scale, shift=shift, vessels=vessels)

    def paint(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and the vessel mask at ``points`` (``(..., 3)`` mm)."""
        scale, (dx, dy) = self.scale, self.shift
        labels = np.zeros(points.shape[:-1], np.uint8)
        x, y = points[..., 0], points[..., 1]
        labels[(x / (140 * scale[0])) ** 2 + (y / (95 * scale[0])) ** 2 <= 1.0] = 1
        labels[_ellipsoid(points, (-45 + dx, 0, -55), (75, 70, 40)) & (labels == 1)] = 5
        labels[_ellipsoid(points, (-65 + dx, 5 + dy, 5), (45, 60, 65 * scale[1]))] = 3
        labels[_ellipsoid(points, (65 + dx, 5 + dy, 5), (42, 57, 60 * scale[2]))] = 2
        labels[(x - dx) ** 2 + (y - 70) ** 2 <= (18 * scale[3]) ** 2] = 4
        vessels = np.zeros(labels.shape, bool)
        for vx, vy in self.vessels:
            vessels |= (x - vx) ** 2 + (y - vy) ** 2 <= 3.0**2
        vessels &= (labels == 2) | (labels == 3)
        return labels, vessels


def _uid(entropy: Sequence[str], name: str) -> UID:
    """The UID ``name`` of the phantom whose parameters are ``entropy`` (same inputs, same UID)."""
    return generate_uid(entropy_srcs=[*entropy, name])


def _encodable_syntax(transfer_syntax_uid: str) -> UID:
    """``transfer_syntax_uid`` as a UID, checked to be one the slices can be written in.

    Raises
    ------
    ValueError
        For a syntax that is neither uncompressed little endian nor one that
        pydicom has an available encoder for.
    """
    syntax = UID(transfer_syntax_uid)
    if syntax in _UNCOMPRESSED:
        return syntax
    try:
        available = syntax.is_compressed and get_encoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise ValueError(f"cannot encode pixel data with transfer syntax {syntax!r}")
    return syntax


@dataclass(frozen=True)
class _Grid:
    """The voxel grid in patient space (LPS, mm), centred on the scanned range.

    ``steps`` holds one step along each array axis ``(slice, row, column)``
    (highdicom's right-handed order) and ``origin`` the centre of voxel 0.
    """

    shape: tuple[int, int, int]
    row_dir: np.ndarray
    col_dir: np.ndarray
    steps: np.ndarray
    origin: np.ndarray

    @classmethod
    def centred(
        cls,
        shape: tuple[int, int, int],
        pixel_spacing: float,
        slice_thickness: float,
        image_orientation: Sequence[float],
    ) -> _Grid:
        """The grid of ``shape`` with the given spacings and orientation around :data:`_CENTRE`.

        Raises
        ------
        ValueError
            If ``image_orientation`` is not two orthonormal direction cosines.
        """
        row_dir = np.asarray(image_orientation[:3], np.float64)
        col_dir = np.asarray(image_orientation[3:], np.float64)
        if not (
            np.isclose(row_dir @ row_dir, 1, atol=1e-4)
            and np.isclose(col_dir @ col_dir, 1, atol=1e-4)
            and abs(row_dir @ col_dir) < 1e-4
        ):
            raise ValueError("image_orientation must be two orthonormal direction cosines")
        normal = np.cross(col_dir, row_dir)  # highdicom's slice axis: (slice, down, right)
        steps = np.stack(
            [normal * slice_thickness, col_dir * pixel_spacing, row_dir * pixel_spacing]
        )
        origin = _CENTRE - (np.array(shape, np.float64) - 1) / 2 @ steps
        return cls(shape=shape, row_dir=row_dir, col_dir=col_dir, steps=steps, origin=origin)

    def position(self, k: int) -> np.ndarray:
        """Patient position (mm) of the first voxel of slice ``k``."""
        return self.origin + k * self.steps[0]


def _render(
    grid: _Grid, anatomy: _Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The label map and the stored pixel values (12-bit ``uint16``) of every slice.

    Each voxel takes its label's mean HU (vessels in the lungs enhance), the
    volume is slightly blurred like a reconstruction kernel, then noise from
    ``rng`` is added and the HU are stored with :data:`_RESCALE_INTERCEPT`.
    """
    slices, rows, columns = grid.shape
    steps = grid.steps
    r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
    plane = (r[..., None] * steps[1] + c[..., None] * steps[2] + grid.origin - _CENTRE).astype(
        np.float32
    )
    labels = np.empty(grid.shape, np.uint8)
    hu = np.empty(grid.shape, np.float32)
    for k in range(slices):
        labels[k], vessels = anatomy.paint(plane + (k * steps[0]).astype(np.float32))
        hu[k] = _HU[labels[k]]
        hu[k][vessels] = 40.0
    hu = ndimage.gaussian_filter(hu, sigma=0.6)
    hu += _NOISE_HU * rng.standard_normal(size=grid.shape, dtype=np.float32)
    stored = np.clip(np.rint(hu) - _RESCALE_INTERCEPT, 0, 4095).astype(np.uint16)
    return labels, stored


@dataclass(frozen=True)
class _PhantomUids:
    """The phantom's UIDs, derived from its parameters so the same call gives the same UIDs."""

    entropy: tuple[str, ...]
    study: str
    series: str
    frame_of_reference: str

    @classmethod
    def derive(
        cls,
        parameters: Sequence[object],
        image_orientation: Sequence[float],
        study_instance_uid: str | None,
    ) -> _PhantomUids:
        """UIDs from ``parameters`` and the orientation; the study UID is the given one if any."""
        entropy = [str(v) for v in parameters] + [f"{v:.6f}" for v in image_orientation]
        study = study_instance_uid or _uid(entropy, "study")
        entropy.append(study)
        return cls(
            entropy=tuple(entropy),
            study=study,
            series=_uid(entropy, "series"),
            frame_of_reference=_uid(entropy, "frame-of-reference"),
        )

    def instance(self, k: int) -> UID:
        """SOP Instance UID of slice ``k``."""
        return _uid(self.entropy, f"instance-{k}")


def _base_dataset(
    *,
    patient_name: str,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    accession: str,
    image_orientation: Sequence[float],
    pixel_spacing: float,
    slice_thickness: float,
    matrix: tuple[int, int],
) -> pydicom.Dataset:
    """Attributes shared by every slice (patient, study, series, equipment, plane, pixel)."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20250101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic chest CT"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDescription = "Chest phantom"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "pacs-ai-node"
    ds.ManufacturerModelName = "Synthetic CT phantom"
    ds.AcquisitionNumber = 1
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = _RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    ds.ImageOrientationPatient = [float(f"{v:.6f}") for v in image_orientation]
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.SliceThickness = slice_thickness
    ds.Rows, ds.Columns = matrix
    return ds


def _slice_dataset(
    base: pydicom.Dataset,
    grid: _Grid,
    k: int,
    pixels: np.ndarray,
    sop_instance_uid: str,
    syntax: UID,
) -> pydicom.Dataset:
    """Slice ``k``: a copy of ``base`` with its position, pixels and file meta, in ``syntax``."""
    ds = copy.deepcopy(base)
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceNumber = k + 1
    position = grid.position(k)
    ds.ImagePositionPatient = [round(float(v), 4) for v in position]
    ds.SliceLocation = round(float(position @ np.cross(grid.row_dir, grid.col_dir)), 4)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if syntax in _UNCOMPRESSED:
        ds.file_meta.TransferSyntaxUID = syntax
    else:
        ds.compress(syntax, generate_instance_uid=False)  # the UIDs stay those of the seed
    return ds


def generate_ct_phantom(
    *,
    slices: int = 64,
    rows: int = 128,
    columns: int = 128,
    pixel_spacing: float = 2.5,
    slice_thickness: float = 2.5,
    seed: int = 0,
    patient_name: str = "PHANTOM^CT",
    patient_id: str = "PH0001",
    study_instance_uid: str | None = None,
    transfer_syntax_uid: str = ExplicitVRLittleEndian,
    shuffle: bool = False,
    image_orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
) -> PhantomStudy:
    """Generate a synthetic chest CT series with ground-truth labels.

    Parameters
    ----------
    slices, rows, columns:
        Grid size; the grid is centred on the patient's midline.
    pixel_spacing, slice_thickness:
        In-plane spacing and slice spacing (contiguous slices), mm.
    seed:
        Seeds the noise, small anatomical variations and, unless
        ``study_instance_uid`` is given, all UIDs: same arguments, same output.
    patient_name, patient_id, study_instance_uid:
        Identifiers written into every instance.
    transfer_syntax_uid:
        Explicit or implicit VR little endian, or a compressed syntax pydicom
        can encode (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless).
    shuffle:
        Return the datasets in random (seeded) order to exercise sorting.
    image_orientation:
        ``ImageOrientationPatient`` of every slice (default axial); any
        orthonormal pair is accepted.  Instance numbers follow the volume's
        slice axis (head to feet for the default).

    Returns
    -------
    PhantomStudy
        Datasets in instance-number order (unless shuffled) and labels.

    Raises
    ------
    ValueError
        For an unsupported transfer syntax or a non-orthonormal orientation.
    """
    syntax = _encodable_syntax(transfer_syntax_uid)
    grid = _Grid.centred((slices, rows, columns), pixel_spacing, slice_thickness, image_orientation)
    rng = np.random.default_rng(seed)
    labels, stored = _render(grid, _Anatomy.draw(rng), rng)
    parameters = (seed, patient_id, slices, rows, columns, pixel_spacing, slice_thickness)
    uids = _PhantomUids.derive(parameters, image_orientation, study_instance_uid)
    base = _base_dataset(
        patient_name=patient_name,
        patient_id=patient_id,
        study_uid=uids.study,
        series_uid=uids.series,
        frame_uid=uids.frame_of_reference,
        accession="PH" + hashlib.sha1(uids.study.encode()).hexdigest()[:10].upper(),
        image_orientation=image_orientation,
        pixel_spacing=pixel_spacing,
        slice_thickness=slice_thickness,
        matrix=(rows, columns),
    )
    datasets = [
        _slice_dataset(base, grid, k, stored[k], uids.instance(k), syntax) for k in range(slices)
    ]
    if shuffle:
        random.Random(seed).shuffle(datasets)
    return PhantomStudy(
        datasets=datasets,
        labels=labels,
        study_instance_uid=uids.study,
        series_instance_uid=uids.series,
    )


def write_phantom(study: PhantomStudy, directory: Path) -> list[Path]:
    """Write every instance of ``study`` as a DICOM Part 10 file.

    Parameters
    ----------
    study:
        The phantom to write.
    directory:
        Target folder, created if missing.

    Returns
    -------
    list of Path
        ``CT000001.dcm`` ... named after ``InstanceNumber``, in the order of
        ``study.datasets``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in study.datasets:
        path = directory / f"CT{int(ds.InstanceNumber):06d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
