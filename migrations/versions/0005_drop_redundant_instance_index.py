"""drop ix_instances_series_id: the unique (series_id, sop_instance_uid) index covers it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 14:30:00.000000

Every received instance updated both indexes; lookups by series use the
leading column of the unique index (SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instances_series_id"))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instances_series_id"), ["series_id"], unique=False)
