"""Recording instance rows on SQLite and PostgreSQL: new rows, repeats, batches."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Instance, Series, Study, StudyState
from dicom_node.recording.received import RecordingFailed, StudyIdentifiers
from dicom_node.recording.recorder import InstanceRecorder
from tests.support.rows import received_instance


def test_a_new_instance_creates_its_study_and_series(sessions: sessionmaker[Session]) -> None:
    study_id = InstanceRecorder(sessions).record(received_instance(1, 1))
    with sessions() as session:
        study = session.get_one(Study, study_id)
        assert study.state == StudyState.RECEIVING
        series = session.scalars(select(Series)).one()
        assert (series.study_id, series.instance_count, series.modality) == (study_id, 1, "CT")
        assert session.scalars(select(Instance.times_received)).all() == [1]


def test_a_repeated_instance_replaces_the_first_and_is_counted_once(
    sessions: sessionmaker[Session],
) -> None:
    recorder = InstanceRecorder(sessions)
    recorder.record(received_instance(1, 1))
    recorder.record(replace(received_instance(1, 1), size_bytes=99, path="1/again.dcm"))
    # a recorder that has not seen the series yet finds its rows
    InstanceRecorder(sessions).record(received_instance(1, 2))
    with sessions() as session:
        assert session.scalars(select(Series.instance_count)).one() == 2
        first = session.scalars(select(Instance).order_by(Instance.id)).first()
        assert first is not None
        assert (first.times_received, first.size_bytes, first.path) == (2, 99, "1/again.dcm")


def test_a_batch_of_several_series_and_a_repeat_is_recorded_in_one_go(
    sessions: sessionmaker[Session],
) -> None:
    rows = [received_instance(study, sop) for study in (1, 2) for sop in range(3)]
    rows.append(received_instance(2, 0))
    outcomes = InstanceRecorder(sessions).record_batch(rows)
    with sessions() as session:
        ids = dict(session.execute(select(Study.study_instance_uid, Study.id)).all())
        counts = session.execute(select(Series.series_instance_uid, Series.instance_count))
        times = session.scalars(select(Instance.times_received).order_by(Instance.id))
        assert dict(counts.all()) == {"1.2.3.1.1": 3, "1.2.3.2.1": 3}
        assert times.all() == [1, 1, 1, 2, 1, 1]
    assert outcomes == [ids[row.study_uid] for row in rows]


def test_a_database_error_is_reported_as_recording_failed_with_its_cause(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    def database_down(*_args: object) -> int:
        raise OperationalError("INSERT INTO instances", {}, Exception("disk I/O error"))

    monkeypatch.setattr(InstanceRecorder, "_write_instance", database_down)
    with pytest.raises(RecordingFailed, match="database unavailable") as failure:
        InstanceRecorder(sessions).record(received_instance(1, 1))
    assert isinstance(failure.value.__cause__, OperationalError)


def test_a_study_deleted_behind_the_recorders_back_is_created_again(
    sessions: sessionmaker[Session],
) -> None:
    """An operator deleting a study by hand leaves no remembered ids that fail every later row."""
    recorder = InstanceRecorder(sessions)
    recorder.record(received_instance(1, 1))
    with sessions.begin() as session:
        session.execute(delete(Study))  # as an operator's SQL would, cascading

    study_id = recorder.record(received_instance(1, 2))

    with sessions() as session:
        assert session.scalars(select(Study.id)).all() == [study_id]
        assert session.scalars(select(Series.instance_count)).one() == 1
        assert len(session.scalars(select(Instance)).all()) == 1


def test_a_new_study_keeps_its_order_context_cut_to_size(sessions: sessionmaker[Session]) -> None:
    identifiers = StudyIdentifiers("A" * 20, "PID-1", "20261201", "CT Thorax")
    InstanceRecorder(sessions).record(replace(received_instance(1, 1), identifiers=identifiers))
    malformed_date = replace(identifiers, study_date="2026-12")
    InstanceRecorder(sessions).record(replace(received_instance(2, 1), identifiers=malformed_date))
    with sessions() as session:
        rows = session.execute(
            select(
                Study.accession_number,
                Study.patient_id,
                Study.study_date,
                Study.requested_procedure,
            ).order_by(Study.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        ("A" * 16, "PID-1", date(2026, 12, 1), "CT Thorax"),
        ("A" * 16, "PID-1", None, "CT Thorax"),
    ]


def test_order_context_is_not_kept_when_identifiers_are_off(
    sessions: sessionmaker[Session],
) -> None:
    identifiers = StudyIdentifiers("ACC-1", "PID-1", "20261201", "CT Thorax")
    row = replace(received_instance(1, 1), identifiers=identifiers)
    InstanceRecorder(sessions, store_identifiers=False).record(row)
    with sessions() as session:
        study = session.scalars(select(Study)).one()
        assert (study.accession_number, study.patient_id, study.study_date) == (None, None, None)
        assert study.requested_procedure is None


def test_identifiers_do_not_show_in_a_rows_text() -> None:
    identifiers = StudyIdentifiers("ACC-SECRET", "PID-SECRET", "20261201", "CT Thorax")
    assert "SECRET" not in repr(replace(received_instance(1, 1), identifiers=identifiers))
