"""Secondary Capture of a segmentation's key images: the overlay burned in, with a legend.

For viewers that cannot show DICOM SEG: each key image (per segment, the
source slice where it is largest) becomes an RGB Secondary Capture with every
segment on that slice drawn as a semi-transparent colour and a legend with the
measured values.  Built with highdicom's ``SCImage.from_ref_dataset``, so it
joins the source's patient and study, in a series of its own.  The images are
enlarged to at least :data:`MIN_WIDTH` pixels so the legend stays legible;
being screenshots, they carry no pixel spacing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pipelines.base import PipelineInput, SegmentationResult, SegmentMeasurement
from pipelines.outputs.provenance import ResultProvenance

#: Narrowest image written (pixels); smaller sources are enlarged.
MIN_WIDTH = 512
#: Most key images per job.
MAX_KEY_IMAGES = 8
#: Opacity of a segment's colour over the image.
OVERLAY_ALPHA = 0.4
#: Segment colours, in segment order (repeats after the last).
PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
)


@dataclass(frozen=True)
class KeyImage:
    """A key slice: its index in the source grid and the source instance shown there."""

    index: int
    source: Dataset


def _source_masks(data: PipelineInput, result: SegmentationResult) -> list[np.ndarray]:
    masks = [np.asarray(mask, dtype=bool) for mask in result.masks]
    return masks if data.frames is None else [data.frames.from_grid(mask) for mask in masks]


def _sources(data: PipelineInput) -> list[Dataset | None]:
    """The source instance of each slice of the source grid (None where none matches)."""
    if data.frames is not None:
        by_uid = {ds.SOPInstanceUID: ds for ds in data.datasets}
        return [by_uid.get(ds.SOPInstanceUID) for ds in data.frames.datasets]
    volume = data.volume
    count = volume.spatial_shape[0]
    if len(data.datasets) == 1 and count == 1:
        return [data.datasets[0]]
    positions = volume.map_indices_to_reference(
        np.array([[index, 0, 0] for index in range(count)], dtype=float)
    )
    by_position = [
        (np.asarray(ds.ImagePositionPatient, dtype=float), ds)
        for ds in data.datasets
        if "ImagePositionPatient" in ds and int(ds.get("NumberOfFrames", 1) or 1) == 1
    ]
    sources: list[Dataset | None] = []
    for position in positions:
        near = [ds for where, ds in by_position if np.linalg.norm(where - position) < 0.01]
        sources.append(near[0] if near else None)
    return sources


def _slices(data: PipelineInput) -> np.ndarray:
    """Intensities on the source grid (slice, row, column)."""
    return np.asarray(data.volume.array if data.frames is None else data.frames.array, float)


def key_images(data: PipelineInput, result: SegmentationResult) -> list[KeyImage]:
    """Per segment, the source slice where it is largest; each slice once, in slice order."""
    sources = _sources(data)
    chosen: set[int] = set()
    for mask in _source_masks(data, result):
        areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
        if areas.max(initial=0) > 0:
            chosen.add(int(np.argmax(areas)))
    found = [KeyImage(index, sources[index]) for index in sorted(chosen) if sources[index]]
    return found[:MAX_KEY_IMAGES]  # type: ignore[arg-type]


def _window(source: Dataset, pixels: np.ndarray) -> tuple[float, float]:
    """The source's first window (center, width), else the 1st-99th percentile range."""
    if "WindowCenter" in source and "WindowWidth" in source:
        center, width = source.WindowCenter, source.WindowWidth
        center = float(center[0] if isinstance(center, Sequence) else center)
        width = float(width[0] if isinstance(width, Sequence) else width)
        if width > 0:
            return center, width
    low, high = np.percentile(pixels, [1, 99])
    return (low + high) / 2, max(float(high - low), 1.0)


def _legend(measurements: Sequence[SegmentMeasurement], unit: str) -> list[str]:
    return [
        f"{m.segment.label}: {m.volume_ml:.1f} ml, mean {m.mean_intensity:.0f} {unit}"
        for m in measurements
    ]


def render_key_image(
    pixels: np.ndarray,
    masks: Sequence[np.ndarray],
    source: Dataset,
    legend: Sequence[str],
) -> np.ndarray:
    """The RGB image (rows, columns, 3, uint8) of one slice with overlays and legend."""
    center, width = _window(source, pixels)
    gray = np.clip((pixels - (center - width / 2)) / width, 0, 1) * 255
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for number, mask in enumerate(masks):
        colour = np.array(PALETTE[number % len(PALETTE)], dtype=float)
        rgb[mask] = (1 - OVERLAY_ALPHA) * rgb[mask] + OVERLAY_ALPHA * colour
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    scale = max(1, -(-MIN_WIDTH // image.width))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(image, "RGBA")
    font = ImageFont.load_default(size=max(12, image.width // 40))
    line = int(font.size * 1.4)
    draw.rectangle((0, 0, image.width, line * len(legend) + 8), fill=(0, 0, 0, 170))
    for number, text in enumerate(legend):
        top = 4 + number * line
        colour = PALETTE[number % len(PALETTE)]
        draw.rectangle((6, top + 2, 6 + font.size - 4, top + font.size - 2), fill=colour)
        draw.text((12 + font.size, top), text, fill=(255, 255, 255), font=font)
    return np.asarray(image, dtype=np.uint8)


def build_secondary_captures(
    data: PipelineInput,
    result: SegmentationResult,
    measurements: Sequence[SegmentMeasurement],
    *,
    intensity_unit: str,
    series_instance_uid: str,
    sop_instance_uids: Sequence[str],
    series_number: int,
    provenance: ResultProvenance,
) -> list[hd.sc.SCImage]:
    """One SC per key image (:func:`key_images`), UIDs taken in order from ``sop_instance_uids``."""
    keys = key_images(data, result)
    if len(sop_instance_uids) < len(keys):
        raise ValueError(f"{len(keys)} key images but {len(sop_instance_uids)} UIDs")
    masks = _source_masks(data, result)
    slices = _slices(data)
    legend = _legend(measurements, intensity_unit)
    images = []
    for number, (key, uid) in enumerate(zip(keys, sop_instance_uids, strict=False), start=1):
        rgb = render_key_image(
            slices[key.index], [mask[key.index] for mask in masks], key.source, legend
        )
        image = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=key.source,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_instance_uid,
            series_number=series_number,
            sop_instance_uid=uid,
            instance_number=number,
            manufacturer=provenance.manufacturer,
            patient_orientation=_orientation(key.source),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=provenance.default_series_description("SC"),
        )
        if "BodyPartExamined" in key.source:
            # The source's body part (General Series; highdicom's SC takes no argument for
            # it): without it a validator cannot tell the image is not of a paired organ.
            image.BodyPartExamined = key.source.BodyPartExamined
        images.append(image)
    return images


def _orientation(source: Dataset) -> tuple[str, str]:
    """Patient Orientation of the source's rows and columns (from its direction cosines)."""
    if "ImageOrientationPatient" not in source:
        given = source.get("PatientOrientation")
        return (str(given[0]), str(given[1])) if given and len(given) == 2 else ("L", "P")
    cosines = np.asarray(source.ImageOrientationPatient, dtype=float).reshape(2, 3)
    letters = (("R", "L"), ("A", "P"), ("F", "H"))
    row, column = (
        letters[int(np.argmax(np.abs(v)))][int(v[np.argmax(np.abs(v))] > 0)] for v in cosines
    )
    return row, column
