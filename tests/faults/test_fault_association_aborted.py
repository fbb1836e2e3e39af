"""Fault 7: associations that end in the middle of a dataset.

One sender stores fifteen instances and then sends an A-ABORT halfway through
the sixteenth; a second stores the next fourteen and then resets the TCP
connection in the middle of a P-DATA PDU (SO_LINGER 0).  A third, a pynetdicom
client, aborts between two instances.  The complete instances are kept, the
partial ones are discarded (nothing left in ``<spool>/tmp``), the node stays
up, and the study is processed once it is stable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pynetdicom import AE

from tests.support.faults import (
    NodeDB,
    StartNode,
    alive,
    echo_ok,
    sop_uid,
    spool_leftovers,
    write_study,
)
from tests.support.node import NodeProcesses
from tests.support.raw_dicom import Part10, RawAssociation
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e


def test_aborted_and_reset_associations_keep_complete_instances_only(
    make_node: Callable[..., NodeProcesses],
    start_node: StartNode,
    open_db: Callable[[NodeProcesses], NodeDB],
    tmp_path: Path,
) -> None:
    study, files = write_study(tmp_path / "ct", seed=71)
    items = [Part10.read(path) for path in files]
    # A short network timeout: an abandoned receive file may be kept that long (x2).
    node = make_node({"AINODE_STABILITY_SECONDS": "3", "AINODE_NETWORK_TIMEOUT_SECONDS": "3"})
    spool = node.workdir / "var"
    serve, (worker,) = start_node(node)
    db = open_db(node)

    # A-ABORT halfway through instance 16.
    first = RawAssociation(node.port, abstract_syntaxes=(items[0].sop_class,)).connect()
    for item in items[:15]:
        assert first.c_store(item) == 0x0000
    first.c_store_partial(items[15], fraction=0.5)
    wait_until(lambda: any((spool / "tmp").glob("*")), timeout=10)
    first.abort()

    # TCP reset in the middle of the P-DATA PDU carrying instance 30.
    second = RawAssociation(node.port, abstract_syntaxes=(items[0].sop_class,)).connect()
    for item in items[15:29]:
        assert second.c_store(item) == 0x0000
    second.send_truncated_pdu(items[29], fraction=0.5)
    wait_until(lambda: any((spool / "tmp").glob("*")), timeout=10)
    second.reset()

    # pynetdicom: an A-ABORT between two instances of another association.
    ae = AE(ae_title="ABORTSCU")
    ae.add_requested_context(items[0].sop_class, items[0].transfer_syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="AINODE")
    assert assoc.is_established
    assert assoc.send_c_store(files[0]).Status == 0x0000
    assoc.abort()

    wait_until(
        lambda: spool_leftovers(spool) == [],
        timeout=20,
        message=lambda: f"partial files left behind: {spool_leftovers(spool)}",
    )
    assert alive(serve) and echo_ok(node.port)

    complete = {sop_uid(path) for path in files[:29]}
    assert db.instance_uids(study.study_instance_uid) == complete
    wait_until(
        lambda: (jobs := db.jobs()) and jobs[0]["state"] in ("succeeded", "failed"),
        timeout=60,
        message=lambda: f"{db.jobs()}\n{node.logs()[-4000:]}",
    )
    jobs = db.jobs()
    assert len(jobs) == 1 and jobs[0]["state"] == "succeeded", jobs
    assert alive(serve) and alive(worker)
    assert spool_leftovers(spool) == []
