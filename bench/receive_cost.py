"""The receive path's cost per instance, two commits of the node side by side.

Checks out ``BENCH_BEFORE`` and ``BENCH_AFTER`` (default ``HEAD``) into
temporary git worktrees and, round after round in alternating order, starts
each one's ``ainode serve`` (SQLite, no study goes stable during the run) and
sends it the 300-slice 512x512 CT study with one dcmtk ``storescu`` association; the
figure is the CPU the serve process spent per instance while the study
arrived (user + system, from ``/proc``).  Interleaving is what makes the two
comparable on a shared machine: both see the same noise.  ``BENCH_RUNS``
rounds (default 12); results go to ``bench/results/receive_cost.json``.
``python -m bench.receive_cost`` (both commits use this checkout's virtual
environment).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.common import RESULTS_DIR, scratch, send_parallel, study_dir, study_files
from tests.support.node import NodeProcesses

REPOSITORY = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    """Run ``git args`` in this repository; its output (a failure raises)."""
    out = subprocess.run(
        ["git", "-C", str(REPOSITORY), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """A temporary checkout of ``revision`` (its folder and git's record of it removed after)."""
    try:
        with tempfile.TemporaryDirectory(prefix="ainode-rev-") as parent:
            folder = Path(parent) / "tree"
            _git("worktree", "add", "--detach", str(folder), revision)
            yield folder
    finally:
        _git("worktree", "prune")  # the folder is gone: git forgets the checkout


class CheckedOutNode(NodeProcesses):
    """``ainode`` processes run from another checkout of the node."""

    def __init__(self, tree: Path, workdir: Path) -> None:
        super().__init__(workdir, env={"AINODE_STABILITY_SECONDS": "3600"})
        # ``python -m`` looks in the working folder first, so the checkout's code is what runs.
        self.source_root = tree
        # The command line moved from core/ to app/ (issue 21); older commits have core.cli.
        self.entry_module = "app.cli" if (tree / "app" / "cli.py").exists() else "core.cli"


def cpu_per_instance_ms(tree: Path, files: list[Path]) -> float:
    """Milliseconds of the serve process's CPU per instance while ``files`` arrive."""
    # A set-aside folder, not a deleted one: see bench.common.scratch (ext4's inode scan).
    with CheckedOutNode(tree, scratch("receive-cost")) as node:
        node.cli("db", "upgrade")
        process = node.start("serve")
        node.wait_listening()
        time.sleep(1.0)  # past start-up: only the receive path is measured
        assert process.pid is not None
        serve = psutil.Process(process.pid)
        before = serve.cpu_times()
        send_parallel(node.port, "AINODE", files)
        after = serve.cpu_times()
        spent = (after.user + after.system) - (before.user + before.system)
        return 1000.0 * spent / len(files)


def _commit(revision: str) -> str:
    """The short hash ``revision`` names now (a run is identified by the commits it measured)."""
    return _git("rev-parse", "--short", revision)


def run(before: str, after: str, rounds: int) -> dict[str, Any]:
    """``rounds`` interleaved measurements of each revision; every figure and a summary."""
    files = study_files(study_dir(300))
    figures: dict[str, list[float]] = {"before": [], "after": []}
    with worktree(before) as old, worktree(after) as new:
        trees = {"before": old, "after": new}
        for number in range(rounds):
            order = ["before", "after"] if number % 2 == 0 else ["after", "before"]
            for name in order:
                figures[name].append(cpu_per_instance_ms(trees[name], files))
            print(f"round {number}: " + ", ".join(f"{n} {figures[n][-1]:.3f} ms" for n in order))
    differences = [a - b for a, b in zip(figures["after"], figures["before"], strict=True)]
    spread = statistics.stdev(differences) / len(differences) ** 0.5 if rounds > 1 else 0.0
    base = statistics.mean(figures["before"])
    return {
        "before": f"{before} ({_commit(before)})",
        "after": f"{after} ({_commit(after)})",
        "cpu_ms_per_instance": figures,
        "mean_ms": {name: statistics.mean(values) for name, values in figures.items()},
        "change_percent": 100.0 * statistics.mean(differences) / base,
        "standard_error_percent": 100.0 * spread / base,
    }


def main() -> None:
    """Compare ``BENCH_BEFORE`` with ``BENCH_AFTER`` and write ``receive_cost.json``."""
    results = run(
        os.environ["BENCH_BEFORE"],
        os.environ.get("BENCH_AFTER", "HEAD"),
        int(os.environ.get("BENCH_RUNS", "12")),
    )
    results["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS_DIR / "receive_cost.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"after vs before: {results['change_percent']:+.1f} % "
        f"(standard error {results['standard_error_percent']:.1f} %)"
    )


if __name__ == "__main__":
    main()
