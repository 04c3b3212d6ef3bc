"""Facts a write reads again and again (the policies, the address book, key sets and
their keys, the membership), kept per process between write transactions and valid for
exactly one audit head.

Every change of state appends to the audit log in its own transaction, so the head
(size and last hash) names one state of the database. A fact kept here is used by a
write transaction only when the head that transaction reads, inside itself and under
the writers' lock (ADR 0002), is the head the fact was read at: another process's
write, a rolled-back one, anything at all that moved the head, and the cache is
emptied and the facts are read again in that very transaction. A commit of this
process moves the facts on to its new head only when it provably left them as they
were: every entry it appended is of a kind that never touches them (a withdrawal's
own steps, a refusal) and it wrote none of their rows (the session's flushes say so);
any other commit empties the cache. Read transactions never use it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, SQLModel

from tandem.store.models import (
    AddressBookRow,
    AddressRow,
    AuditHead,
    KeyRow,
    KeySet,
    Member,
    PolicyRow,
    Proposal,
)

T = TypeVar("T")
R = TypeVar("R", bound=SQLModel)

# Entries whose transactions leave the kept facts as they were: a withdrawal's own
# steps and a read session opened (a refusal, ``*.refused``, changes no fact either).
KEEPING_KINDS = frozenset(
    {
        "withdrawal.prepared",
        "withdrawal.created",
        "withdrawal.approved",
        "withdrawal.released",
        "session.opened",
    }
)
# Rows the kept facts are read from; a flush that writes one empties the cache at commit.
FACT_ROWS = (PolicyRow, AddressBookRow, Proposal, KeySet, KeyRow, AddressRow)
# A member's row is written by every TOTP check; only these columns are facts.
MEMBER_FACTS = ("status", "role", "sign_public")

_HEAD = "tandem.audit_head"  # the head as the transaction found it: (size, last hash) or None
_HEAD_ROW = "tandem.audit_head_row"
_AFTER = "tandem.audit_head_after"  # the head after this transaction's appends
_KINDS = "tandem.audit_kinds"  # kinds this transaction appended
_DIRTY = "tandem.facts_dirty"  # this transaction wrote a row a fact is read from
_WRITE = "tandem.write"  # a write transaction (the only kind that uses the cache)
_MISS = object()


class _Facts:
    __slots__ = ("lock", "stamp", "values")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stamp: tuple[int, str] | None = None
        self.values: dict[Any, Any] = {}


class PerEngine(Generic[T]):
    """One ``T`` per database engine, made on first use by a session bound to it and
    dropped with the engine: what a process keeps across transactions of one database."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._by_engine: weakref.WeakKeyDictionary[Engine, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, session: Session) -> T:
        bind = session.get_bind()
        engine = bind.engine if isinstance(bind, Connection) else bind
        with self._lock:
            value = self._by_engine.get(engine)
            if value is None:
                value = self._by_engine[engine] = self._make()
            return value


_facts_for = PerEngine(_Facts).of


def begin_write(session: Session) -> None:
    """Mark ``session`` as a write transaction (called by the database's writer)."""
    session.info[_WRITE] = True


def head_at_start(session: Session) -> tuple[int, str] | None:
    """The audit head as this transaction found it, read once (a primary-key lookup,
    or none when the writer's lock already loaded the row)."""
    info = session.info
    if _HEAD not in info:
        head = session.get(AuditHead, 1)
        info[_HEAD] = (head.size, head.last_hash) if head is not None else None
        # The session holds its rows weakly: held here, the audit append finds this
        # one in the session instead of reading it again.
        info[_HEAD_ROW] = head
    found: tuple[int, str] | None = info[_HEAD]
    return found


def appended(session: Session, kinds: list[str], head: tuple[int, str]) -> None:
    """Called by the audit log after it appended ``kinds`` and moved the head to ``head``."""
    session.info.setdefault(_KINDS, []).extend(kinds)
    session.info[_AFTER] = head


def _pending_fact_rows(session: Session) -> bool:
    return any(_writes_fact(obj) for obj in (*session.new, *session.dirty, *session.deleted))


def _writes_fact(obj: Any) -> bool:
    if isinstance(obj, FACT_ROWS):
        return True
    if isinstance(obj, Member):
        state = inspect(obj)
        return state.pending or state.deleted or any(
            state.attrs[name].history.has_changes() for name in MEMBER_FACTS
        )
    return False


def kept(session: Session, name: Any, load: Callable[[Session], T]) -> T:
    """``load(session)``, or what it returned in an earlier write transaction at this
    same audit head. ``load`` must read only committed fact rows and return a value
    nobody mutates."""
    info = session.info
    if not info.get(_WRITE) or info.get(_DIRTY) or _AFTER in info or _pending_fact_rows(session):
        return load(session)
    head = head_at_start(session)
    if head is None:
        return load(session)
    facts = _facts_for(session)
    with facts.lock:
        if facts.stamp != head:
            facts.values.clear()
            facts.stamp = head
        value = facts.values.get(name, _MISS)
    if value is not _MISS:
        found: T = value
        return found
    value = load(session)
    with facts.lock:
        if facts.stamp == head:
            facts.values[name] = value
    return value


def kept_row(session: Session, model: type[R], key: Any) -> R | None:
    """``session.get(model, key)`` for a fact row, from the cache when it holds the row
    at this head: the row is then put into the session as loaded (no query), so later
    lookups of it in this transaction find it there too."""
    identity = inspect(model).identity_key_from_primary_key((key,))
    present = session.identity_map.get(identity)
    if present is not None:
        return cast(R, present)
    values = kept(session, (model.__name__, key), lambda s: _column_values(s.get(model, key)))
    if values is None:
        return None
    found = session.identity_map.get(identity)
    if found is not None:  # loaded just now, by the miss
        return cast(R, found)
    row = model(**values)
    make_transient_to_detached(row)
    session.add(row)
    return row


def _column_values(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


def committed(session: Session) -> None:
    """After a write transaction committed: move the kept facts on to its new head, or
    forget them."""
    info = session.info
    kinds: list[str] = info.get(_KINDS, [])
    after: tuple[int, str] | None = info.get(_AFTER)
    if not kinds and not info.get(_DIRTY):
        return
    facts = _facts_for(session)
    with facts.lock:
        keeps = not info.get(_DIRTY) and all(k in KEEPING_KINDS or k.endswith(".refused") for k in kinds)
        if keeps and after is not None and facts.stamp is not None and facts.stamp == info.get(_HEAD):
            facts.stamp = after
        else:
            facts.values.clear()
            facts.stamp = None


@event.listens_for(Session, "before_flush")
def _note_fact_rows(session: Session, _flush_context: Any, _instances: Any) -> None:
    if session.info.get(_WRITE) and not session.info.get(_DIRTY) and _pending_fact_rows(session):
        session.info[_DIRTY] = True
