"""withdrawal.txid holds a Solana transaction id (a base58 signature, up to 88 characters)

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.alter_column("txid", existing_type=sa.String(length=80), type_=sa.String(length=100))


def downgrade() -> None:
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.alter_column("txid", existing_type=sa.String(length=100), type_=sa.String(length=80))
