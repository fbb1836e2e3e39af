"""Classical (weight-free) body and lung segmentation of chest CT.

Method
------
1. Body: largest connected component above ``body_threshold_hu``, holes
   filled in 3D and slice by slice (so lungs reaching the first or last
   slice are filled too).
2. Lung candidates: voxels below ``air_threshold_hu`` inside the filled
   body, i.e. air not connected to the air around the patient.
3. The largest candidate component, plus the second largest when it holds
   at least ``second_lung_fraction`` of the largest (so stomach or bowel gas
   is not taken for a lung).
4. Side: the midline is the sagittal plane through the body centroid, in
   patient coordinates from ``volume.affine`` (LPS: patient left is +x).  A
   component lying mostly on one side goes to that side; one straddling the
   midline (touching lungs, lungs joined by the airways) is cut there.
5. Each lung is closed morphologically and its holes filled slice-wise, so
   vessels and nodules belong to the lung.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage

from core.errors import PipelineError
from pipelines.base import Pipeline, PipelineInput, SegmentationResult
from pipelines.content import ContentCheckName, fill_holes, largest_components
from pipelines.ct_lungs.segments import SEGMENTS
from pipelines.domain import InputDomain

__all__ = ["CtLungsPipeline"]


def _close_and_fill(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary closing then hole filling, computed on the padded bounding box only."""
    if not mask.any():
        return mask
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    pad = max(iterations, 0) + 1
    crop = np.pad(mask[box], pad)
    if iterations > 0:
        crop = ndimage.binary_closing(crop, iterations=iterations)
    crop = fill_holes(crop)
    out = np.zeros_like(mask)
    out[box] = crop[(slice(pad, -pad),) * mask.ndim]
    return out


def _left_of_midline(affine: np.ndarray, shape: tuple[int, ...], midline_x: float) -> np.ndarray:
    """Voxels whose centre lies at patient x > ``midline_x`` (patient left in LPS)."""
    rows = np.arange(shape[1], dtype=np.float64)[:, None]
    columns = np.arange(shape[2], dtype=np.float64)[None, :]
    plane = affine[0, 1] * rows + affine[0, 2] * columns + affine[0, 3]
    left = np.empty(shape, bool)
    for k in range(shape[0]):
        np.greater(plane, midline_x - affine[0, 0] * k, out=left[k])
    return left


#: Body Part Examined values (DICOM PS3.16 Annex L, plus THORAX) of a scan that holds the chest.
CHEST_BODY_PARTS = (
    "CHEST",
    "THORAX",
    "LUNG",
    "HEART",
    "MEDIASTINUM",
    "CHESTABDOMEN",
    "CHESTABDPELVIS",
    "NECKCHEST",
    "NECKCHESTABDOMEN",
    "NECKCHESTABDPELV",
    "TSPINE",
    "WHOLEBODY",
)


class CtLungsPipeline(Pipeline):
    """Body outline and left/right lungs of a chest CT by thresholds and morphology.

    Attributes
    ----------
    body_threshold_hu:
        Voxels above it are body (or table, or air-surrounded objects).
    air_threshold_hu:
        Voxels below it inside the body are lung candidates.
    min_lung_ml:
        Smallest component accepted as (part of) a lung.
    second_lung_fraction:
        The second component counts as a lung only if it is at least this
        fraction of the largest.
    split_fraction:
        A component with more than this fraction of its voxels on each side
        of the midline is cut at the midline.
    closing_iterations:
        Iterations of the 6-connected closing applied to each lung.
    """

    algorithm_family: ClassVar[Code] = codes.cid7162.HistogramAnalysis
    domain = InputDomain(
        modalities=["CT"], body_parts=CHEST_BODY_PARTS, body_part_may_be_missing=True
    )
    content: tuple[ContentCheckName, ...] = ("chest-ct",)
    # A lung is at least min_lung_ml; one lung of a hyperinflated adult stays under 6 L.
    plausible_volume_ml: ClassVar[dict[str, tuple[float, float]]] = {
        "body": (100.0, 300_000.0),
        "left-lung": (20.0, 6000.0),
        "right-lung": (20.0, 6000.0),
    }

    body_threshold_hu: ClassVar[float] = -500.0
    air_threshold_hu: ClassVar[float] = -400.0
    min_lung_ml: ClassVar[float] = 20.0
    second_lung_fraction: ClassVar[float] = 0.2
    split_fraction: ClassVar[float] = 0.2
    closing_iterations: ClassVar[int] = 2

    def run(self, data: PipelineInput) -> SegmentationResult:
        """Segment body, left lung and right lung.

        Parameters
        ----------
        data:
            A CT volume in HU.

        Returns
        -------
        SegmentationResult
            Masks for :data:`~pipelines.ct_lungs.segments.SEGMENTS` (body, left
            lung, right lung) in the geometry of ``data.volume``.

        Raises
        ------
        PipelineError
            If the volume is not 3D single-channel, or no body or lung is found.
        """
        hu = data.volume.array
        if hu.ndim != 3:
            raise PipelineError(f"expected a single-channel 3D volume, got shape {hu.shape}")
        body = self._body(hu)
        components = self._lung_components(hu, body, data.voxel_volume_ml)

        affine = np.asarray(data.volume.affine, np.float64)
        centroid = np.append(ndimage.center_of_mass(body), 1.0)
        midline_x = float(affine[0] @ centroid)
        left_side = _left_of_midline(affine, hu.shape, midline_x)

        left = np.zeros(hu.shape, bool)
        right = np.zeros(hu.shape, bool)
        notes = {"midline_x_mm": f"{midline_x:.1f}"}
        for component in components:
            on_left = component & left_side
            fraction = np.count_nonzero(on_left) / np.count_nonzero(component)
            if self.split_fraction < fraction < 1.0 - self.split_fraction:
                left |= on_left
                right |= component & ~left_side
                notes["split"] = "a lung component straddling the midline was cut there"
            elif fraction >= 0.5:
                left |= component
            else:
                right |= component
        del left_side, components

        # refine each side; where the two grow into each other, keep the original side
        left_raw = left
        left = _close_and_fill(left, self.closing_iterations) & body & ~right
        right = _close_and_fill(right, self.closing_iterations) & body & ~left_raw & ~left
        for side, mask in (("left", left), ("right", right)):
            if not mask.any():
                notes[f"{side}_lung"] = "not found"
        return SegmentationResult(segments=SEGMENTS, masks=[body, left, right], notes=notes)

    def _body(self, hu: np.ndarray) -> np.ndarray:
        """Largest component above the body threshold, holes filled."""
        found = largest_components(hu > self.body_threshold_hu, 1)
        if not found:
            raise PipelineError(f"no body found: no voxel above {self.body_threshold_hu:g} HU")
        return fill_holes(found[0])

    def _lung_components(
        self, hu: np.ndarray, body: np.ndarray, voxel_ml: float
    ) -> list[np.ndarray]:
        """The one or two air components inside the body that are lungs."""
        candidates = hu < self.air_threshold_hu
        candidates &= body
        found = largest_components(candidates, 2)
        del candidates
        sizes = [np.count_nonzero(mask) * voxel_ml for mask in found]
        if not found or sizes[0] < self.min_lung_ml:
            largest = f"{sizes[0]:.1f} mL" if found else "none"
            raise PipelineError(
                f"no lungs found: largest air region inside the body below "
                f"{self.air_threshold_hu:g} HU is {largest} (< {self.min_lung_ml:g} mL)"
            )
        if len(found) == 2 and (
            sizes[1] < self.min_lung_ml or sizes[1] < self.second_lung_fraction * sizes[0]
        ):
            found.pop()
        return found
