"""reconciliation jobs are listed in pages, newest first: an index in that order; a
withdrawal is found by its txid (a deposit scan tells our own change from a deposit)

Revision ID: 0012_jobs
Revises: 0011_hot
"""

from __future__ import annotations

from alembic import op

revision = "0012_jobs"
down_revision = "0011_hot"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_reconcilejob_started_at_id", "reconcilejob", ["started_at", "id"])
    op.create_index("ix_withdrawal_txid", "withdrawal", ["txid"])


def downgrade() -> None:
    op.drop_index("ix_withdrawal_txid", table_name="withdrawal")
    op.drop_index("ix_reconcilejob_started_at_id", table_name="reconcilejob")
