"""Fault 2: the ``serve`` process is SIGKILLed in the middle of an association.

Fifteen instances are stored (each answered with success), the sixteenth is
half transferred when the SCP dies.  After a restart the fifteen are still in
the spool and the database, the half-received file is gone, and when the
sender retries the whole study it completes and is processed once: one job,
one SEG and one SR at the destination.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.faults import (
    SEG_CLASS,
    SR_CLASS,
    NodeDB,
    StartNode,
    kill_hard,
    result_classes,
    send_files,
    sop_uid,
    spool_leftovers,
    spooled_instances,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.orthanc import OrthancServer
from tests.support.raw_dicom import Part10, RawAssociation
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

STORED_BEFORE_KILL = 15


def test_serve_killed_mid_association_keeps_received_and_processes_once(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    study, files = write_study(tmp_path / "ct", seed=21)
    with OrthancServer() as orthanc:
        # Stability is longer than a restart takes, so the study is not routed
        # with only the instances received before the kill.
        node = make_node(
            {
                "AINODE_DESTINATIONS": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
                "AINODE_STABILITY_SECONDS": "6",
            }
        )
        db = open_db(node)
        spool = node.workdir / "var"
        serve, _ = start_node(node)

        sender = RawAssociation(node.port, abstract_syntaxes=(Part10.read(files[0]).sop_class,))
        sender.connect()
        try:
            for path in files[:STORED_BEFORE_KILL]:
                assert sender.c_store(Part10.read(path)) == 0x0000
            sender.c_store_partial(Part10.read(files[STORED_BEFORE_KILL]), fraction=0.6)
            wait_until(
                lambda: any((spool / "tmp").glob("*")),
                timeout=10,
                message="the SCP never started receiving the partial dataset",
            )
            kill_hard(serve)
        finally:
            sender.reset()

        stored = {sop_uid(path) for path in files[:STORED_BEFORE_KILL]}
        assert db.instance_uids(study.study_instance_uid) == stored
        on_disk = spooled_instances(spool)
        assert len(on_disk) == STORED_BEFORE_KILL
        assert {path.stem for path in on_disk} == stored

        node.start("serve")
        node.wait_listening()
        assert spool_leftovers(spool) == [], "start-up left half-received files behind"

        statuses = send_files(node.port, files)
        assert statuses == [0x0000] * len(files), statuses

        wait_until(
            lambda: (
                (jobs := db.jobs())
                and jobs[-1]["state"] == "succeeded"
                and len(db.deliveries()) == 2
                and all(d["state"] == "succeeded" for d in db.deliveries())
            ),
            timeout=90,
            message=lambda: f"{db.jobs()} {db.deliveries()}\n{node.logs()[-4000:]}",
        )
        jobs = db.jobs()
        assert len(jobs) == 1, f"study processed more than once: {jobs}"
        assert db.instance_count(study.study_instance_uid) == len(files)
        classes = wait_until(
            lambda: (
                (found := result_classes(orthanc, study.study_instance_uid))
                and len(found) >= 2
                and found
            ),
            timeout=30,
        )
        assert classes == [SEG_CLASS, SR_CLASS]
        assert spool_leftovers(spool) == []
