"""One server per deployment: the lock a starting server takes and holds until it exits.

One-time keys (operation keys, claim tokens, TOTP steps kept in memory) live in one
process, so a second ``tandem serve`` on the same state must not start beside the first.
Two locks, each held for the life of the process and released by the operating system or
the database when it ends, however it ends:

- an OS file lock (``fcntl.flock``) on ``tandem.lock`` in the data directory; the file
  records the holder's pid so the refusal can name it;
- on PostgreSQL, a session-level advisory lock (``pg_try_advisory_lock``) keyed by the
  schema the deployment lives in, held by one dedicated connection: servers on other
  machines that share the database are refused too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from tandem.errors import ConfigurationError

LOCK_FILE = "tandem.lock"
_ADVISORY_DOMAIN = b"tandem.serve.v1\x00"


class ServerRunningError(ConfigurationError):
    """Another server holds this deployment's lock."""

    code = "server_already_running"
    status = 409


class FileLock:
    """An exclusive, non-blocking OS lock on ``path``; the pid of the holder is written
    into the file after the lock is won (and read back for the refusal)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Opened without truncating: the holder's pid must stay readable to the loser.
        handle = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 (held until release)
        try:
            _lock_exclusive(handle)
        except OSError:
            handle.close()
            other = self.holder_pid()
            who = f"pid {other}" if other is not None else "another process"
            raise ServerRunningError(
                f"another Tandem server ({who}) holds {self.path}: one server per data "
                "directory, since one-time keys live in one process. Stop it first",
                details={"lock": str(self.path), **({"pid": other} if other is not None else {})},
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def holder_pid(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.seek(0)
                self._handle.truncate()
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None

    @property
    def held(self) -> bool:
        return self._handle is not None


def _lock_exclusive(handle: TextIO) -> None:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def advisory_key(schema: str) -> int:
    """A signed 64-bit key for ``pg_try_advisory_lock`` derived from the schema name
    (advisory locks are already per database)."""
    digest = hashlib.sha256(_ADVISORY_DOMAIN + schema.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresLock:
    """A session-level advisory lock held by one dedicated connection for the life of the
    process; PostgreSQL drops it when that connection ends."""

    def __init__(self, url: str, *, schema: str | None = None, wait_seconds: float = 5.0) -> None:
        self.url = url.replace("postgresql+psycopg://", "postgresql://", 1)
        self.schema = schema
        # A holder that has just died keeps its lock until its backend notices the
        # closed connection; a restart straight after a crash waits that long at most.
        self.wait_seconds = wait_seconds
        self._conn: Any = None
        self.key: int | None = None

    def acquire(self) -> None:
        import psycopg

        conn = (
            psycopg.connect(self.url, autocommit=True, options=f"-csearch_path={self.schema}")
            if self.schema
            else psycopg.connect(self.url, autocommit=True)
        )
        try:
            row = conn.execute("SELECT current_schema()").fetchone()
            schema = str(row[0]) if row and row[0] is not None else "public"
            key = advisory_key(schema)
            deadline = time.monotonic() + self.wait_seconds
            while True:
                won = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if (won and won[0]) or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            if not (won and won[0]):
                holder = conn.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                    "AND classid = %s::bigint::oid AND objid = %s::bigint::oid AND objsubid = 1 LIMIT 1",
                    ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
                ).fetchone()
                who = f"database backend pid {holder[0]}" if holder else "another server"
                raise ServerRunningError(
                    f"another Tandem server ({who}) holds the lock of schema {schema!r} on this "
                    "database: one server per deployment, since one-time keys live in one "
                    "process. Stop it first",
                    details={"schema": schema},
                )
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self.key = key

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    @property
    def held(self) -> bool:
        return self._conn is not None


class ServerLock:
    """Every lock this server's state needs, taken in order and released together."""

    def __init__(self, data_dir: Path, database_url: str, *, schema: str | None = None) -> None:
        self.locks: list[FileLock | PostgresLock] = [FileLock(data_dir / LOCK_FILE)]
        if database_url.startswith(("postgresql", "postgres://")):
            self.locks.append(PostgresLock(database_url, schema=schema))

    def acquire(self) -> ServerLock:
        taken: list[FileLock | PostgresLock] = []
        try:
            for lock in self.locks:
                lock.acquire()
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.release()
            raise
        return self

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()
