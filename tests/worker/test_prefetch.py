"""Prefetching the next job's input: used only by its own job, never needed for correctness."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

from core.db.models import utcnow
from pipelines.phantom import generate_ct_phantom
from scheduler.dispatch import Dispatcher
from worker.prefetch import InputPrefetcher
from worker.runtime import WorkerRuntime
from worker.tasks.inference import JobOutcome, _upcoming, execute_job

from .conftest import RecordingApp, SpoolStudy


class CountingLoader:
    """Loads by returning the paths; counts calls; fails for paths named ``bad``."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, paths: list[Path]) -> list[Path]:
        self.calls += 1
        if any(path.name == "bad" for path in paths):
            raise ValueError("unreadable")
        return paths


def test_prefetched_input_goes_only_to_its_own_job() -> None:
    loader = CountingLoader()
    prefetcher = InputPrefetcher(loader)
    prefetcher.prefetch(7, "key", [Path("a")])
    assert prefetcher.take(7, "other-key", [Path("b")]) == ([Path("b")], False)
    assert prefetcher.take(7, "key", [Path("a")]) == ([Path("a")], True)
    assert prefetcher.take(7, "key", [Path("a")]) == ([Path("a")], False)  # used once
    assert loader.calls == 3  # prefetch, the other key, the second take
    prefetcher.shutdown()


def test_failed_prefetch_reloads_and_raises_like_a_normal_load() -> None:
    loader = CountingLoader()
    prefetcher = InputPrefetcher(loader)
    prefetcher.prefetch(1, "key", [Path("bad")])
    with pytest.raises(ValueError, match="unreadable"):
        prefetcher.take(1, "key", [Path("bad")])
    assert loader.calls == 2
    prefetcher.shutdown()


def test_worker_prefetches_the_next_queued_job(
    settings, session_factory, spool_study: SpoolStudy, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = Dispatcher(RecordingApp(), session_factory, settings)
    later = utcnow() + timedelta(seconds=settings.stability_seconds + 1)
    job_ids = []
    for seed in (1, 2):
        study = generate_ct_phantom(
            slices=12, rows=48, columns=48, pixel_spacing=8.0, slice_thickness=8.0, seed=seed
        )
        outcome = dispatcher.route_study(spool_study(study), now=later)
        assert outcome is not None
        job_ids += outcome.new_job_ids
    runtime = WorkerRuntime.from_settings(settings)
    with caplog.at_level(logging.INFO, logger="worker.tasks.inference"):
        assert execute_job(runtime, job_ids[0]) == JobOutcome.SUCCEEDED
        assert execute_job(runtime, job_ids[1]) == JobOutcome.SUCCEEDED
    prefetched = [r.message for r in caplog.records if "prefetched" in r.message]
    assert prefetched == [f"job {job_ids[1]}: input was prefetched during the previous job"]


def test_prefetch_can_be_switched_off(make_settings, session_factory) -> None:
    runtime = WorkerRuntime.from_settings(make_settings(prefetch=False))
    assert _upcoming(runtime, 1) is None
