"""Recording received instances in the database (study, series, instance rows).

Only UIDs, modality, SOP class, body part, series description, the calling AE,
sizes and times are recorded: nothing that identifies the patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Instance, Series, Study, StudyState, utcnow
from core.db.session import session_scope


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


class InstanceRecorder:
    """Writes each received instance's row, creating its study and series on first sight."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def record(self, received: ReceivedInstance, now: datetime | None = None) -> int:
        """Record ``received`` and mark its study as receiving; returns the study id.

        A second instance with the same SOP Instance UID in the same series
        replaces the first (same file) and is counted once.
        """
        now = now or utcnow()
        for attempt in range(3):
            try:
                with session_scope(self._session_factory) as session:
                    return self._record(session, received, now)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _record(session: Session, item: ReceivedInstance, now: datetime) -> int:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == item.study_uid)
        ).one_or_none()
        if study is None:
            study = Study(study_instance_uid=item.study_uid, first_received_at=now)
            session.add(study)
            session.flush()
        study.state = StudyState.RECEIVING
        study.last_received_at = now

        series = session.scalars(
            select(Series).where(
                Series.study_id == study.id, Series.series_instance_uid == item.series_uid
            )
        ).one_or_none()
        if series is None:
            series = Series(
                study_id=study.id,
                series_instance_uid=item.series_uid,
                modality=item.modality,
                sop_class_uid=item.sop_class_uid,
                body_part=item.body_part,
                series_description=item.series_description,
                calling_ae=item.calling_ae,
                instance_count=0,
            )
            session.add(series)
            session.flush()
        series.last_received_at = now

        instance = session.scalars(
            select(Instance).where(
                Instance.series_id == series.id,
                Instance.sop_instance_uid == item.sop_instance_uid,
            )
        ).one_or_none()
        if instance is None:
            session.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=item.sop_instance_uid,
                    sop_class_uid=item.sop_class_uid,
                    transfer_syntax_uid=item.transfer_syntax_uid,
                    path=item.path,
                    size_bytes=item.size_bytes,
                    calling_ae=item.calling_ae,
                    received_at=now,
                )
            )
            series.instance_count = series.instance_count + 1
        else:
            instance.transfer_syntax_uid = item.transfer_syntax_uid
            instance.size_bytes = item.size_bytes
            instance.path = item.path
            instance.received_at = now
            instance.times_received = instance.times_received + 1
        return study.id
