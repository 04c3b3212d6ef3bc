"""background reconciliation jobs are kept in the database, so a restart shows them

Revision ID: 0010_books
Revises: 0010_sec (re-chained after main gained 0010_pages and 0010_sec: one head)
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010_books"
down_revision = "0010_sec"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcilejob",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("runner", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("started_at", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.Integer(), nullable=True),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reconcilejob", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reconcilejob_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reconcilejob", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconcilejob_state"))
    op.drop_table("reconcilejob")
