"""the address book is listed in pages: an index in its order (effective time, then id)

Revision ID: 0013_book_pages
Revises: 0012_jobs
"""

from __future__ import annotations

from alembic import op

revision = "0013_book_pages"
down_revision = "0012_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_addressbookrow_effective_at_id", "addressbookrow", ["effective_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_addressbookrow_effective_at_id", table_name="addressbookrow")
