"""The console bench runs end to end on a small database (its figures are not judged here)."""

from __future__ import annotations

from bench.console import pages, run


def test_console_bench_times_every_page_on_a_small_database() -> None:
    results = run(["sqlite"], jobs=120, repeats=2, log=lambda _line: None)
    timed = results["sqlite"]["pages"]
    assert set(timed) == set(pages(120))
    assert all(
        page["median_ms"] > 0 and page["p95_ms"] >= page["median_ms"] for page in timed.values()
    )
