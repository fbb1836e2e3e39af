"""Bench-only hook: time SEG and SR building inside the node's worker process.

``bench/ttr.py`` puts this folder first on ``PYTHONPATH`` of the node's
processes and sets ``AINODE_BENCH_TIMINGS`` to a file; in ``ainode worker``
the two output builders are wrapped to append one JSON line per call
(``{"what": "seg_build", "seconds": ..., "sop": ...}``).  Nothing else
changes; without the variable this does nothing.
"""

from __future__ import annotations

import os
import sys

_PATH = os.environ.get("AINODE_BENCH_TIMINGS")

if _PATH and "worker" in sys.argv:
    import functools
    import json
    import time

    import pipelines.outputs as outputs

    def _series_uid(args, kwargs):
        """The new object's series UID: a keyword of the SEG builder, in the SR's header."""
        headers = [item for item in args if isinstance(item, outputs.ReportHeader)]
        return kwargs.get("series_instance_uid") or (
            headers[0].series_instance_uid if headers else ""
        )

    def _timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            line = {
                "what": name,
                "seconds": time.perf_counter() - start,
                "series": str(_series_uid(args, kwargs)),
                "at": time.time(),
            }
            with open(_PATH, "a") as handle:
                handle.write(json.dumps(line) + "\n")
            return result

        return wrapper

    outputs.build_segmentation = _timed("seg_build", outputs.build_segmentation)
    outputs.build_measurement_report = _timed("sr_build", outputs.build_measurement_report)
