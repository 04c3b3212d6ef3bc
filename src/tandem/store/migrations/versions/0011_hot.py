"""withdrawal.decoded keeps the decoded transaction view computed at create

Revision ID: 0011_hot
Revises: 0010_books
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_hot"
down_revision = "0010_books"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null on rows written before this revision: their view is decoded when read.
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decoded", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.drop_column("decoded")
