"""Alembic environment: always driven with a connection passed in by tandem.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import tandem.store.models  # noqa: F401  (registers the tables)

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through tandem.store.migrate")
context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
