"""Recording received instances in the database (study, series, instance rows).

UIDs, modality, SOP class, body part, series description, the calling AE,
sizes and times are recorded; and, unless ``AINODE_STORE_IDENTIFIERS`` is off,
the study's order context (accession number, patient ID, study date,
requested procedure) from its first instance: written, never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import ReturningInsert

from core.db.models import Instance, Series, Study, StudyState, utcnow
from dicom_node.recording.dialects import upsert_insert
from dicom_node.recording.received import (
    ReceivedInstance,
    RecordingFailed,
    Refusal,
    StudyIdentifiers,
)
from dicom_node.recording.refusals import RefusalTally

log = logging.getLogger(__name__)


_instances, _series, _studies = Instance.__table__, Series.__table__, Study.__table__


def _upsert_instance(dialect: str) -> ReturningInsert[tuple[int]]:
    """Insert an instance's row, or count a repeat of it; returns its ``times_received``.

    One statement per instance (an update that finds no row, then an insert,
    cost two); ``times_received`` is 1 exactly when the row is new.  Built once
    per recorder: executing a prepared statement skips building and keying it.
    """
    statement = upsert_insert(_instances, dialect).values(
        series_id=bindparam("series"),
        sop_instance_uid=bindparam("sop"),
        sop_class_uid=bindparam("sop_class"),
        transfer_syntax_uid=bindparam("syntax"),
        path=bindparam("path"),
        size_bytes=bindparam("size"),
        calling_ae=bindparam("ae"),
        received_at=bindparam("now"),
        times_received=1,
    )
    return statement.on_conflict_do_update(
        index_elements=[_instances.c.series_id, _instances.c.sop_instance_uid],
        set_={
            "transfer_syntax_uid": statement.excluded.transfer_syntax_uid,
            "size_bytes": statement.excluded.size_bytes,
            "path": statement.excluded.path,
            "received_at": statement.excluded.received_at,
            "times_received": _instances.c.times_received + 1,
        },
    ).returning(_instances.c.times_received)


_TOUCH_SERIES = (
    update(_series)
    .where(_series.c.id == bindparam("series"))
    .values(
        last_received_at=bindparam("now"),
        instance_count=_series.c.instance_count + bindparam("added"),
    )
)
_TOUCH_STUDY = (
    update(_studies)
    .where(_studies.c.id == bindparam("study"))
    .values(state=bindparam("state"), last_received_at=bindparam("now"))
)

#: Series whose row ids are kept in memory (the cache starts over when full).
MAX_REMEMBERED_SERIES = 10_000


def _study_date(text: str | None) -> date | None:
    """The date of a DICOM DA value (``YYYYMMDD``), None when absent or malformed."""
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8])) if text else None
    except ValueError:
        return None


def study_identifier_columns(identifiers: StudyIdentifiers | None) -> dict[str, Any]:
    """The order-context columns of a new study row, cut to their column sizes.

    Sizes follow the DICOM value lengths (SH 16, LO 64); an over-long value
    from a non-conformant sender is cut rather than failing the C-STORE.
    """
    if identifiers is None:
        return {}
    columns = {
        name: (value[: _studies.c[name].type.length] if value else None)
        for name, value in (
            ("accession_number", identifiers.accession_number),
            ("patient_id", identifiers.patient_id),
            ("requested_procedure", identifiers.requested_procedure),
        )
    }
    return {**columns, "study_date": _study_date(identifiers.study_date)}


class InstanceRecorder:
    """Writes the rows of received instances, creating their study and series on first sight.

    The ids of studies and series already seen are kept (they never change),
    so recording the next instance of a series is one statement (insert the
    instance, or count a repeat of it), then touching its series and study
    once per transaction, and one commit, without loading ORM objects.
    ``store_identifiers`` (``AINODE_STORE_IDENTIFIERS``) keeps each new
    study's order context on its row.  Refused instances are counted apart,
    off the path of the answers (:mod:`dicom_node.recording.refusals`).
    """

    def __init__(
        self, session_factory: sessionmaker[Session], store_identifiers: bool = True
    ) -> None:
        self._engine: Engine = session_factory.kw["bind"]
        self._store_identifiers = store_identifiers
        self._upsert = _upsert_instance(self._engine.dialect.name)
        self._ids: dict[tuple[str, str], tuple[int, int]] = {}
        self._refusals = RefusalTally(self._engine)

    def record(self, received: ReceivedInstance) -> int:
        """Record ``received`` and mark its study as receiving; returns the study id.

        A second instance with the same SOP Instance UID in the same series
        replaces the first (same file) and is counted once.

        Raises
        ------
        RecordingFailed
            If the database cannot record it.
        """
        outcome = self.record_batch([received])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def refused(self, refusal: Refusal) -> None:
        """Count ``refusal``; written to ``instance_refusals`` shortly after, best effort."""
        self._refusals.add(refusal)

    def close(self) -> None:
        """Write the refusals still counted in memory (the node stops); rows need nothing."""
        self._refusals.close()

    def record_batch(self, rows: Sequence[ReceivedInstance]) -> list[int | Exception]:
        """Record ``rows`` in one transaction; each row's study id, or why it failed.

        If the transaction fails, each row is recorded in a transaction of its
        own, so that only the row at fault gets the error: a database error
        as :class:`RecordingFailed`, any other as it was raised.
        """
        if len(rows) > 1:
            try:
                return list(self._transaction(rows))
            except Exception:
                log.debug("transaction of %d rows failed; recording them one by one", len(rows))
        outcomes: list[int | Exception] = []
        for row in rows:
            try:
                outcomes.extend(self._transaction([row]))
            except SQLAlchemyError as exc:
                failure = RecordingFailed(f"database unavailable ({type(exc).__name__})")
                failure.__cause__ = exc
                outcomes.append(failure)
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    def _transaction(self, rows: Sequence[ReceivedInstance]) -> list[int]:
        """Write and commit ``rows``; their study ids."""
        for attempt in range(3):
            try:
                with self._engine.begin() as connection:
                    ids = self._write(connection, rows, utcnow())
            except IntegrityError:
                if attempt == 2:
                    raise
                # Another process created the study or series first, or a remembered one was
                # deleted since: look them up again.
                for row in rows:
                    self._ids.pop((row.study_uid, row.series_uid), None)
                continue
            for row, pair in zip(rows, ids, strict=True):
                self._remember(row, pair)
            return [study_id for study_id, _ in ids]
        raise AssertionError("unreachable")

    def _remember(self, item: ReceivedInstance, ids: tuple[int, int]) -> None:
        if len(self._ids) >= MAX_REMEMBERED_SERIES:
            self._ids.clear()
        self._ids[(item.study_uid, item.series_uid)] = ids

    def _write(
        self, connection: Connection, rows: Sequence[ReceivedInstance], now: datetime
    ) -> list[tuple[int, int]]:
        """Write the rows of ``rows``; their (study id, series id), uncommitted."""
        created: dict[tuple[str, str], tuple[int, int]] = {}
        added: dict[int, int] = {}
        ids = []
        for item in rows:
            key = (item.study_uid, item.series_uid)
            pair = self._ids.get(key) or created.get(key)
            if pair is None:
                pair = created[key] = self._study_and_series(connection, item, now)
            added[pair[1]] = added.get(pair[1], 0) + self._write_instance(
                connection, item, pair[1], now
            )
            ids.append(pair)
        for series_id, count in added.items():
            connection.execute(_TOUCH_SERIES, {"series": series_id, "now": now, "added": count})
        for study_id in {study_id for study_id, _ in ids}:
            connection.execute(
                _TOUCH_STUDY, {"study": study_id, "now": now, "state": StudyState.RECEIVING}
            )
        return ids

    def _write_instance(
        self, connection: Connection, item: ReceivedInstance, series_id: int, now: datetime
    ) -> int:
        """Insert the instance's row or count a repeat; 1 if the series has one more instance."""
        row = {
            "series": series_id,
            "sop": item.sop_instance_uid,
            "sop_class": item.sop_class_uid,
            "syntax": item.transfer_syntax_uid,
            "size": item.size_bytes,
            "path": item.path,
            "ae": item.calling_ae,
            "now": now,
        }
        return int(connection.execute(self._upsert, row).scalar_one() == 1)

    def _study_and_series(
        self, connection: Connection, item: ReceivedInstance, now: datetime
    ) -> tuple[int, int]:
        """The ids of the instance's study and series rows, created when missing."""
        study_id = connection.scalar(
            select(_studies.c.id).where(_studies.c.study_instance_uid == item.study_uid)
        )
        if study_id is None:
            study_id = connection.execute(
                insert(_studies).values(
                    study_instance_uid=item.study_uid,
                    state=StudyState.RECEIVING,
                    first_received_at=now,
                    last_received_at=now,
                    **study_identifier_columns(
                        item.identifiers if self._store_identifiers else None
                    ),
                )
            ).inserted_primary_key[0]
        series_id = connection.scalar(
            select(_series.c.id).where(
                _series.c.study_id == study_id, _series.c.series_instance_uid == item.series_uid
            )
        )
        if series_id is None:
            series_id = connection.execute(
                insert(_series).values(
                    study_id=study_id,
                    series_instance_uid=item.series_uid,
                    modality=item.modality,
                    sop_class_uid=item.sop_class_uid,
                    body_part=item.body_part,
                    series_description=item.series_description,
                    calling_ae=item.calling_ae,
                    instance_count=0,
                    last_received_at=now,
                )
            ).inserted_primary_key[0]
        return int(study_id), int(series_id)
