"""audit subtree roots and the verified-up-to marker

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 01:00:00

Adds ``auditnode`` (the roots of the perfect subtrees of the audit Merkle tree, so a
proof reads O(log n) rows) and ``auditmarker`` (the signed point up to which start-up
has verified the chain). Existing logs get their subtree roots here, computed from the
stored leaf hashes in one streaming pass; the marker starts absent, so the first
start-up after the upgrade verifies the whole chain once and writes it.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_BATCH = 5000


def upgrade() -> None:
    op.create_table(
        "auditnode",
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("height", "idx"),
    )
    op.create_table(
        "auditmarker",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    _backfill_subtrees()


def _backfill_subtrees() -> None:
    # Written out here rather than imported, so the migration keeps meaning what it
    # meant when it was written: RFC 6962 leaf (0x00) and node (0x01) hashing.
    bind = op.get_bind()
    node_table = sa.table("auditnode", sa.column("height"), sa.column("idx"), sa.column("hash"))
    peaks: list[bytes] = []
    size = 0
    pending: list[dict[str, object]] = []
    last = -1
    while True:
        rows = bind.execute(
            sa.text("SELECT seq, hash FROM auditrow WHERE seq > :last ORDER BY seq LIMIT :n"),
            {"last": last, "n": _BATCH},
        ).all()
        if not rows:
            break
        for seq, digest in rows:
            last = seq
            node = hashlib.sha256(b"\x00" + bytes.fromhex(digest)).digest()
            n, height = size, 0
            while n & 1:
                node = hashlib.sha256(b"\x01" + peaks.pop() + node).digest()
                n >>= 1
                height += 1
                pending.append({"height": height, "idx": n, "hash": node.hex()})
            peaks.append(node)
            size += 1
        if pending:
            bind.execute(node_table.insert(), pending)
            pending = []


def downgrade() -> None:
    op.drop_table("auditmarker")
    op.drop_table("auditnode")
