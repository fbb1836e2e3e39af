"""results gain their variant: what a Key Object Selection references besides the key images

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:40:00.000000

Destinations taking different formats get different KOS (each points only at
objects the destination holds); the variant says which destinations take one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("variant", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("variant")
