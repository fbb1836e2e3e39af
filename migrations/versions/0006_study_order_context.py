"""studies gain their order context: accession number, patient ID, study date, requested procedure

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 02:40:00.000000

Filled from a study's first instance when AINODE_STORE_IDENTIFIERS is on (the
default); the HL7 result message and the console need them.  Patient data:
never logged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accession_number", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("patient_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("study_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("requested_procedure", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_column("requested_procedure")
        batch_op.drop_column("study_date")
        batch_op.drop_column("patient_id")
        batch_op.drop_column("accession_number")
