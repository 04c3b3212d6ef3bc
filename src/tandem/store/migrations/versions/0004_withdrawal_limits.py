"""withdrawal limits: amounts and fees for windowed velocity, release lifetime and
its recorded end, and one live withdrawal per Ethereum (chain, network, from, nonce)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NEW_COLUMNS = (
    ("asset", 80),
    ("amount", 80),
    ("fee", 80),
    ("fee_asset", 16),
)
_NEW_TIMES = ("release_expires_at", "broadcast_at", "confirmed_at", "abandoned_at")


def upgrade() -> None:
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        for name, length in _NEW_COLUMNS:
            batch_op.add_column(
                sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=True)
            )
        for name in _NEW_TIMES:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch_op.create_index("ix_withdrawal_keyset_released_at", ["keyset", "released_at"], unique=False)
        batch_op.create_index("ix_withdrawal_keyset_created_at", ["keyset", "created_at"], unique=False)

    op.create_table(
        "withdrawalnonce",
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("network", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("nonce", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("withdrawal", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("chain", "network", "address", "nonce"),
    )
    with op.batch_alter_table("withdrawalnonce", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_withdrawalnonce_withdrawal"), ["withdrawal"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("withdrawalnonce", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_withdrawalnonce_withdrawal"))
    op.drop_table("withdrawalnonce")
    with op.batch_alter_table("withdrawal", schema=None) as batch_op:
        batch_op.drop_index("ix_withdrawal_keyset_created_at")
        batch_op.drop_index("ix_withdrawal_keyset_released_at")
        for name in reversed(_NEW_TIMES):
            batch_op.drop_column(name)
        for name, _length in reversed(_NEW_COLUMNS):
            batch_op.drop_column(name)
