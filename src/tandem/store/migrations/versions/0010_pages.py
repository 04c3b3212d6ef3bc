"""list pages: an index in each list's order (creation time, then id)

Revision ID: 0010_pages
Revises: 0009_hot
"""

from __future__ import annotations

from alembic import op

revision = "0010_pages"
down_revision = "0009_hot"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_member_added_at_id", "member", ["added_at", "id"]),
    ("ix_proposal_created_at_id", "proposal", ["created_at", "id"]),
    ("ix_ceremony_created_at_id", "ceremony", ["created_at", "id"]),
    ("ix_keyset_created_at_id", "keyset", ["created_at", "id"]),
    ("ix_proofchallenge_created_at_id", "proofchallenge", ["created_at", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
