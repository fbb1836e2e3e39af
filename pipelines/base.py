"""The contract between the node and a modality pipeline.

A pipeline receives one series as a :class:`PipelineInput` (a geometry-aware
volume plus the source datasets) and returns one of three result kinds: a
:class:`SegmentationResult` (one boolean mask per :class:`SegmentDefinition`;
written as SEG + TID 1500 SR), a :class:`ClassificationResult` (one
probability and decision per class; SR) or a :class:`DetectionResult` (one
located finding per detection; SR).  Everything DICOM- or
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
from pathlib import Path
from typing import ClassVar, Literal

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from pipelines.content import ContentCheckName, check_content
from pipelines.domain import InputDomain
from pipelines.spec import PipelineSpec
from pipelines.stack import SourceFrames


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
    companions:
        Further series of a multi-series input (e.g. T2, FLAIR next to a
        T1c ``volume``), each resampled onto the grid of ``volume``.
    frames:
        The source frames when ``volume`` was resampled from a gantry-tilted
        or variably spaced stack (results are mapped back onto them); None
        when ``volume`` is the source grid itself.
    unknown_spacing:
        Why the pixel size is unknown (a radiograph with Pixel Spacing
        ``0\\0`` and no other spacing; the affine then uses 1 mm), else None.
    images:
        For a series of projection images (a PA and a lateral): each image's
        own input, analysed one by one; ``volume`` is then the first image's
        and ``datasets`` lists every image.
    """

    volume: hd.Volume
    datasets: Sequence[Dataset]
    companions: Sequence[np.ndarray] = ()
    frames: SourceFrames | None = None
    unknown_spacing: str | None = None
    images: Sequence[PipelineInput] = ()

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(self.volume.voxel_volume) / 1000.0


@dataclass(frozen=True)
class SecondOpinion:
    """A second model's result on one segment and its agreement with the first model's.

    Parameters
    ----------
    model:
        The second model, e.g. ``HD-BET 1.1 fold 0``.
    dice:
        Dice coefficient of the two masks.
    volume_ml:
        Volume of the second model's mask.
    review_below:
        Agreement under which the result needs a human look.
    """

    model: str
    dice: float
    volume_ml: float
    review_below: float

    @property
    def requires_review(self) -> bool:
        """The models disagree more than two sound masks of the same structure do."""
        return self.dice < self.review_below


@dataclass
class SegmentationResult:
    """Boolean masks, one per segment, in the geometry of the input volume.

    ``masks[i]`` belongs to ``segments[i]``; masks may overlap (a body
    outline contains the lungs), so they are kept separate rather than as a
    label map.  ``second_opinions`` holds, by segment tracking id, a second
    model's agreement where one ran (reported in the SR).
    """

    segments: Sequence[SegmentDefinition]
    masks: Sequence[np.ndarray]
    notes: dict[str, str] = field(default_factory=dict)
    second_opinions: dict[str, SecondOpinion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.segments) != len(self.masks):
            raise ValueError(f"{len(self.segments)} segments but {len(self.masks)} masks")


@dataclass(frozen=True)
class ClassFinding:
    """One class of a classifier: what it means, its probability and the decision.

    Parameters
    ----------
    label:
        Class name (tracking identifier in the SR).
    finding:
        Coded finding, e.g. SCT 36118008 "Pneumothorax".
    category:
        Finding category (e.g. SCT 404684003 "Clinical finding").
    probability:
        Model output for the class, in ``[0, 1]``.
    present:
        The decision at the pipeline's threshold.
    image:
        The projection image the decision is about, in a series of several
        (None: the input's only image).
    """

    label: str
    finding: Code
    category: Code
    probability: float
    present: bool
    image: Dataset | None = field(default=None, compare=False)


@dataclass
class ClassificationResult:
    """Image-level findings of a classifier, decided at ``threshold``."""

    findings: Sequence[ClassFinding]
    threshold: float
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DetectedFinding:
    """One detection: what, where (a box on one slice of the input volume), how big, how sure.

    Parameters
    ----------
    label, finding, category:
        Name and coded meaning of the kind of finding.
    score:
        Detection score in ``[0, 1]``.
    slice_index:
        Index along the volume's slice axis of the slice through the
        finding's centre (0 for a projection image).
    box:
        ``(row_min, column_min, row_max, column_max)`` of the finding on that
        slice, in pixels (inclusive).
    diameter_mm:
        Largest extent of the finding in mm.
    volume_ml:
        Volume of the detected region (None for a projection image).
    image:
        The projection image of the finding, in a series of several (None:
        the slice ``slice_index`` of the input).
    """

    label: str
    finding: Code
    category: Code
    score: float
    slice_index: int
    box: tuple[int, int, int, int]
    diameter_mm: float
    volume_ml: float | None
    image: Dataset | None = field(default=None, compare=False)


@dataclass
class DetectionResult:
    """Findings located by a detector (possibly none).

    ``kinds`` lists ``(label, finding, category)`` of everything the detector
    looks for, so that a kind without detections can be reported absent.
    """

    findings: Sequence[DetectedFinding]
    threshold: float
    kinds: Sequence[tuple[str, Code, Code]] = ()
    notes: dict[str, str] = field(default_factory=dict)


#: What a pipeline's ``run`` returns.
PipelineResult = SegmentationResult | ClassificationResult | DetectionResult


@dataclass(frozen=True)
class SegmentMeasurement:
    """Quantities measured on one segment for the TID 1500 report."""

    segment: SegmentDefinition
    segment_number: int
    volume_ml: float
    mean_intensity: float
    voxel_count: int
    second_opinion: SecondOpinion | None = None


class Pipeline(ABC):
    """A modality pipeline: named, versioned, declares what it accepts.

    Its identity (name, version, queue, modalities) is its ``spec``, the one
    the registry built it from (:func:`pipelines.registry.load_pipeline` sets
    it on the instance, so one class may serve many specs).  One instance is
    created per worker process and reused for every job (a model is loaded
    once).
    """

    spec: PipelineSpec
    intensity_unit: ClassVar[Code] = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
    algorithm_family: ClassVar[Code] = codes.cid7162.ArtificialIntelligence
    parameters: ClassVar[dict[str, str]] = {}
    #: Plausible volume (mL) per segment tracking id: a result outside fails the job
    #: (:mod:`pipelines.outputs.checks`) instead of reaching a reader.
    plausible_volume_ml: ClassVar[dict[str, tuple[float, float]]] = {}
    #: Inputs the pipeline was validated on (unset bounds accept anything).
    domain: InputDomain = InputDomain()
    #: Outside the domain: ``skip`` the job, or ``flag`` the SR and go on.
    domain_policy: Literal["skip", "flag"] = "skip"
    #: Image content the pipeline relies on (:mod:`pipelines.content`); missing: always skip.
    content: tuple[ContentCheckName, ...] = ()
    #: A demonstration model: result descriptions say so.
    demo: bool = False
    #: Results are in mm (volumes, diameters): an input of unknown pixel size is skipped.
    measures_mm: bool = True
    #: SHA-256 of the weights file, None for weight-free pipelines.
    weights_sha256: str | None = None
    #: Device inference runs on (``cpu``, ``cuda:0``).
    device: str = "cpu"

    @classmethod
    def create(cls, spec: PipelineSpec, models_dir: Path | None, device: str = "auto") -> Pipeline:
        """Build the process-wide instance for ``spec``.

        Parameters
        ----------
        spec:
            The registered spec.
        models_dir:
            Where operator-supplied weights live.
        device:
            Preferred inference device (``auto``, ``cpu``, ``cuda:N``).
            Code-only pipelines ignore all three.
        """
        return cls()

    def missing_content(self, data: PipelineInput) -> list[str]:
        """What ``data`` fails to show of the content this pipeline relies on (empty: all there).

        Checked on the primary volume before the pipeline runs; unlike the
        tag domain, a failure always skips the job whatever ``domain_policy``
        says, since a pipeline must never report an organ the image lacks.
        """
        modality = str(data.datasets[0].get("Modality", ""))
        return check_content(self.content, data.volume, modality)

    @abstractmethod
    def run(self, data: PipelineInput) -> PipelineResult:
        """Analyse one series; raise :class:`core.errors.PipelineError` on bad input."""


def measure_segments(data: PipelineInput, result: SegmentationResult) -> list[SegmentMeasurement]:
    """Volume (mL) and mean intensity of every segment of ``result``.

    Voxel volumes use the slice pitch from the slice positions (the volume's
    affine), never SliceThickness.  For a resampled tilted or variably
    spaced stack, each mask is first mapped back onto the source frames and
    measured there: the source pixels and values, each frame's own slab.
    """
    frames = data.frames
    values = data.volume.array if frames is None else frames.array
    measurements = []
    for number, (segment, mask) in enumerate(zip(result.segments, result.masks, strict=True), 1):
        if frames is not None:
            mask = frames.from_grid(np.asarray(mask, bool))
        count = int(np.count_nonzero(mask))
        mean = float(values[mask].mean()) if count else float("nan")
        volume = count * data.voxel_volume_ml if frames is None else frames.volume_ml(mask)
        measurements.append(
            SegmentMeasurement(
                segment=segment,
                segment_number=number,
                volume_ml=volume,
                mean_intensity=mean,
                voxel_count=count,
                second_opinion=result.second_opinions.get(segment.tracking_id),
            )
        )
    return measurements
