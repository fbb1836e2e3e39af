"""The node's bookkeeping: every study, instance, job, result and delivery.

The database is the source of truth: the queue only carries job ids, and a
recovery sweep re-enqueues what the queue lost.  Patient data is limited to a
study's order context (accession number, patient ID, study date, requested
procedure; ``AINODE_STORE_IDENTIFIERS``), which the HL7 result message needs
and no log line shows; the rest is UIDs, modality, SOP class, the calling AE,
sizes and times.
"""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)
AE = String(16)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (what every timestamp column holds)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always returned timezone-aware (UTC), on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store ``value`` in UTC; a naive datetime is refused (its zone would be a guess)."""
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime stored; use core.db.models.utcnow()")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Read ``value`` as UTC (SQLite keeps no zone; what was stored was UTC)."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base with a naming convention so migrations name constraints stably."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class StudyState(enum.StrEnum):
    """Where a study is between its first instance and its jobs."""

    RECEIVING = "receiving"
    ROUTED = "routed"
    UNROUTED = "unrouted"


class JobState(enum.StrEnum):
    """A job's life: queued, running, then succeeded, failed or skipped (outside its domain)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class DeliveryState(enum.StrEnum):
    """A result object's way to one destination.

    A destination with Storage Commitment takes a stored object through
    ``sent`` (C-STORE done, N-ACTION asked) to ``committed``, or to
    ``commit_failed`` (the peer does not hold it, or no report came in time);
    one without ends at ``succeeded``.
    """

    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SENT = "sent"
    COMMITTED = "committed"
    COMMIT_FAILED = "commit_failed"


class Study(Base):
    """A study the node has received instances of."""

    __tablename__ = "studies"
    # Receiving studies by time (scheduler, console); the console's search by identifier.
    __table_args__ = (
        Index("ix_studies_state_last_received_at", "state", "last_received_at"),
        Index("ix_studies_accession_number", "accession_number"),
        Index("ix_studies_patient_id", "patient_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    state: Mapped[StudyState] = mapped_column(_enum(StudyState), default=StudyState.RECEIVING)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    routing_note: Mapped[str | None] = mapped_column(Text)
    # Order context, from the study's first instance (patient data: never logged).
    accession_number: Mapped[str | None] = mapped_column(String(16))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    study_date: Mapped[date | None] = mapped_column(Date)
    requested_procedure: Mapped[str | None] = mapped_column(String(64))

    series: Mapped[list[Series]] = relationship(back_populates="study", order_by="Series.id")
    jobs: Mapped[list[Job]] = relationship(back_populates="study", order_by="Job.id")


class Series(Base):
    """A series within a study, with the attributes routing rules look at."""

    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("study_id", "series_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    modality: Mapped[str | None] = mapped_column(String(16))
    sop_class_uid: Mapped[str | None] = mapped_column(UID)
    body_part: Mapped[str | None] = mapped_column(String(64))
    series_description: Mapped[str | None] = mapped_column(String(64))
    calling_ae: Mapped[str | None] = mapped_column(AE)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(
        back_populates="series", order_by="Instance.id"
    )


class Instance(Base):
    """One received SOP instance and where its Part-10 file lies in the spool."""

    __tablename__ = "instances"
    # The unique (series_id, sop_instance_uid) index also serves lookups by series_id alone.
    __table_args__ = (UniqueConstraint("series_id", "sop_instance_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str | None] = mapped_column(AE)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    times_received: Mapped[int] = mapped_column(Integer, default=1)

    series: Mapped[Series] = relationship(back_populates="instances")


class Job(Base):
    """One pipeline run on one series; its state lives here, not in the queue."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("pipeline", "series_id", "input_key"),
        Index("ix_jobs_state_pipeline", "state", "pipeline"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    rule_name: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    pipeline_version: Mapped[str | None] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(32))
    input_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))
    device: Mapped[str | None] = mapped_column(String(64))
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queue_wait_seconds: Mapped[float | None] = mapped_column(Float)
    load_seconds: Mapped[float | None] = mapped_column(Float)
    inference_seconds: Mapped[float | None] = mapped_column(Float)
    write_seconds: Mapped[float | None] = mapped_column(Float)
    send_seconds: Mapped[float | None] = mapped_column(Float)

    study: Mapped[Study] = relationship(back_populates="jobs")
    series: Mapped[Series] = relationship()
    events: Mapped[list[JobEvent]] = relationship(back_populates="job", order_by="JobEvent.id")
    results: Mapped[list[Result]] = relationship(back_populates="job", order_by="Result.id")
    inputs: Mapped[list[JobInput]] = relationship(back_populates="job", order_by="JobInput.id")


class JobInput(Base):
    """One input series of a multi-series job (its primary series is also ``jobs.series_id``)."""

    __tablename__ = "job_inputs"
    __table_args__ = (UniqueConstraint("job_id", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))

    job: Mapped[Job] = relationship(back_populates="inputs")
    series: Mapped[Series] = relationship()


class JobEvent(Base):
    """An entry in a job's history: every state change with its time and reason."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class Result(Base):
    """A DICOM object a job produced (SEG or SR), written to the results folder.

    ``seg_type`` says which destinations take it: a segmentation job's SEG and
    the SR referencing it carry the SEG's type (``BINARY`` or ``LABELMAP``) and
    go to the destinations of that type; NULL (the SR of a classification or
    detection) goes to every destination.
    """

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    seg_type: Mapped[str | None] = mapped_column(String(16))
    # A KOS: the formats it references besides the key images (Destination.kos_variant).
    variant: Mapped[str | None] = mapped_column(String(32))
    sop_class_uid: Mapped[str] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    job: Mapped[Job] = relationship(back_populates="results")
    deliveries: Mapped[list[Delivery]] = relationship(
        back_populates="result", order_by="Delivery.id"
    )


class Delivery(Base):
    """Sending one result to one destination, with its attempts and last error."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("result_id", "destination"),
        Index("ix_deliveries_state_destination", "state", "destination"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(300))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState), default=DeliveryState.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    send_seconds: Mapped[float | None] = mapped_column(Float)
    # Storage Commitment: the open transaction (kept so a report after a restart finds its row).
    commit_transaction_uid: Mapped[str | None] = mapped_column(UID, index=True)
    commit_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    committed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    result: Mapped[Result] = relationship(back_populates="deliveries")


class Hl7State(enum.StrEnum):
    """An HL7 result message's way to one RIS: sent when acknowledged (AA)."""

    PENDING = "pending"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"


class Hl7Message(Base):
    """One ORU^R01 of a job to one HL7 destination, with its last acknowledgement.

    The message text holds patient data (PID, accession): shown by
    ``ainode status`` on request and never logged.
    """

    __tablename__ = "hl7_messages"
    __table_args__ = (UniqueConstraint("job_id", "destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(300))
    control_id: Mapped[str] = mapped_column(String(20), unique=True)
    message: Mapped[str] = mapped_column(Text)
    state: Mapped[Hl7State] = mapped_column(_enum(Hl7State), default=Hl7State.PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ack: Mapped[str | None] = mapped_column(Text)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Role(enum.StrEnum):
    """What a console user may do: read (viewer), act on jobs (operator), manage users (admin)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class User(Base):
    """A console user; the password is stored as an argon2 hash only."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[Role] = mapped_column(_enum(Role))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(Base):
    """Who did what to which object, when, from which address (logins included)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    username: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    object: Mapped[str | None] = mapped_column(String(320))
    outcome: Mapped[str] = mapped_column(String(16))
    address: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)


class ControlFlag(Base):
    """An operator's switch that the scheduler and workers honour (routing or a destination paused).

    A row present means the switch is on; ``name`` is ``routing`` or
    ``destination:<AE@host:port...>``.
    """

    __tablename__ = "control_flags"

    name: Mapped[str] = mapped_column(String(320), primary_key=True)
    set_by: Mapped[str | None] = mapped_column(String(64))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Acknowledgement(Base):
    """An operator acknowledged (discarded) a failed job or delivery: it leaves the failure list."""

    __tablename__ = "acknowledgements"
    __table_args__ = (UniqueConstraint("kind", "object_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    username: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProcessHeartbeat(Base):
    """A node process's proof of life (workers stamp it), shown by the console's health panel."""

    __tablename__ = "process_heartbeats"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    beat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstanceRefusal(Base):
    """Instances the Storage SCP refused in one minute, with one status and cause, from one AE.

    A count per (minute, status, cause, calling AE) rather than a row per
    instance: a sender whose every instance is refused adds one row a minute
    however many it sends.  ``cause`` is a fixed word (``invalid-instance``,
    ``disk-full``, ...); ``calling_ae`` is empty when the sender gave none.
    No UIDs, no patient data.
    """

    __tablename__ = "instance_refusals"
    __table_args__ = (UniqueConstraint("minute", "status", "cause", "calling_ae"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[int] = mapped_column(Integer)
    cause: Mapped[str] = mapped_column(String(32))
    calling_ae: Mapped[str] = mapped_column(AE)
    count: Mapped[int] = mapped_column(Integer)
