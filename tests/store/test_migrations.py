"""The Alembic migrations build exactly the tables the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from tandem.store.db import Database


def test_migrations_match_models(db: Database) -> None:
    with db.writer.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_migrate_is_idempotent(db: Database) -> None:
    db.migrate()
    db.migrate()
    with db.read() as session:
        assert session.connection().exec_driver_sql("SELECT 1").scalar() == 1
