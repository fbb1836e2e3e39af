"""the ops console: users, audit events, pause switches, acknowledgements, process heartbeats

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 02:45:00.000000

Also the indexes that keep the console's pages and /metrics fast with 100,000
jobs (receiving studies by state and time, studies by accession number and
patient ID for the search, volumes by receive and creation time, time to
result by delivery time, jobs by state and pipeline or creation day,
deliveries by state and destination; measured with bench/console.py,
docs/performance.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


INDEXES = (
    ("ix_studies_state_last_received_at", "studies", ["state", "last_received_at"]),
    ("ix_studies_first_received_at", "studies", ["first_received_at"]),
    ("ix_studies_accession_number", "studies", ["accession_number"]),
    ("ix_studies_patient_id", "studies", ["patient_id"]),
    ("ix_jobs_state_pipeline", "jobs", ["state", "pipeline"]),
    ("ix_jobs_created_at", "jobs", ["created_at"]),
    ("ix_results_created_at", "results", ["created_at"]),
    ("ix_deliveries_state_destination", "deliveries", ["state", "destination"]),
    ("ix_deliveries_delivered_at", "deliveries", ["delivered_at"]),
)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column(
            "role",
            sa.Enum("viewer", "operator", "admin", name="role", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object", sa.String(length=320), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"], unique=False)
    op.create_table(
        "control_flags",
        sa.Column("name", sa.String(length=320), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_control_flags")),
    )
    op.create_table(
        "acknowledgements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_acknowledgements")),
        sa.UniqueConstraint("kind", "object_id", name=op.f("uq_acknowledgements_kind")),
    )
    op.create_table(
        "process_heartbeats",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_process_heartbeats")),
    )

    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_table("process_heartbeats")
    op.drop_table("acknowledgements")
    op.drop_table("control_flags")
    op.drop_index(op.f("ix_audit_events_at"), table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("users")
