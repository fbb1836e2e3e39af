"""result SEG type: which destinations take a SEG and the SR that references it

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 09:00:00.000000

Results written before a SEG could be a LABELMAP are all BINARY: the SEG and
SR of every job that has a SEG are marked so; other SRs stay NULL (for every
destination).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seg_type", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE results SET seg_type = 'BINARY' "
        "WHERE job_id IN (SELECT job_id FROM results WHERE kind = 'seg')"
    )


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("seg_type")
