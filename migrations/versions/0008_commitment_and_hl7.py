"""deliveries gain their Storage Commitment transaction; HL7 result messages and their ACKs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 03:00:00.000000

A delivery to a destination with Storage Commitment keeps the transaction
UID of its N-ACTION, so a report that arrives after a node restart still
finds its row; hl7_messages holds every ORU^R01 sent and the ACK it got.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("commit_transaction_uid", sa.String(64), nullable=True))
        batch_op.add_column(
            sa.Column("commit_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_deliveries_commit_transaction_uid"), ["commit_transaction_uid"]
        )
    op.create_table(
        "hl7_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("control_id", sa.String(20), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "retrying",
                "sent",
                "failed",
                name="hl7state",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ack", sa.Text(), nullable=True),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_hl7_messages_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_messages")),
        sa.UniqueConstraint("control_id", name=op.f("uq_hl7_messages_control_id")),
        sa.UniqueConstraint("job_id", "destination", name=op.f("uq_hl7_messages_job_id")),
    )
    with op.batch_alter_table("hl7_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hl7_messages_job_id"), ["job_id"])
        batch_op.create_index(batch_op.f("ix_hl7_messages_state"), ["state"])


def downgrade() -> None:
    op.drop_table("hl7_messages")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_commit_transaction_uid"))
        batch_op.drop_column("committed_at")
        batch_op.drop_column("commit_requested_at")
        batch_op.drop_column("commit_transaction_uid")
