"""Fault 8: the pipeline cannot analyse one study while a good one arrives at the same time.

Three broken series (five slices missing in the middle, only two slices, no
pixel data) are sent concurrently with a good study.  Each broken one fails
its job with a clear reason in the database (and ``ainode status --json``);
the good one succeeds and its SEG and SR reach the destination.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.support.dcmtk import StoreSCP
from tests.support.faults import NodeDB, StartNode, alive, send_files, write_study
from tests.support.node import NodeProcesses
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

# Any CT series of at least one instance goes to ct-lungs (the default needs 3).
RULES = json.dumps(
    [{"name": "ct-any", "pipeline": "ct-lungs", "modality": ["CT"], "min_instances": 1}]
)


def _without_pixels(files: list[Path], folder: Path) -> list[Path]:
    folder.mkdir()
    out = []
    for path in files:
        dataset = dcmread(path)
        del dataset.PixelData
        target = folder / path.name
        dataset.save_as(target, enforce_file_format=True)
        out.append(target)
    return out


def test_broken_series_fail_with_reason_while_good_study_succeeds(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    good, good_files = write_study(tmp_path / "good", seed=81)
    gap, gap_files = write_study(tmp_path / "gap", seed=82)
    two, two_files = write_study(tmp_path / "two", seed=83)
    bare, bare_files = write_study(tmp_path / "bare", seed=84, slices=10)
    sends = {
        good.study_instance_uid: good_files,
        gap.study_instance_uid: gap_files[:12] + gap_files[17:],
        two.study_instance_uid: two_files[10:12],
        bare.study_instance_uid: _without_pixels(bare_files, tmp_path / "bare-nopixels"),
    }
    with StoreSCP(aet="RESULTS") as results:
        node = make_node(
            {
                "AINODE_DESTINATIONS": f"RESULTS@127.0.0.1:{results.port}",
                "AINODE_ROUTING_RULES": RULES,
            }
        )
        serve, (worker,) = start_node(node)
        with ThreadPoolExecutor(len(sends)) as pool:
            statuses = pool.map(lambda paths: send_files(node.port, paths), sends.values())
            outcomes = dict(zip(sends, statuses, strict=True))
        # Images without pixel data are refused at receive time: the sender learns at once.
        assert set(outcomes.pop(bare.study_instance_uid)) == {0xC000}
        for statuses in outcomes.values():
            assert set(statuses) == {0x0000}, statuses

        db = open_db(node)
        jobs = wait_until(
            lambda: (
                len(jobs := db.jobs()) == 3
                and all(j["state"] in ("succeeded", "failed") for j in jobs)
                and jobs
            ),
            timeout=90,
            message=lambda: f"{db.jobs()}\n{node.logs()[-4000:]}",
        )
        by_study = {job["study_uid"]: job for job in jobs}
        assert by_study[good.study_instance_uid]["state"] == "succeeded", jobs
        expectations = {
            gap.study_instance_uid: "missing slices",
            two.study_instance_uid: "2 slice(s); at least 3 are needed for a volume",
        }
        for study_uid, reason in expectations.items():
            job = by_study[study_uid]
            assert job["state"] == "failed", job
            assert reason in (job["error"] or ""), job
            assert job["attempts"] == 1, f"an input error must not be retried: {job}"

        shown = {row["job"]: row for row in node.status()["jobs"]}
        for study_uid, reason in expectations.items():
            row = shown[str(by_study[study_uid]["id"])]
            assert row["state"] == "failed" and reason in row["error"], row

        results.wait_for_files(2, timeout=60)
        wait_until(
            lambda: (d := db.deliveries()) and all(x["state"] == "succeeded" for x in d) and d,
            timeout=30,
        )
        assert {d["study_uid"] for d in db.deliveries()} == {good.study_instance_uid}
        assert len(results.received_files()) == 2
        assert alive(serve) and alive(worker)
