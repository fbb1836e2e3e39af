"""Fault 6: the spool's file system is full.

The spool is a small tmpfs mounted by the test and filled with a filler file.
A C-STORE must then be answered 0xA700 (Out of Resources), leave nothing
half-written behind (no ``*.partial``, nothing in ``<spool>/tmp``) and record
nothing; once the filler is deleted the next store succeeds without a restart.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.faults import (
    NodeDB,
    StartNode,
    alive,
    echo_ok,
    send_files,
    sop_uid,
    spool_leftovers,
    spooled_instances,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

OUT_OF_RESOURCES = 0xA700


def _fill(folder: Path) -> Path:
    """Write a filler file until the file system reports ENOSPC (then fill the rest bytewise)."""
    filler = folder / "filler.bin"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            block = b"\xff" * size
            while True:
                try:
                    handle.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    return filler


def test_disk_full_answers_out_of_resources_leaves_nothing_and_recovers(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    study, files = write_study(tmp_path / "ct", seed=61)
    before, during = files[:3], files[3:6]
    node = make_node(
        {
            "AINODE_DATABASE_URL": f"sqlite:///{tmp_path / 'node.db'}",
            "AINODE_STABILITY_SECONDS": "3600",
        }
    )
    spool = node.workdir / "var"
    spool.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(spool)], check=True
    )
    try:
        serve, _ = start_node(node, workers=0)
        db = open_db(node)
        assert send_files(node.port, before) == [0x0000] * len(before)

        filler = _fill(spool)
        assert os.statvfs(spool).f_bavail == 0
        statuses = send_files(node.port, during)
        assert statuses == [OUT_OF_RESOURCES] * len(during), [
            None if s is None else hex(s) for s in statuses
        ]
        wait_until(
            lambda: spool_leftovers(spool) == [],
            timeout=5,
            message=lambda: f"half-written files left: {spool_leftovers(spool)}",
        )
        recorded = db.instance_uids(study.study_instance_uid)
        assert recorded == {sop_uid(p) for p in before}, "a failed store was recorded"
        assert {p.stem for p in spooled_instances(spool)} == recorded
        assert alive(serve) and echo_ok(node.port)

        filler.unlink()
        assert send_files(node.port, during) == [0x0000] * len(during)
        assert db.instance_uids(study.study_instance_uid) == {
            sop_uid(p) for p in [*before, *during]
        }
        assert spool_leftovers(spool) == []
    finally:
        node.stop()
        subprocess.run(["umount", str(spool)], check=False)
        if os.path.ismount(spool):
            subprocess.run(["umount", "-l", str(spool)], check=False)
