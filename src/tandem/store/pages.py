"""Keyset pagination with opaque cursors.

A list route returns at most ``limit`` rows (default :data:`DEFAULT_LIMIT`, at most
:data:`MAX_LIMIT`) ordered by a unique key, and a cursor naming the last row sent; the
next page is the rows strictly after it. Cost per page is one indexed range read
whatever the table's size, and rows written meanwhile are neither skipped nor repeated.
The cursor is base64url of canonical JSON: clients treat it as opaque, the server
parses it strictly and refuses anything it did not write with ``invalid_input``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Integer, and_, or_
from sqlmodel import Session

from tandem.core.canonical import MAX_SAFE_INT, canonical, loads_strict
from tandem.errors import Error, InputError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
NEXT_CURSOR_HEADER = "Tandem-Next-Cursor"
_MAX_CURSOR_CHARS = 512


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    return limit


def encode_cursor(kind: str, key: list[Any]) -> str:
    raw = canonical({"k": kind, "v": key})
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str | None, kind: str, shape: tuple[type, ...]) -> list[Any] | None:
    """The key a cursor of ``kind`` names (its parts of the types in ``shape``), or None."""
    if cursor is None or cursor == "":
        return None
    bad = InputError("cursor is not one this list handed out")
    if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR_CHARS or not cursor.isascii():
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = loads_strict(raw, max_bytes=_MAX_CURSOR_CHARS, max_depth=3)
    except (binascii.Error, ValueError, Error):
        raise bad from None
    if not isinstance(doc, dict) or set(doc) != {"k", "v"} or doc["k"] != kind:
        raise bad
    key = doc["v"]
    if not isinstance(key, list) or len(key) != len(shape):
        raise bad
    for part, want in zip(key, shape, strict=True):
        if type(part) is not want:
            raise bad
        if isinstance(part, int) and not 0 <= part <= MAX_SAFE_INT:
            raise bad
        if isinstance(part, str) and len(part) > 200:
            raise bad
    if canonical(doc) != raw:
        raise bad
    return key


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of rows and the cursor of the next page (None on the last)."""

    rows: list[T]
    next_cursor: str | None


def after_key(columns: Sequence[Any], key: Sequence[Any], *, descending: bool = False) -> Any:
    """SQL for "the row's ``columns`` sort strictly after ``key``" (lexicographically;
    with ``descending``, strictly before it)."""
    terms = []
    for i, column in enumerate(columns):
        equal = [c == v for c, v in zip(columns[:i], key[:i], strict=True)]
        terms.append(and_(*equal, column < key[i] if descending else column > key[i]))
    return or_(*terms)


def read_page(
    session: Session,
    query: Any,
    *,
    kind: str,
    order: Sequence[Any],
    limit: int | None,
    cursor: str | None,
    descending: bool = False,
) -> Page[Any]:
    """Rows of ``query`` (filters already applied) in the unique ``order`` (columns of
    the row, creation time first and id last; ``descending``: newest first), after the
    row ``cursor`` names, at most ``limit`` of them: one statement whatever the table
    holds."""
    size = check_limit(limit)
    names = [column.key for column in order]
    shape = tuple(int if isinstance(column.type, Integer) else str for column in order)
    after = decode_cursor(cursor, kind, shape)
    if after is not None:
        query = query.where(after_key(order, after, descending=descending))
    sort = [c.desc() for c in order] if descending else list(order)
    rows = list(session.exec(query.order_by(*sort).limit(size + 1)).all())
    more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if more else None
    return Page(rows, encode_cursor(kind, [getattr(last, n) for n in names]) if last is not None else None)


def expiring_status(
    status_column: Any, expires_column: Any, status: str, *, expiring: Iterable[str], expired: str, now: int
) -> Any:
    """SQL for "the status as it reads at ``now`` is ``status``", for a lifecycle whose
    ``expiring`` states read as ``expired`` once ``now >= expires_at``."""
    open_states = sorted(str(s) for s in expiring)
    if status == expired:
        return or_(status_column == status, and_(status_column.in_(open_states), expires_column <= now))
    if status in open_states:
        return and_(status_column == status, expires_column > now)
    return status_column == status


def page_of(
    items: Sequence[T],
    key: Callable[[T], list[Any]],
    *,
    kind: str,
    shape: tuple[type, ...],
    limit: int | None,
    cursor: str | None,
) -> Page[T]:
    """A page of ``items`` held in memory, already in the unique order of ``key``: the
    items strictly after the cursor's key, found by bisection, at most ``limit``."""
    size = check_limit(limit)
    after = decode_cursor(cursor, kind, shape)
    start = 0 if after is None else bisect.bisect_right(items, after, key=key)
    chosen = list(items[start : start + size + 1])
    more = len(chosen) > size
    chosen = chosen[:size]
    return Page(chosen, encode_cursor(kind, key(chosen[-1])) if more else None)
