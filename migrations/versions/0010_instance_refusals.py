"""instance_refusals: instances the Storage SCP refused, counted per minute, status, cause and AE

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 05:40:00.000000

Read by /metrics (``ainode_instances_refused_total``) and the console's
overview; written by the SCP's process (receiver processes send theirs to it).
The unique constraint leads with the minute, so it also serves "in the last hour".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instance_refusals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_refusals")),
        sa.UniqueConstraint(
            "minute", "status", "cause", "calling_ae", name=op.f("uq_instance_refusals_minute")
        ),
    )


def downgrade() -> None:
    op.drop_table("instance_refusals")
