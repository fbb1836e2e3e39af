"""How a SEG read back matches the source images and another mask: frame by frame, voxel by voxel.

Used by the real-data tests and ``ainode evaluate``: a segmentation is only
right if every frame lies on the source image it names (same position and
orientation) and its pixels equal the mask computed on that image.  The
comparison is on the *source frames*, in the order the caller gives, so no
geometry of the pipeline is trusted to check itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset

__all__ = ["dice", "mask_on_source_images", "seg_mask_on_source_images"]

#: Positions and direction cosines agreeing to this count as equal (mm, unitless).
_TOLERANCE = 1e-3


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks of one shape (1.0 when both are empty)."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(a & b)) / total


def mask_on_source_images(
    volume: hd.Volume, mask: np.ndarray, datasets: Sequence[Dataset]
) -> np.ndarray:
    """``mask`` (volume axes) as ``(image, row, column)`` in the order of ``datasets``.

    Each image's slice is found from its ImagePositionPatient through the
    inverse of the volume's affine.

    Raises
    ------
    ValueError
        An image does not lie on a slice of the volume's grid.
    """
    inverse = np.linalg.inv(np.asarray(volume.affine, float))
    out = np.zeros((len(datasets), *mask.shape[1:]), bool)
    for index, dataset in enumerate(datasets):
        position = np.append(np.asarray(dataset.ImagePositionPatient, float), 1.0)
        voxel = (inverse @ position)[:3]
        slice_index = round(float(voxel[0]))
        if np.abs(voxel - [slice_index, 0, 0]).max() > 1e-2 or not 0 <= slice_index < len(mask):
            raise ValueError(f"image {dataset.SOPInstanceUID} is not a slice of the volume")
        out[index] = mask[slice_index]
    return out


def seg_mask_on_source_images(
    seg: hd.seg.Segmentation, datasets: Sequence[Dataset], segment_number: int
) -> np.ndarray:
    """Segment ``segment_number`` of ``seg``, ``(image, row, column)`` in ``datasets`` order.

    Every frame must name a source image (Derivation Image references) and
    lie on it: same ImagePositionPatient and ImageOrientationPatient.

    Raises
    ------
    ValueError
        A frame is off its source image's plane.
    """
    by_uid = {str(dataset.SOPInstanceUID): dataset for dataset in datasets}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source_uid = str(
            frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        source = by_uid.get(source_uid)
        if source is None:
            raise ValueError(f"a SEG frame references {source_uid}, not a source image")
        position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        if np.abs(position - np.asarray(source.ImagePositionPatient, float)).max() > _TOLERANCE:
            raise ValueError(f"a SEG frame is off the plane of source image {source_uid}")
    orientation = np.asarray(
        seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
        float,
    )
    if np.abs(orientation - np.asarray(datasets[0].ImageOrientationPatient, float)).max() > (
        _TOLERANCE
    ):
        raise ValueError("the SEG's orientation differs from the source images'")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[str(dataset.SOPInstanceUID) for dataset in datasets],
        segment_numbers=[segment_number],
        assert_missing_frames_are_empty=True,
    )
    return np.asarray(pixels[..., 0], bool)
