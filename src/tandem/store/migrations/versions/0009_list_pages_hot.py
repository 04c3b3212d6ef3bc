"""withdrawal list pages: an index in the list's order (created_at, id)

Revision ID: 0009_hot
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009_hot"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_withdrawal_created_at_id", "withdrawal", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_withdrawal_created_at_id", table_name="withdrawal")
