"""Recording received instances in the database (study, series, instance rows).

Only UIDs, modality, SOP class, body part, series description, the calling AE,
sizes and times are recorded: nothing that identifies the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Instance, Series, Study, StudyState, utcnow


@dataclass(frozen=True)
class ReceivedInstance:
    """The facts about one stored instance that go into the database."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    body_part: str | None
    series_description: str | None
    calling_ae: str | None
    path: str
    size_bytes: int


class RecordingFailed(Exception):
    """An instance's row could not be recorded: the process that writes the rows is gone."""


class Recorder(Protocol):
    """Whatever records received instances: the database itself, or a process that writes to it."""

    def record(self, received: ReceivedInstance) -> int:
        """Record ``received`` durably; returns its study id.

        Raises ``SQLAlchemyError`` or :class:`RecordingFailed` when it cannot.
        """
        ...


_instances, _series, _studies = Instance.__table__, Series.__table__, Study.__table__
# Built once: executing a prepared statement skips building and keying it per instance.
_UPDATE_INSTANCE = (
    update(_instances)
    .where(_instances.c.series_id == bindparam("series"))
    .where(_instances.c.sop_instance_uid == bindparam("sop"))
    .values(
        transfer_syntax_uid=bindparam("syntax"),
        size_bytes=bindparam("size"),
        path=bindparam("path"),
        received_at=bindparam("now"),
        times_received=_instances.c.times_received + 1,
    )
)
_INSERT_INSTANCE = insert(_instances).values(
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


class InstanceRecorder:
    """Writes each received instance's row, creating its study and series on first sight.

    The ids of studies and series already seen are kept (they never change),
    so recording the next instance of a series is three short statements
    (update the instance or insert it, then touch the series and the study)
    and one commit, without loading ORM objects.
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._engine: Engine = session_factory.kw["bind"]
        self._ids: dict[tuple[str, str], tuple[int, int]] = {}

    def record(self, received: ReceivedInstance, now: datetime | None = None) -> int:
        """Record ``received`` and mark its study as receiving; returns the study id.

        A second instance with the same SOP Instance UID in the same series
        replaces the first (same file) and is counted once.
        """
        now = now or utcnow()
        for attempt in range(3):
            try:
                with self._engine.begin() as connection:
                    ids = self._record(connection, received, now)
            except IntegrityError:
                if attempt == 2:
                    raise
                continue  # another process created the row first: look it up again
            self.remember(received, ids)
            return ids[0]
        raise AssertionError("unreachable")

    def remember(self, item: ReceivedInstance, ids: tuple[int, int]) -> None:
        """Keep the (study id, series id) of a committed instance for the next ones."""
        if len(self._ids) >= MAX_REMEMBERED_SERIES:
            self._ids.clear()
        self._ids[(item.study_uid, item.series_uid)] = ids

    def _record(
        self, connection: Connection, item: ReceivedInstance, now: datetime
    ) -> tuple[int, int]:
        """Write the rows of one instance; returns its (study id, series id), uncommitted."""
        ids = self._ids.get((item.study_uid, item.series_uid))
        if ids is None:
            ids = self._study_and_series(connection, item, now)
        study_id, series_id = ids
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
        added = 0
        if not connection.execute(_UPDATE_INSTANCE, row).rowcount:
            connection.execute(_INSERT_INSTANCE, row)
            added = 1
        connection.execute(_TOUCH_SERIES, {"series": series_id, "now": now, "added": added})
        connection.execute(
            _TOUCH_STUDY, {"study": study_id, "now": now, "state": StudyState.RECEIVING}
        )
        return ids

    @staticmethod
    def _study_and_series(
        connection: Connection, item: ReceivedInstance, now: datetime
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
