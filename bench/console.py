"""Console page times with 100,000 jobs in the database (target: every page <= 200 ms).

Fills a fresh database (SQLite file, and PostgreSQL on 127.0.0.1 unless
``BENCH_CONSOLE_DATABASES=sqlite``) with ``BENCH_CONSOLE_JOBS`` jobs (default
100,000; one study, series, SEG + SR and their deliveries each, 2 % failed),
then asks each page ``BENCH_CONSOLE_REPEATS`` times (default 20) through the
ASGI application in process and reports the median and p95 per page; the
target is judged on the pages, ``/metrics`` (a scrape) is reported beside them.
PostgreSQL's statistics are gathered after the load (``ANALYZE``, as autovacuum
does soon after); SQLite runs without (the node never analyses it).
``python -m bench.console``; results go to ``bench/results/console.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from core.config import Settings, load_settings
from core.db.migrate import upgrade
from core.db.models import (
    Delivery,
    DeliveryState,
    Job,
    JobEvent,
    JobState,
    Result,
    Role,
    Series,
    Study,
    StudyState,
    utcnow,
)
from core.db.session import make_engine, make_session_factory, session_scope
from scheduler.dispatch import Dispatcher
from web.actions import Actions
from web.app import create_app
from web.users import add_user

RESULTS = Path(__file__).resolve().parent / "results" / "console.json"
DESTINATION = "PACS@127.0.0.1:104"
PASSWORD = "bench-console-password"
TARGET_MS = 200.0
BATCH = 5_000


class NoQueue:
    """The bench only reads pages: nothing is enqueued."""

    def send_task(self, *_args: Any, **_kwargs: Any) -> None:
        """Ignore the task."""


@dataclass(frozen=True)
class _BenchJob:
    """The facts the rows of one bench job ``index`` are made of (ids are ``index + 1``)."""

    index: int
    now: datetime

    @property
    def ident(self) -> int:
        """The id of the job and of its study and series."""
        return self.index + 1

    @property
    def failed(self) -> bool:
        """One job in 50 failed (its deliveries too)."""
        return self.index % 50 == 0

    @property
    def received(self) -> datetime:
        """When its series arrived: one job a minute, up to a minute ago for job 99,999."""
        return self.now - timedelta(seconds=60 * (100_000 - self.index))

    @property
    def uid(self) -> str:
        """Its Study Instance UID, the root of the other UIDs."""
        return f"1.2.826.0.1.3680043.10.543.{self.ident}"

    def at(self, seconds: int) -> datetime:
        """``seconds`` after its series arrived."""
        return self.received + timedelta(seconds=seconds)


def _study_row(job: _BenchJob) -> dict[str, Any]:
    """The job's study: routed 10 s after it arrived; 20,000 patients in all."""
    return {
        "id": job.ident,
        "study_instance_uid": job.uid,
        "state": StudyState.ROUTED,
        "first_received_at": job.received,
        "last_received_at": job.received,
        "routed_at": job.at(10),
        "accession_number": f"A{job.ident:07d}",
        "patient_id": f"P{job.ident % 20_000:06d}",
    }


def _series_row(job: _BenchJob) -> dict[str, Any]:
    """The job's CT series of 120 instances, from one of seven modalities."""
    return {
        "id": job.ident,
        "study_id": job.ident,
        "series_instance_uid": f"{job.uid}.1",
        "modality": "CT",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
        "calling_ae": f"MOD{job.index % 7}",
        "instance_count": 120,
        "last_received_at": job.received,
    }


def _job_row(job: _BenchJob) -> dict[str, Any]:
    """The job itself, of one of three pipelines in turn, finished 20 s after its series."""
    return {
        "id": job.ident,
        "study_id": job.ident,
        "series_id": job.ident,
        "rule_name": "ct-default",
        "pipeline": ("ct-lungs", "mr-brain", "cxr-classify")[job.index % 3],
        "pipeline_version": "1.0.0",
        "queue": "cpu",
        "input_key": f"k{job.ident}",
        "state": JobState.FAILED if job.failed else JobState.SUCCEEDED,
        "attempts": 1,
        "error": "pipeline error" if job.failed else None,
        "created_at": job.at(10),
        "enqueued_at": job.at(10),
        "started_at": job.at(11),
        "finished_at": job.at(20),
        "queue_wait_seconds": 1.0,
        "load_seconds": 2.0,
        "inference_seconds": 5.0,
        "write_seconds": 1.0,
    }


def _result_rows(job: _BenchJob) -> list[dict[str, Any]]:
    """The job's two results, a SEG and an SR (ids ``2 * ident`` and ``2 * ident + 1``)."""
    return [
        {
            "id": 2 * job.ident + offset,
            "job_id": job.ident,
            "kind": kind,
            "seg_type": "BINARY",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.66.4",
            "sop_instance_uid": f"{job.uid}.{offset + 2}",
            "series_instance_uid": f"{job.uid}.{offset + 4}",
            "path": f"/spool/results/{job.ident}/{kind}.dcm",
            "size_bytes": 1000,
            "created_at": job.at(20),
        }
        for offset, kind in enumerate(("seg", "sr"))
    ]


def _delivery_rows(job: _BenchJob) -> list[dict[str, Any]]:
    """One delivery of each result to :data:`DESTINATION`, failed when the job failed."""
    return [
        {
            "result_id": 2 * job.ident + offset,
            "destination": DESTINATION,
            "state": DeliveryState.FAILED if job.failed else DeliveryState.SUCCEEDED,
            "attempts": 1,
            "created_at": job.at(20),
            "delivered_at": None if job.failed else job.at(25),
            "send_seconds": 0.5,
        }
        for offset in range(2)
    ]


def _rows(index: int, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The rows of bench job ``index`` by table (ids ``index + 1``; two results and deliveries)."""
    job = _BenchJob(index, now)
    return {
        "studies": [_study_row(job)],
        "series": [_series_row(job)],
        "jobs": [_job_row(job)],
        "job_events": [
            {"job_id": job.ident, "at": job.at(10), "state": "queued"},
            {"job_id": job.ident, "at": job.at(20), "state": "succeeded"},
        ],
        "results": _result_rows(job),
        "deliveries": _delivery_rows(job),
    }


TABLES = {
    "studies": Study,
    "series": Series,
    "jobs": Job,
    "job_events": JobEvent,
    "results": Result,
    "deliveries": Delivery,
}


def fill(factory: sessionmaker[Session], jobs: int) -> float:
    """Insert ``jobs`` jobs with their rows in batches; returns the seconds it took."""
    start = time.perf_counter()
    now = utcnow()
    for first in range(0, jobs, BATCH):
        batch: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        for index in range(first, min(first + BATCH, jobs)):
            for name, rows in _rows(index, now).items():
                batch[name].extend(rows)
        with session_scope(factory) as session:
            for name, model in TABLES.items():
                session.execute(insert(model), batch[name])
    with session_scope(factory) as session:
        add_user(session, "bench", PASSWORD, Role.VIEWER)
        if session.get_bind().dialect.name == "postgresql":
            # What autovacuum does within a minute of such a load: plans need the statistics.
            session.execute(text("ANALYZE"))
    return time.perf_counter() - start


def pages(jobs: int) -> dict[str, str]:
    """The pages timed, by name."""
    middle = jobs // 2
    return {
        "overview": "/",
        "overview fragment": "/?fragment",
        "jobs": "/jobs",
        "jobs failed": "/jobs?state=failed",
        "jobs by pipeline+day": "/jobs?pipeline=mr-brain&date=" + utcnow().date().isoformat(),
        "jobs by calling AE": "/jobs?calling_ae=MOD3",
        "jobs by destination": f"/jobs?destination={DESTINATION}",
        "search accession": f"/jobs?q=A{middle:07d}",
        "search patient ID": "/jobs?q=P000123",
        "jobs page 1000": f"/jobs?before={middle}",
        "job": f"/jobs/{middle}",
        "studies": "/studies",
        "destinations": "/destinations",
        "audit": "/audit",
        "metrics": "/metrics",
    }


def time_pages(
    settings: Settings, factory: sessionmaker[Session], jobs: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Median and p95 milliseconds of each page over ``repeats`` requests."""
    app = create_app(settings, Actions(Dispatcher(NoQueue(), factory, settings)))  # type: ignore[arg-type]
    out = {}
    with TestClient(app) as client:
        token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
        client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
        for name, path in pages(jobs).items():
            headers = {"HX-Request": "true"} if path.endswith("?fragment") else {}
            url = path.removesuffix("?fragment")
            assert client.get(url, headers=headers).status_code == 200, name  # warm
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                response = client.get(url, headers=headers)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (name, response.status_code)
            ordered = sorted(times)
            out[name] = {
                "median_ms": round(statistics.median(ordered), 1),
                "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 1),
            }
    return out


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    """A fresh database URL of ``kind`` (sqlite or postgresql), dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'console-bench.db'}"
        return
    from tests.support.services import fresh_postgres_database

    url, drop = fresh_postgres_database("ainode_console_bench")
    try:
        yield url
    finally:
        drop()


def run(
    kinds: list[str], jobs: int, repeats: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Fill and time each database kind; returns the results (also for the report)."""
    results: dict[str, Any] = {"jobs": jobs, "repeats": repeats, "target_ms": TARGET_MS}
    for kind in kinds:
        with tempfile.TemporaryDirectory() as folder, database(kind, Path(folder)) as url:
            # /metrics is timed rendering every scrape, as with the cache off.
            settings = load_settings(
                spool_dir=Path(folder) / "var",
                database_url=url,
                destinations=DESTINATION,
                metrics_cache_seconds=0,
            )
            settings.spool_path.mkdir(parents=True)
            upgrade(url)
            engine = make_engine(url)
            factory = make_session_factory(engine)
            filled = fill(factory, jobs)
            log(f"{kind}: {jobs} jobs inserted in {filled:.1f} s")
            timed = time_pages(settings, factory, jobs, repeats)
            engine.dispose()
        worst = max(page["p95_ms"] for name, page in timed.items() if name != "metrics")
        results[kind] = {"fill_seconds": round(filled, 1), "pages": timed, "worst_p95_ms": worst}
        for name, page in timed.items():
            log(f"  {name:24s} median {page['median_ms']:7.1f} ms  p95 {page['p95_ms']:7.1f} ms")
        verdict = "met" if worst <= TARGET_MS else "MISSED"
        log(f"{kind}: worst page p95 {worst:.1f} ms ({verdict}; /metrics is a scrape, not a page)")
    return results


def main() -> None:
    """Run with the environment's knobs and write ``bench/results/console.json``."""
    kinds = os.environ.get("BENCH_CONSOLE_DATABASES", "sqlite,postgresql").split(",")
    jobs = int(os.environ.get("BENCH_CONSOLE_JOBS", "100000"))
    repeats = int(os.environ.get("BENCH_CONSOLE_REPEATS", "20"))
    results = run([kind.strip() for kind in kinds if kind.strip()], jobs, repeats)
    results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["cpus"] = os.cpu_count()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
