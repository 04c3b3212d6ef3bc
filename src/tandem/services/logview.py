"""A fold of some kinds of the audit log kept in memory, brought up to date by reading
only the entries appended since it was last read: one range read of the log's indexed
``kind`` and ``seq`` columns. An answer then costs what is new and what it returns, not
the history.

It is advanced only from committed entries; a write works on a fork, so an entry that
is rolled back never reaches it. What the fold does with an entry is the caller's (the
register applies the same :meth:`Register.observe` the offline check replays)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from sqlmodel import Session, col, select

from tandem.core.canonical import loads_strict
from tandem.store.models import AuditRow

S = TypeVar("S")
Fold = Callable[[S, list[dict[str, Any]], Session], None]


class LogView(Generic[S]):
    """``empty()`` is the state before any entry; ``fold(state, entries, session)``
    applies entries in log order; ``fork(state)`` copies a state a write may change."""

    def __init__(
        self,
        kinds: tuple[str, ...],
        *,
        empty: Callable[[], S],
        fold: Fold[S],
        fork: Callable[[S], S],
    ) -> None:
        self.kinds = kinds
        self._empty, self._fold, self._fork = empty, fold, fork
        self._lock = threading.Lock()
        self._state = empty()
        self._next = 0  # the first log index not read yet

    def _advance(self, state: S, session: Session, since: int) -> int:
        rows = session.exec(
            select(AuditRow.seq, AuditRow.line)
            .where(col(AuditRow.kind).in_(self.kinds), col(AuditRow.seq) >= since)
            .order_by(col(AuditRow.seq))
        ).all()
        if rows:
            self._fold(state, [cast(dict[str, Any], loads_strict(line)) for _, line in rows], session)
            since = rows[-1][0] + 1
        return since

    def _catch_up(self, db: Any) -> None:
        with db.read() as session:
            try:
                self._next = self._advance(self._state, session, self._next)
            except Exception:
                self._state, self._next = self._empty(), 0  # read again whole next time
                raise

    @contextlib.contextmanager
    def reading(self, db: Any) -> Iterator[S]:
        """The committed state, held still while the caller reads it (not to change)."""
        with self._lock:
            self._catch_up(db)
            yield self._state

    def for_write(self, db: Any, session: Session) -> S:
        """A fork of the committed state with what ``session`` sees beyond it: the
        caller may fold entries into it before its commit."""
        with self._lock:
            self._catch_up(db)
            fork, since = self._fork(self._state), self._next
        self._advance(fork, session, since)
        return fork
