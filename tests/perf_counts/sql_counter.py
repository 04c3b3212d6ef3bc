"""Counting the SQL statements the server runs for chosen client calls."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from tandem.client import Client
from tandem.services import Tandem


def withdrawal_call(method: str, path: str) -> str | None:
    """The lifecycle step a request is, or None (pins, sessions, audit reads)."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts[:2] != ["v1", "withdrawals"]:
        return None
    if method == "POST" and parts[2:] == ["operations"]:
        return "prepare"
    if method == "POST" and len(parts) == 2:
        return "create"
    if method == "GET" and len(parts) == 3:
        return "view"
    if method == "GET" and len(parts) == 2:
        return "list"
    if method == "POST" and len(parts) == 4 and parts[3] in ("approve", "release"):
        return parts[3]
    return None


class SqlCounter:
    """Counts the statements every engine of ``svc`` executes while a call that
    ``classify`` names is in flight on ``client``. The server runs in another thread
    (the test client's portal) but each call is synchronous, so one flag suffices."""

    def __init__(
        self,
        svc: Tandem,
        client: Client,
        classify: Callable[[str, str], str | None] = withdrawal_call,
    ) -> None:
        self.per_call: Counter[str] = Counter()
        self.statements: list[tuple[str, str]] = []
        self._current: str | None = None
        self._lock = threading.Lock()
        self._engines: list[Engine] = list({id(e): e for e in (svc.db.writer, svc.db.reader)}.values())
        for engine in self._engines:
            event.listen(engine, "before_cursor_execute", self._on_execute)
        original = client.request

        def request(method: str, path: str, **kwargs: Any) -> Any:
            name = classify(method, path)
            if name is None:
                return original(method, path, **kwargs)
            self._current = name
            try:
                return original(method, path, **kwargs)
            finally:
                self._current = None

        client.request = request  # type: ignore[method-assign]

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        name = self._current
        if name is not None:
            with self._lock:
                self.per_call[name] += 1
                self.statements.append((name, statement))

    def total(self) -> int:
        return sum(self.per_call.values())

    def reset(self) -> None:
        self.per_call.clear()
        self.statements.clear()

    def close(self) -> None:
        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._on_execute)
