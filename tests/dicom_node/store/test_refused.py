"""Refused instances are counted in ``instance_refusals``, and counting never changes the answer.

Real associations (pynetdicom) to a listening SCP; the database is SQLite, or
a private PostgreSQL cluster stopped in the middle of the test.
"""

from __future__ import annotations

import errno
import logging
import time

import pytest
from pydicom import Dataset

from dicom_node.recording.recorder import InstanceRecorder
from dicom_node.store.spool import InstanceSpool
from pipelines.phantom import generate_ct_phantom
from tests.dicom_node.conftest import Node, NodeFactory, associate, store
from tests.support.private_postgres import PrivatePostgres
from tests.support.refusals import refusal_counts
from tests.support.waiting import wait_until

SENDER = "REFUSED_SCU"
SUCCESS, OUT_OF_RESOURCES, MISSING_UIDS = 0x0000, 0xA700, 0xC001


def datasets(seed: int = 3) -> tuple[Dataset, Dataset]:
    """A CT instance without its Series Instance UID (refused 0xC001) and a good one."""
    bad, good = generate_ct_phantom(slices=2, rows=16, columns=16, seed=seed).datasets
    del bad.SeriesInstanceUID
    return bad, good


def statuses(node: Node, *sent: Dataset) -> list[int]:
    """The C-STORE statuses ``node`` answers to ``sent``, in one association from :data:`SENDER`."""
    with associate(node, calling_ae=SENDER) as assoc:
        return [store(assoc, dataset) for dataset in sent]


def refusals(node: Node) -> dict[tuple[int, str, str], int]:
    """The refusals ``node`` counted by status, cause and calling AE."""
    return refusal_counts(node.session_factory)


def test_refused_instances_are_counted_by_status_cause_and_calling_ae(node: Node) -> None:
    bad, good = datasets()

    assert statuses(node, bad, good, bad) == [MISSING_UIDS, SUCCESS, MISSING_UIDS]

    expected = {(MISSING_UIDS, "invalid-instance", SENDER): 2}
    wait_until(lambda: refusals(node) == expected, 10, 0.05)


def test_a_full_spool_disk_is_counted_as_its_own_cause(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(self: InstanceSpool, *_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(InstanceSpool, "commit", disk_full)

    assert statuses(node, datasets()[1]) == [OUT_OF_RESOURCES]

    wait_until(lambda: refusals(node) == {(OUT_OF_RESOURCES, "disk-full", SENDER): 1}, 10, 0.05)


def test_a_failure_to_count_changes_nothing_of_the_answer(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("a fault of the node")

    monkeypatch.setattr(InstanceRecorder, "refused", broken)
    bad, good = datasets()

    with caplog.at_level(logging.ERROR):
        assert statuses(node, bad, good) == [MISSING_UIDS, SUCCESS]

    assert "cannot count a refused instance" in caplog.text
    assert refusals(node) == {}


@pytest.mark.e2e
def test_with_the_database_down_refusals_are_answered_at_once_and_counted_once_it_is_back(
    start_node: NodeFactory,
) -> None:
    with PrivatePostgres() as cluster:
        node = start_node(database_url=cluster.create_database("ainode"))
        bad, good = datasets()

        cluster.stop()
        started = time.monotonic()
        with associate(node, calling_ae=SENDER) as assoc:
            assert store(assoc, bad) == MISSING_UIDS
            assert time.monotonic() - started < 5  # the count waits for no database
            # the node's own fault, refused and counted as such
            assert store(assoc, good) == OUT_OF_RESOURCES

        cluster.start()
        expected = {
            (MISSING_UIDS, "invalid-instance", SENDER): 1,
            (OUT_OF_RESOURCES, "not-recorded", SENDER): 1,
        }
        wait_until(lambda: refusals(node) == expected, 30, 0.2)
