"""The Storage SCP over real loopback associations (pynetdicom and dcmtk as SCUs)."""

from __future__ import annotations

import copy
import errno
import functools
import logging
import socket
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from core.db.models import Instance, Series, Study, StudyState
from dicom_node.recording.recorder import InstanceRecorder
from dicom_node.store.spool import InstanceSpool
from pipelines.phantom import PhantomStudy, generate_ct_phantom, write_phantom
from tests.dicom_node.conftest import SCU_AE, Node, NodeFactory, associate, store
from tests.support.dcmtk import echoscu, storescu
from tests.support.raw_dicom import Part10, RawAssociation, p_data
from tests.support.waiting import wait_until

PATIENT_NAME = "SECRET^NAME"
PATIENT_ID = "SECRETID42"

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900
MISSING_UIDS = 0xC001


@functools.cache
def _phantom(seed: int) -> PhantomStudy:
    return generate_ct_phantom(
        slices=3, rows=16, columns=16, seed=seed, patient_name=PATIENT_NAME, patient_id=PATIENT_ID
    )


def phantom(seed: int = 1) -> PhantomStudy:
    """A small phantom whose datasets the caller may modify."""
    return copy.deepcopy(_phantom(seed))


# --------------------------------------------------------------------- C-ECHO
def test_c_echo(node: Node) -> None:
    with associate(node) as assoc:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == SUCCESS


def test_c_echo_with_dcmtk(node: Node) -> None:
    result = echoscu("127.0.0.1", node.port, node.settings.ae_title)

    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------- C-STORE
def test_c_store_spools_and_records(node: Node) -> None:
    study = phantom()

    with associate(node) as assoc:
        statuses = [store(assoc, ds) for ds in study.datasets]

    assert statuses == [SUCCESS] * 3
    incoming = node.settings.incoming_dir
    expected = {
        ds.SOPInstanceUID: incoming
        / study.study_instance_uid
        / study.series_instance_uid
        / f"{ds.SOPInstanceUID}.dcm"
        for ds in study.datasets
    }
    assert node.spooled_files() == sorted(expected.values())
    assert node.receive_leftovers() == []
    for sop_uid, path in expected.items():
        stored = dcmread(path)
        assert stored.SOPInstanceUID == sop_uid
        assert stored.file_meta.MediaStorageSOPInstanceUID == sop_uid

    with node.session() as session:
        (db_study,) = session.scalars(select(Study)).all()
        assert db_study.study_instance_uid == study.study_instance_uid
        assert db_study.state == StudyState.RECEIVING
        (series,) = db_study.series
        assert series.series_instance_uid == study.series_instance_uid
        assert series.modality == "CT"
        assert series.sop_class_uid == CTImageStorage
        assert series.body_part == "CHEST"
        assert series.series_description == "Chest phantom"
        assert series.calling_ae == SCU_AE
        assert series.instance_count == 3
        instances = {i.sop_instance_uid: i for i in series.instances}
        assert set(instances) == set(expected)
        for sop_uid, instance in instances.items():
            assert instance.sop_class_uid == CTImageStorage
            assert instance.transfer_syntax_uid == ExplicitVRLittleEndian
            assert instance.calling_ae == SCU_AE
            assert instance.times_received == 1
            assert incoming / instance.path == expected[sop_uid]
            assert instance.size_bytes == expected[sop_uid].stat().st_size
            assert instance.size_bytes > 16 * 16 * 2
    assert node.recorded == [db_study.id] * 3


def test_c_store_with_dcmtk_storescu(node: Node, tmp_path: Path) -> None:
    study = phantom(seed=2)
    files = write_phantom(study, tmp_path / "send")

    result = storescu("127.0.0.1", node.port, files, node.settings.ae_title, "DCMTKSCU")

    assert result.returncode == 0, result.stderr
    assert sorted(result.succeeded) == sorted(str(f) for f in files), result.stderr
    assert len(node.spooled_files()) == 3
    with node.session() as session:
        series = session.scalars(select(Series)).one()
        assert series.series_instance_uid == study.series_instance_uid
        assert series.calling_ae == "DCMTKSCU"
        assert series.instance_count == 3


def test_duplicate_instance_is_recorded_once(node: Node) -> None:
    dataset = phantom().datasets[0]

    with associate(node) as assoc:
        assert store(assoc, dataset) == SUCCESS
    with associate(node) as assoc:  # a second association, as a resend would be
        assert store(assoc, dataset) == SUCCESS

    assert len(node.spooled_files()) == 1
    with node.session() as session:
        instance = session.scalars(select(Instance)).one()
        assert instance.sop_instance_uid == dataset.SOPInstanceUID
        assert instance.times_received == 2
        assert session.scalars(select(Series)).one().instance_count == 1
    assert len(node.recorded) == 2


def test_missing_series_uid_rejected_and_association_goes_on(node: Node) -> None:
    bad, good = phantom().datasets[:2]
    del bad.SeriesInstanceUID

    with associate(node) as assoc:
        assert store(assoc, bad) == MISSING_UIDS
        assert node.spooled_files() == []
        assert node.receive_leftovers() == []
        assert node.count(Instance) == 0
        assert node.recorded == []

        assert store(assoc, good) == SUCCESS

    assert len(node.spooled_files()) == 1
    with node.session() as session:
        assert session.scalars(select(Instance.sop_instance_uid)).all() == [good.SOPInstanceUID]


def test_sop_instance_uid_mismatch_rejected(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = phantom().datasets[0]
    claimed = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = claimed
    dataset.preamble = b"\0" * 128
    path = tmp_path / "mismatch.dcm"
    dataset.save_as(path, enforce_file_format=False)  # keep the inconsistent file meta
    assert dcmread(path).file_meta.MediaStorageSOPInstanceUID == claimed
    # Sent from the file, the command's Affected SOP Instance UID is the file meta's.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)

    with associate(node) as assoc:
        assert store(assoc, path) == DOES_NOT_MATCH
        assert store(assoc, phantom().datasets[1]) == SUCCESS

    assert len(node.spooled_files()) == 1
    assert node.count(Instance) == 1


def test_spool_disk_error_answers_out_of_resources(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(self: InstanceSpool, *_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(InstanceSpool, "commit", disk_full)

    with associate(node) as assoc:
        assert store(assoc, phantom().datasets[0]) == OUT_OF_RESOURCES

    assert node.spooled_files() == []
    assert node.receive_leftovers() == []
    assert node.count(Instance) == 0
    assert node.count(Study) == 0
    assert node.recorded == []


def test_database_error_answers_out_of_resources(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(*_args: object, **_kwargs: object) -> int:
        raise OperationalError("INSERT INTO instances", {}, Exception("database is locked"))

    monkeypatch.setattr(InstanceRecorder, "_write_instance", database_down)

    with associate(node) as assoc:
        responses = [assoc.send_c_store(ds) for ds in phantom().datasets]

    assert [int(response.Status) for response in responses] == [OUT_OF_RESOURCES] * 3
    # the sender's operator is told why (the cause's type, never its text: it may hold values)
    assert {response.ErrorComment for response in responses} == {
        "database unavailable (OperationalError)"
    }
    assert node.count(Instance) == 0
    assert node.recorded == []
    assert node.spooled_files() == []


def test_a_recording_fault_fails_that_instance_and_the_association_goes_on(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault of the node while recording is answered like a database failure, not an abort."""
    study = phantom()
    faulty = study.datasets[1].SOPInstanceUID
    write_instance = InstanceRecorder._write_instance

    def fault_on_one(self: InstanceRecorder, connection, item, series_id, now) -> int:
        if item.sop_instance_uid == faulty:
            raise RuntimeError("a fault of the node")
        return write_instance(self, connection, item, series_id, now)

    monkeypatch.setattr(InstanceRecorder, "_write_instance", fault_on_one)

    with associate(node) as assoc:
        responses = [assoc.send_c_store(ds) for ds in study.datasets]

    assert [int(response.Status) for response in responses] == [SUCCESS, OUT_OF_RESOURCES, SUCCESS]
    assert responses[1].ErrorComment == "recording failed"
    assert node.count(Instance) == 2
    assert len(node.spooled_files()) == 2


@pytest.mark.filterwarnings("ignore:The value length .* exceeds the maximum length")
def test_overlong_uid_is_rejected_not_recorded(node: Node) -> None:
    dataset = phantom().datasets[0]
    dataset.SeriesInstanceUID = "1." + "2" * 70

    with associate(node) as assoc:
        assert store(assoc, dataset) == 0xC002
        assert store(assoc, phantom().datasets[1]) == SUCCESS

    assert node.count(Instance) == 1


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_hostile_study_uid_stays_inside_the_spool(node: Node) -> None:
    dataset = phantom().datasets[0]
    dataset.StudyInstanceUID = "../../../etc"

    with associate(node) as assoc:
        assert store(assoc, dataset) == SUCCESS

    (path,) = node.spooled_files()
    assert path.is_relative_to(node.settings.incoming_dir)
    assert path.relative_to(node.settings.incoming_dir).parts[0].startswith("x")
    with node.session() as session:
        assert session.scalars(select(Study.study_instance_uid)).one() == "../../../etc"


# --------------------------------------------------------------------- association checks
def test_unknown_calling_ae_rejected_when_allow_list_set(start_node: NodeFactory) -> None:
    node = start_node(allowed_callers="MODALITY,OTHER@10.0.0.9")

    with associate(node, calling_ae="INTRUDER") as assoc:
        assert assoc.is_rejected
        assert not assoc.is_established

    with associate(node, calling_ae="MODALITY") as assoc:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == SUCCESS
        assert store(assoc, phantom().datasets[0]) == SUCCESS

    assert node.count(Instance) == 1


def test_allowed_ae_from_another_host_is_rejected(start_node: NodeFactory) -> None:
    node = start_node(allowed_callers="MODALITY@10.0.0.9,OTHER")

    with associate(node, calling_ae="MODALITY") as assoc:
        assert assoc.is_rejected
        assert not assoc.is_established

    assert node.count(Instance) == 0


def test_wrong_called_ae_rejected(node: Node) -> None:
    with associate(node, called_ae="NOTTHENODE") as assoc:
        assert assoc.is_rejected

    result = echoscu("127.0.0.1", node.port, "NOTTHENODE")
    assert result.returncode != 0


# --------------------------------------------------------------------- callback and logs
def test_on_recorded_receives_the_study_id(node: Node) -> None:
    first, second = phantom(seed=1), phantom(seed=3)

    with associate(node) as assoc:
        for ds in [*first.datasets[:2], second.datasets[0]]:
            assert store(assoc, ds) == SUCCESS

    with node.session() as session:
        ids = {uid: id_ for uid, id_ in session.execute(select(Study.study_instance_uid, Study.id))}
    assert node.recorded == [
        ids[first.study_instance_uid],
        ids[first.study_instance_uid],
        ids[second.study_instance_uid],
    ]


def test_no_patient_data_in_logs(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    study = phantom()
    assert str(study.datasets[0].PatientName) == PATIENT_NAME
    bad = copy.deepcopy(study.datasets[1])
    del bad.SeriesInstanceUID

    with caplog.at_level(logging.DEBUG), associate(node) as assoc:
        assert store(assoc, study.datasets[0]) == SUCCESS
        assert store(assoc, bad) == MISSING_UIDS

    assert caplog.records, "nothing was logged: the check would be vacuous"
    assert any(study.datasets[1].SOPInstanceUID in r.getMessage() for r in caplog.records)
    for secret in ("SECRET", PATIENT_ID, "19700101"):
        assert secret not in caplog.text


# --------------------------------------------------------------------- stopping
def test_stop_lets_the_instance_in_progress_finish_and_ends_idle_ones(
    start_node: NodeFactory, tmp_path: Path
) -> None:
    node = start_node(network_timeout_seconds=30)
    (path,) = write_phantom(generate_ct_phantom(slices=1, rows=64, columns=64), tmp_path)
    item = Part10.read(path)
    sending = RawAssociation(node.port, abstract_syntaxes=(CTImageStorage,)).connect()
    idle = RawAssociation(node.port).connect()
    try:
        sending.c_store_partial(item, 0.5)
        wait_until(lambda: any(a.in_message for a in node.scp._serving.values()), 10, 0.02)
        port, started = node.port, time.monotonic()
        stopper = threading.Thread(target=node.scp.stop)
        stopper.start()
        wait_until(lambda: not _accepts(port), 10, 0.02)  # no new connection at once
        assert idle.sock is not None
        assert idle.sock.recv(1) == b""  # the idle association is closed at once
        context_id = sending.context_for(CTImageStorage)
        rest = item.dataset[max(1, int(len(item.dataset) * 0.5)) :]
        sending.send(p_data(context_id, rest, command=False, last=True))
        assert sending.read_status() == SUCCESS  # the instance in progress is answered ...
        assert sending.read_pdu()[0] == 0x07  # ... then the association aborted
        stopper.join(10)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 15, "stop waited out the grace period"
    finally:
        sending.close()
        idle.close()
    assert node.count(Instance) == 1
    assert node.receive_leftovers() == []


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
