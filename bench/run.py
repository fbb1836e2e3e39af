"""``make bench``: every benchmark against real peers, then the report.

Knobs (environment): ``BENCH_QUICK=1`` smaller studies and fewer of them;
``BENCH_RUNS`` repetitions per figure (default 3, medians reported);
``BENCH_DATA_DIR`` where studies and peers' storage go (default the temp
folder; ~4 GB of studies and up to ~4 GB of set-aside runs, removed at the end
unless ``BENCH_KEEP=1``);
``BENCH_ONLY=ingest,ttr,seg,backlog`` a subset.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.common import DATA_DIR, QUICK, RESULTS_DIR, RUNS


def _versions() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    import highdicom
    import pydicom
    import pynetdicom

    return {
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
        "pynetdicom": pynetdicom.__version__,
        "highdicom": highdicom.__version__,
        "orthanc": first_line(["/usr/sbin/Orthanc", "--version"]),
        "dcmtk": first_line(["storescp", "--version"]),
        "cpus": str(os.cpu_count()),
    }


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def main() -> int:
    """Run the sections ``BENCH_ONLY`` names (all by default) and write the results and report."""
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    results: dict[str, Any] = {
        "started": _utc_now(),
        "quick": QUICK,
        "runs": RUNS,
        "versions": _versions(),
    }
    previous = RESULTS_DIR / "latest.json"
    if only and previous.exists():  # a subset refreshes its part of the last full run
        results = {**json.loads(previous.read_text()), **results}

    def step(name: str, fn: Any) -> None:
        if only and name not in only:
            return
        print(f"[bench] {name} ...", flush=True)
        start = time.perf_counter()
        started = _utc_now()
        load_before = os.getloadavg()
        results[name] = fn()
        results.setdefault("load_average", {})[name] = [
            round(load_before[0], 2),
            round(os.getloadavg()[0], 2),
        ]
        # A BENCH_ONLY run keeps the other sections of the last run: say when each one ran.
        results.setdefault("section_times", {})[name] = [started, _utc_now()]
        print(f"[bench] {name} done in {time.perf_counter() - start:.0f} s", flush=True)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        previous.write_text(json.dumps(results, indent=2) + "\n")

    from bench import backlog, ingest, segwriter, ttr

    step("ingest", ingest.run)
    step(
        "ttr",
        lambda: [ttr.time_to_result(n, RUNS) for n in ((100, 300) if QUICK else (100, 300, 1000))],
    )
    step("seg", segwriter.run)
    step("backlog", backlog.run)
    results["finished"] = _utc_now()
    previous.write_text(json.dumps(results, indent=2) + "\n")

    from bench.report import write_report

    write_report(results, RESULTS_DIR)
    if os.environ.get("BENCH_KEEP", "") in ("", "0"):
        shutil.rmtree(DATA_DIR, ignore_errors=True)
    print(f"[bench] results in {RESULTS_DIR}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
