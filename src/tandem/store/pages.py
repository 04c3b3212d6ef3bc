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
from typing import Any

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
