"""outpoint reservations: one live withdrawal per Bitcoin output

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02 01:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outpointreservation",
        sa.Column("network", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("txid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("vout", sa.Integer(), nullable=False),
        sa.Column("withdrawal", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reserved_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("network", "txid", "vout"),
    )
    with op.batch_alter_table("outpointreservation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outpointreservation_withdrawal"), ["withdrawal"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outpointreservation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outpointreservation_withdrawal"))
    op.drop_table("outpointreservation")
