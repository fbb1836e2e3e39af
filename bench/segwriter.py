"""SEG writing at TotalSegmentator size: 117 segments on a 512 x 512 x 300 CT.

Each configuration runs in a fresh subprocess (peak RSS = the child's
``ru_maxrss``): build the Segmentation from the same label volume and source
headers, then write it to disk.  "highdicom" is ``hd.seg.Segmentation`` with
its defaults; "node" is :func:`pipelines.outputs.seg.build_segmentation`
(the node's writer) on the same masks.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.common import QUICK, RUNS, median, study_dir, study_files

if TYPE_CHECKING:
    from pydicom import Dataset

    from pipelines.base import PipelineInput

SEGMENTS = 117
BUILDER_MODULES = (
    "highdicom",
    "pydicom.sr.codedict",
    "pipelines.base",
    "pipelines.outputs.provenance",
    "pipelines.outputs.seg",
)
"""What the two SEG builders import."""


def label_volume(shape: tuple[int, int, int], segments: int, seed: int = 0) -> np.ndarray:
    """Non-overlapping blobs (ellipsoids cut by earlier ones), ``segments`` labels, uint8."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    z, y, x = shape
    for number in range(1, segments + 1):
        centre = rng.uniform([0.1 * z, 0.2 * y, 0.2 * x], [0.9 * z, 0.8 * y, 0.8 * x])
        radii = rng.uniform([0.03 * z, 0.02 * y, 0.02 * x], [0.12 * z, 0.08 * y, 0.08 * x])
        lo = np.maximum(np.floor(centre - radii).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radii).astype(int) + 1, shape)
        zz, yy, xx = np.ogrid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        inside = (
            ((zz - centre[0]) / radii[0]) ** 2
            + ((yy - centre[1]) / radii[1]) ** 2
            + ((xx - centre[2]) / radii[2]) ** 2
        ) <= 1.0
        box = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        box[inside & (box == 0)] = number
    return labels


class LazyMasks(Sequence[np.ndarray]):
    """``labels == n`` computed when asked for: 117 boolean volumes never held at once."""

    def __init__(self, labels: np.ndarray) -> None:
        from scipy import ndimage

        self.labels = labels
        self.boxes = ndimage.find_objects(labels)
        self.count = len(self.boxes)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if not 0 <= index < self.count:
            raise IndexError(index)
        mask = np.zeros(self.labels.shape, dtype=bool)
        box = self.boxes[index]
        if box is not None:
            mask[box] = self.labels[box] == index + 1
        return mask


def _vm_hwm_mb() -> float:
    """This process's peak RSS (``VmHWM``; ``ru_maxrss`` keeps the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _highdicom_seg(data: PipelineInput, labels: np.ndarray, kind: str) -> Dataset:
    """highdicom's own Segmentation of ``labels`` with its defaults (the reference writer)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"segment {n}",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n in range(1, SEGMENTS + 1)
    ]
    return hd.seg.Segmentation(
        source_images=data.datasets,
        pixel_array=data.volume.with_array(labels),
        segmentation_type=kind.upper(),
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="bench",
        manufacturer_model_name="bench",
        software_versions="0",
        device_serial_number="0",
    )


def _node_seg(data: PipelineInput, labels: np.ndarray, kind: str) -> Dataset:
    """The node's writer on one mask per segment of ``labels`` (the pipeline contract)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from pipelines.base import PipelineInput, SegmentationResult, SegmentDefinition
    from pipelines.outputs.provenance import ResultProvenance
    from pipelines.outputs.seg import build_segmentation

    segments = [
        SegmentDefinition(
            label=f"segment {n}",
            category=codes.SCT.AnatomicalStructure,
            property_type=codes.SCT.Organ,
            tracking_id=f"segment-{n}",
        )
        for n in range(1, SEGMENTS + 1)
    ]
    result = SegmentationResult(segments=segments, masks=LazyMasks(labels))
    provenance = ResultProvenance(
        node_version="0",
        pipeline_name="bench",
        pipeline_version="0",
        device_serial_number="0",
        parameters={},
        algorithm_family=codes.cid7162.ArtificialIntelligence,
    )
    return build_segmentation(
        PipelineInput(volume=data.volume, datasets=data.datasets),
        result,
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        series_number=9901,
        provenance=provenance,
        segmentation_type=kind,
    )


def _child(config: str, slices: int, out: str) -> dict[str, Any]:
    """Build and write the SEG of ``config`` once in this process; its times, size and peak RSS."""
    from pipelines.io import load_series

    for module in BUILDER_MODULES:  # imported before the clock starts: no import is timed
        importlib.import_module(module)
    data = load_series(study_files(study_dir(slices)))
    labels = label_volume(data.volume.spatial_shape, SEGMENTS)
    rss_before = _vm_hwm_mb()
    kind = config.split("-")[1]
    build = _highdicom_seg if config.startswith("highdicom") else _node_seg
    start = time.perf_counter()
    seg = build(data, labels, kind)
    built = time.perf_counter() - start
    seg.save_as(out, enforce_file_format=True)
    total = time.perf_counter() - start
    return {
        "config": config,
        "build_seconds": round(built, 2),
        "build_write_seconds": round(total, 2),
        "megabytes": round(os.path.getsize(out) / 1e6, 1),
        "frames": int(seg.NumberOfFrames),
        "peak_rss_mb": round(_vm_hwm_mb()),
        "rss_before_mb": round(rss_before),
    }


def measure(config: str, slices: int, runs: int) -> dict[str, Any]:
    """Build and write the 117-segment SEG with ``config`` in a fresh process ``runs`` times."""
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            out = str(Path(folder) / "seg.dcm")
            proc = subprocess.run(
                [sys.executable, "-m", "bench.segwriter", "--child", config, str(slices), out],
                capture_output=True,
                text=True,
                check=False,
                timeout=1800,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{config} failed:\n{proc.stderr[-3000:]}")
            samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    row = dict(samples[-1])
    for key in ("build_seconds", "build_write_seconds", "peak_rss_mb"):
        row[key] = round(median([s[key] for s in samples]), 2)
    row["runs"] = runs
    row["slices"] = slices
    return row


def run(runs: int = RUNS) -> list[dict[str, Any]]:
    """The SEG-writing section: highdicom's defaults and the node's writer, LABELMAP and BINARY."""
    slices = 100 if QUICK else 300
    configs = ["highdicom-labelmap", "node-labelmap", "highdicom-binary", "node-binary"]
    return [measure(config, slices, runs) for config in configs]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
    else:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]), 1)))
