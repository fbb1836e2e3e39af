"""DICOM Segmentation (BINARY by default, or LABELMAP) from a pipeline result.

Geometry
--------
Masks live in the geometry of ``data.volume`` (axes ``(slice, row,
column)``, affine to LPS).  They are stacked into a
``(slice, row, column, segment)`` array (or, for more than 8 disjoint
segments and for LABELMAP, one label volume) and wrapped with
``data.volume.with_array(...)`` so highdicom derives every frame's plane
position, orientation and pixel spacing from the volume's affine and infers
the per-frame source image references by matching positions against the
source images.  Nothing depends on how the source datasets are ordered.

A volume resampled from a gantry-tilted or variably spaced stack
(``data.frames``) is not the source grid: every mask is mapped back onto the
source frames (nearest model voxel) and written as one frame per source
image, in the source images' own plane positions, so each SEG frame lies
exactly on its tilted source image.  An enhanced multi-frame source is
referenced frame by frame (highdicom matches the planes).

Empty segments
--------------
A segment whose mask is all false stays in the Segment Sequence with no
frames (highdicom omits empty frames per segment; the standard allows a
described segment without frames), so segment numbers always equal the
1-based position in ``result.segments`` and match the measurements.  If
*every* segment is empty, highdicom keeps all (empty) frames instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import highdicom as hd
import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipelines.base import PipelineInput, SegmentationResult
from pipelines.outputs.provenance import ResultProvenance

__all__ = [
    "OverlappingSegmentsError",
    "algorithm_identification",
    "build_segmentation",
    "segment_tracking_uid",
]


class OverlappingSegmentsError(ValueError):
    """A LABELMAP was asked for segments that overlap: one label per pixel cannot hold them."""


def segment_tracking_uid(seg_sop_instance_uid: str, tracking_id: str) -> str:
    """Tracking UID of one segment, derived deterministically.

    Parameters
    ----------
    seg_sop_instance_uid:
        SOP Instance UID of the Segmentation that holds the segment.
    tracking_id:
        The segment's stable tracking identifier.

    Returns
    -------
    str
        A UID that is the same every time the same SEG is rebuilt, so a
        re-run produces identical objects; the SR reuses it so that SEG
        segment and SR measurement group share one tracking UID.
    """
    return str(
        generate_uid(entropy_srcs=["segment-tracking-uid", seg_sop_instance_uid, tracking_id])
    )


def algorithm_identification(provenance: ResultProvenance) -> hd.AlgorithmIdentificationSequence:
    """Segmentation Algorithm Identification of the pipeline.

    Parameters
    ----------
    provenance:
        The node and pipeline that made the result.

    Returns
    -------
    highdicom.AlgorithmIdentificationSequence
        Pipeline name, version, family (CID 7162), source (manufacturer)
        and parameters, if any.
    """
    return hd.AlgorithmIdentificationSequence(
        name=provenance.algorithm_name,
        family=provenance.algorithm_family,
        version=provenance.pipeline_version,
        source=provenance.manufacturer,
        parameters=dict(provenance.parameters) or None,
    )


def _check_shapes(data: PipelineInput, result: SegmentationResult) -> None:
    shape = data.volume.spatial_shape
    for segment, mask in zip(result.segments, result.masks, strict=True):
        if mask.shape != shape:
            raise ValueError(
                f"mask of segment {segment.label!r} has shape {mask.shape}, "
                f"input volume has {shape}"
            )


def _source_masks(data: PipelineInput, result: SegmentationResult) -> Iterator[np.ndarray]:
    """Each mask on the source grid: as given, or mapped back onto the source frames."""
    for mask in result.masks:
        mask = np.asarray(mask, dtype=bool)
        yield mask if data.frames is None else data.frames.from_grid(mask)


def _label_map(data: PipelineInput, result: SegmentationResult) -> np.ndarray | None:
    """The masks on the source grid as one label array (segment number per voxel), or None.

    None if the masks overlap.  Reads one mask at a time, so ``result.masks``
    may be a lazy sequence: memory is one volume of uint8/uint16 instead of
    one boolean volume per segment.
    """
    shape = data.volume.spatial_shape if data.frames is None else data.frames.array.shape
    dtype = np.uint8 if len(result.segments) < 256 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    for number, mask in enumerate(_source_masks(data, result), 1):
        # Work on the slices the mask touches only (organs span a fraction of a scan).
        touched = np.flatnonzero(mask.any(axis=(1, 2)))
        if touched.size == 0:
            continue
        part = slice(int(touched[0]), int(touched[-1]) + 1)
        sub_mask, sub_labels = mask[part], labels[part]
        if np.any(sub_labels[sub_mask]):
            return None
        sub_labels[sub_mask] = number
    return labels


def _mask_array(
    data: PipelineInput, result: SegmentationResult, labelmap: bool
) -> hd.Volume | np.ndarray:
    """The masks on the source grid: a label array if disjoint, else stacked channels.

    A Volume in the input geometry, or for resampled input (``data.frames``)
    a plain array with one frame per source frame, in the frames' order.
    """
    _check_shapes(data, result)
    count = len(result.segments)
    labels = _label_map(data, result) if labelmap or count > 8 else None
    if labels is not None:
        return labels if data.frames is not None else data.volume.with_array(labels)
    if labelmap:
        raise OverlappingSegmentsError("a LABELMAP Segmentation needs non-overlapping segments")
    # Segment-major in memory (each mask contiguous), segment last as a view: highdicom's
    # overlap check sums over the segment axis, which numpy does ~2-4x faster this way
    # than over a contiguous innermost axis of length n (same array values, same SEG).
    stacked = np.stack(list(_source_masks(data, result)), axis=0).transpose(1, 2, 3, 0)
    if data.frames is not None:
        return stacked
    numbers = list(range(1, count + 1))
    return data.volume.with_array(stacked, channels={"SegmentNumber": numbers})


def build_segmentation(
    data: PipelineInput,
    result: SegmentationResult,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    provenance: ResultProvenance,
    series_description: str | None = None,
    segmentation_type: str = "binary",
) -> hd.seg.Segmentation:
    """Build a BINARY (or LABELMAP) DICOM Segmentation of a pipeline result.

    Segment ``i + 1`` describes ``result.segments[i]`` (coded category and
    property type, algorithm type AUTOMATIC, the pipeline's algorithm
    identification, tracking id and a deterministic tracking UID).  Patient
    and study are copied from the source images by highdicom; the object
    starts a new series and is encoded in Explicit VR Little Endian.

    Parameters
    ----------
    data:
        The pipeline input; its volume fixes the geometry of the masks and
        its datasets are the referenced source images.
    result:
        Segments and boolean masks in the geometry of ``data.volume``.
    series_instance_uid, sop_instance_uid, series_number:
        Identity of the new SEG series and instance.
    provenance:
        Equipment and algorithm recorded in the object.
    series_description:
        Defaults to e.g. ``"AI SEG ct-lungs 1.0.0"``.
    segmentation_type:
        ``"binary"`` (default: what most viewers display) or ``"labelmap"``
        (DICOM 2024+, smaller and faster to build; segments must not overlap).
        With more than 8 disjoint segments the BINARY object is built from a
        label volume (one mask read at a time), which bounds memory.

    Returns
    -------
    highdicom.seg.Segmentation
        The segmentation, ready to be saved or sent.

    Raises
    ------
    OverlappingSegmentsError
        If a LABELMAP is asked for segments that overlap (checked before any
        frame is encoded, so trying costs one pass over the masks).
    ValueError
        If there are no segments or a mask does not match the volume shape.
    """
    if not result.segments:
        raise ValueError("a Segmentation needs at least one segment")
    if segmentation_type not in ("binary", "labelmap"):
        raise ValueError(f"segmentation_type must be binary or labelmap, not {segmentation_type!r}")
    labelmap = segmentation_type == "labelmap"
    algorithm_id = algorithm_identification(provenance)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.label,
            segmented_property_category=segment.category,
            segmented_property_type=segment.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
            tracking_uid=segment_tracking_uid(sop_instance_uid, segment.tracking_id),
            tracking_id=segment.tracking_id,
        )
        for number, segment in enumerate(result.segments, 1)
    ]
    sources = list(data.datasets)
    if data.frames is not None:  # in the frames' order, as the datasets given (headers may differ)
        by_uid = {ds.SOPInstanceUID: ds for ds in sources}
        sources = [by_uid[ds.SOPInstanceUID] for ds in data.frames.datasets]
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=_mask_array(data, result, labelmap),
        segmentation_type=(
            hd.seg.SegmentationTypeValues.LABELMAP
            if labelmap
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        **provenance.equipment(),
        content_description=f"{provenance.pipeline_name} {provenance.pipeline_version}"[:64],
        series_description=series_description or provenance.default_series_description("SEG"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
    )
