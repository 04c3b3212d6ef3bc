"""withdrawal.escalated: the approvals an escalation at release asked for

Revision ID: 0010_sec
Revises: 0010_pages
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_sec"
down_revision = "0010_pages"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalated", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.drop_column("escalated")
