"""The job's compute phases measured in-process on the same files a worker reads.

The ``jobs`` table has load / inference / write seconds; SEG build and SR
build happen between them and are not recorded separately there.  This runs
the steps of ``worker.tasks.inference._produce`` one by one with a clock
around each (same functions, same arguments), so the end-to-end figures from
the database can be split further.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import RUNS, median

if TYPE_CHECKING:
    from core.uids import ResultUIDs
    from pipelines.base import Pipeline, PipelineInput
    from pipelines.outputs.provenance import ResultProvenance


@contextmanager
def _clock(out: dict[str, float], phase: str) -> Iterator[None]:
    """Record the seconds the ``with`` block takes as ``out[phase]``."""
    start = time.perf_counter()
    yield
    out[phase] = time.perf_counter() - start


def _uids_and_provenance(
    pipeline: Pipeline, data: PipelineInput
) -> tuple[ResultUIDs, ResultProvenance]:
    """The result UIDs and provenance the worker would give this pipeline's job on ``data``."""
    from core import __version__
    from core.uids import ResultUIDs
    from pipelines.outputs.provenance import ResultProvenance

    spec = pipeline.spec
    ds0 = data.datasets[0]
    uids = ResultUIDs.for_job(
        study_uid=ds0.StudyInstanceUID,
        series_uid=ds0.SeriesInstanceUID,
        pipeline=spec.name,
        version=spec.version,
        key="bench",
    )
    provenance = ResultProvenance(
        node_version=__version__,
        pipeline_name=spec.name,
        pipeline_version=spec.version,
        device_serial_number="BENCH",
        parameters=dict(pipeline.parameters),
        algorithm_family=pipeline.algorithm_family,
    )
    return uids, provenance


def phases_once(paths: list[Path]) -> dict[str, float]:
    """Time the job's compute phases once in this process: load, inference, SEG/SR build, write."""
    from core.files import write_durably
    from pipelines.base import measure_segments
    from pipelines.io import load_series
    from pipelines.outputs import ReportHeader, build_measurement_report, build_segmentation
    from pipelines.registry import load_pipeline

    out: dict[str, float] = {}
    pipeline = load_pipeline("ct-lungs")
    with _clock(out, "load"):
        data = load_series(paths)
    with _clock(out, "inference"):
        result = pipeline.run(data)
    with _clock(out, "measure"):
        measurements = measure_segments(data, result)
    uids, provenance = _uids_and_provenance(pipeline, data)
    with _clock(out, "seg_build"):
        seg = build_segmentation(
            data,
            result,
            series_instance_uid=uids.seg_series,
            sop_instance_uid=uids.seg_instance,
            series_number=9901,
            provenance=provenance,
        )
    with _clock(out, "sr_build"):
        sr = build_measurement_report(
            data,
            measurements,
            seg,
            ReportHeader(
                series_instance_uid=uids.sr_series,
                sop_instance_uid=uids.sr_instance,
                series_number=9902,
                provenance=provenance,
            ),
            intensity_unit=pipeline.intensity_unit,
        )
    with tempfile.TemporaryDirectory() as folder, _clock(out, "write"):
        for name, dataset in (("seg", seg), ("sr", sr)):
            write_durably(
                Path(folder) / f"{name}.dcm",
                lambda handle, d=dataset: d.save_as(handle, enforce_file_format=True),
            )
    return out


def phases(paths: list[Path], runs: int = RUNS) -> dict[str, Any]:
    """Medians of :func:`phases_once` over ``runs`` runs."""
    samples = [phases_once(paths) for _ in range(runs)]
    return {key: round(median([s[key] for s in samples]), 3) for key in samples[0]} | {"runs": runs}


if __name__ == "__main__":
    import json
    import sys

    from bench.common import study_dir, study_files

    slices = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(json.dumps(phases(study_files(study_dir(slices)), runs=1)))
