"""Engines and transactions.

Every write runs in one database transaction that also appends its audit entry, so a
state change and its record commit together or not at all. Writers are serialised:
on SQLite by ``BEGIN IMMEDIATE`` (the write lock is taken before the first read), on
PostgreSQL by a row lock on the single audit head row, taken first in every write
transaction. Serialising writers gives the audit chain a total order and turns every
status compare-and-set into a plain read-then-write that cannot race.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, select

from tandem.errors import ConfigurationError
from tandem.store import facts
from tandem.store.models import AuditHead


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    # psycopg 3 is the driver we ship; accept the plain postgresql:// form people paste.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Owns the engines. Built by the app factory, never at import time."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = normalise_url(url)
        self.schema = schema
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if is_sqlite(self.url) else contextlib.nullcontext()
        )
        self.sqlite = is_sqlite(self.url)
        if self.sqlite:
            self.writer = _sqlite_engine(self.url, immediate=True)
            self.reader = _sqlite_engine(self.url, immediate=False)
        elif self.url.startswith("postgresql"):
            connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
            self.writer = create_engine(
                self.url,
                pool_size=20,
                max_overflow=20,
                pool_pre_ping=True,
                connect_args=connect_args,
            )
            self.reader = self.writer
        else:
            raise ConfigurationError("TANDEM_DATABASE_URL must be sqlite:///... or postgresql://...")

    def migrate(self) -> None:
        from tandem.store.migrate import upgrade

        upgrade(self.writer)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        # SQLite's busy handler retries with sleeps, so contended writers starve in no
        # particular order; a process-local lock queues this process's writers fairly.
        with self._write_lock, Session(self.writer, expire_on_commit=False) as session:
            with session.begin():
                facts.begin_write(session)
                if not self.sqlite:
                    session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()
                yield session
            facts.committed(session)

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.reader, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()

    def create_schema(self) -> None:
        """PostgreSQL test isolation: each test database lives in its own schema."""
        if self.sqlite or not self.schema:
            raise ConfigurationError("create_schema is for PostgreSQL schemas")
        with create_engine(self.url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    def drop_schema(self) -> None:
        if self.sqlite or not self.schema:
            return
        self.dispose()
        engine = create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        engine.dispose()
