"""The contract between the node and a modality pipeline.

A pipeline receives one series as a :class:`PipelineInput` (a geometry-aware
volume plus the source datasets) and returns a :class:`SegmentationResult`
(one boolean mask per :class:`SegmentDefinition`).  Everything DICOM- or
queue-related stays outside the pipeline: the worker loads the input, the
output builders in :mod:`pipelines.outputs` write SEG and SR.

Array contract
--------------
``PipelineInput.volume.array`` and every mask are indexed ``(slice, row,
column)`` exactly as :func:`highdicom.get_volume_from_series` returns them;
``volume.affine`` maps those indices to patient coordinates (LPS, mm).
Masks therefore carry the geometry of the input volume and are written to
DICOM SEG through that same geometry, never by guessing flips.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipelines.registry import PipelineSpec


@dataclass(frozen=True)
class SegmentDefinition:
    """The coded meaning of one output segment (SNOMED CT category and type).

    Parameters
    ----------
    label:
        Human-readable segment label shown by viewers (``SegmentLabel``).
    category:
        Segmented property category, e.g. SCT 123037004 "Anatomical structure".
    property_type:
        Segmented property type, e.g. SCT 44029006 "Left lung".
    tracking_id:
        Stable identifier of the structure across pipeline versions; used
        as the SR tracking identifier.
    """

    label: str
    category: Code
    property_type: Code
    tracking_id: str


@dataclass
class PipelineInput:
    """One source series as a geometry-aware volume.

    Parameters
    ----------
    volume:
        Intensities in real-world units (HU for CT) as a highdicom
        :class:`~highdicom.Volume`; array axes are ``(slice, row, column)``.
    datasets:
        Source instances (headers; pixel data may be dropped) in no
        particular order; output builders reference them.
    """

    volume: hd.Volume
    datasets: Sequence[Dataset]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(self.volume.voxel_volume) / 1000.0


@dataclass
class SegmentationResult:
    """Boolean masks, one per segment, in the geometry of the input volume.

    ``masks[i]`` belongs to ``segments[i]``; masks may overlap (a body
    outline contains the lungs), so they are kept separate rather than as a
    label map.
    """

    segments: Sequence[SegmentDefinition]
    masks: Sequence[np.ndarray]
    notes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.segments) != len(self.masks):
            raise ValueError(f"{len(self.segments)} segments but {len(self.masks)} masks")


@dataclass(frozen=True)
class SegmentMeasurement:
    """Quantities measured on one segment for the TID 1500 report."""

    segment: SegmentDefinition
    segment_number: int
    volume_ml: float
    mean_intensity: float
    voxel_count: int


class Pipeline(ABC):
    """A modality pipeline: named, versioned, declares what it accepts.

    Its identity (name, version, queue, modalities) is its ``spec``, the
    same object ``pipelines/<name>/spec.py`` registers.  One instance is
    created per worker process and reused for every job (a model is loaded
    once).
    """

    spec: ClassVar[PipelineSpec]
    intensity_unit: ClassVar[Code] = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
    algorithm_family: ClassVar[Code] = codes.cid7162.ArtificialIntelligence
    parameters: ClassVar[dict[str, str]] = {}

    @abstractmethod
    def run(self, data: PipelineInput) -> SegmentationResult:
        """Segment one series; raise :class:`core.errors.PipelineError` on bad input."""


def measure_segments(data: PipelineInput, result: SegmentationResult) -> list[SegmentMeasurement]:
    """Volume (mL) and mean intensity of every segment of ``result``."""
    values = data.volume.array
    measurements = []
    for number, (segment, mask) in enumerate(zip(result.segments, result.masks, strict=True), 1):
        count = int(np.count_nonzero(mask))
        mean = float(values[mask].mean()) if count else float("nan")
        measurements.append(
            SegmentMeasurement(
                segment=segment,
                segment_number=number,
                volume_ml=count * data.voxel_volume_ml,
                mean_intensity=mean,
                voxel_count=count,
            )
        )
    return measurements
