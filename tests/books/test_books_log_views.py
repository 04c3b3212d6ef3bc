"""What the books read from the log per request does not grow with the log: the
register and the imported prices are kept in memory and advanced by the entries
appended since, and an entry of a write that is rolled back never reaches them."""

from __future__ import annotations

from typing import Any

import pytest
from tests.books.helpers import books_for, make_client
from tests.conftest import World

from tandem.errors import NotFoundError
from tandem.services import logview
from tandem.store import audit_log


class Folded:
    """How many log entries the views fold, per kind, since the last reset."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kinds: list[str] = []
        real = logview.LogView._advance

        def counting(view: Any, state: Any, session: Any, since: int) -> int:
            folded = view._fold

            def fold(st: Any, entries: list[dict[str, Any]], s: Any) -> None:
                self.kinds += [e["kind"] for e in entries]
                folded(st, entries, s)

            view._fold = fold
            try:
                return int(real(view, state, session, since))
            finally:
                view._fold = folded

        monkeypatch.setattr(logview.LogView, "_advance", counting)


def _price(world: World, n: int) -> dict[str, Any]:
    return {
        "asset": "ETH",
        "price": f"{2500 + n}.00",
        "currency": "EUR",
        "time": world.clock() - 10,
        "source": "Example closing price",
        "method": "last trade before period end",
    }


def _noise(world: World, n: int) -> None:
    """``n`` entries of other kinds, through the log's own append."""
    now = world.svc.clock()
    with world.svc.db.write() as session:
        deployment = world.svc.runner.deployment(session).id
        records = [audit_log.Record("noise.entry", None, "ok", None, None, {"i": i}, now) for i in range(n)]
        audit_log.append_batch(session, world.svc.key, deployment=deployment, records=records)


def test_prices_and_register_read_only_what_is_new(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    books = books_for(world, None)
    make_client(world, books, "ann")
    for n in range(3):
        signed = world.client.sign(world["alice"], "prices.import", {"prices": [_price(world, n)]})
        books.import_prices(signed)
    _noise(world, 300)
    folded = Folded(monkeypatch)

    assert [str(p.price) for p in books.prices()] == ["2500.00", "2501.00", "2502.00"]
    assert folded.kinds.count("prices.imported") == 3  # the first read, once
    folded.kinds.clear()
    assert len(books.prices()) == 3
    assert [c["id"] for c in books.clients()] == ["ann"]
    first = list(folded.kinds)
    folded.kinds.clear()
    assert len(books.prices()) == 3
    assert [c["id"] for c in books.clients()] == ["ann"]
    assert folded.kinds == []  # nothing new: nothing read again
    assert "noise.entry" not in first

    books.import_prices(world.client.sign(world["alice"], "prices.import", {"prices": [_price(world, 9)]}))
    _noise(world, 300)
    folded.kinds.clear()
    assert [str(p.price) for p in books.prices()][-1] == "2509.00"
    assert folded.kinds == ["prices.imported"]  # one new import, not the four

    # A statement for a client that does not exist is refused and rolled back: the
    # register and the prices the view holds are the committed ones.
    folded.kinds.clear()
    with pytest.raises(NotFoundError):
        books.statements(
            world.client.sign(world["bob"], "statement.issue", {"period": "2026-Q3", "client": "nobody"}),
            custodian="Example Custodian S.A.",
        )
    assert len(books.prices()) == 4
    assert [c["id"] for c in books.clients()] == ["ann"]


def _walk(world: World, path: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every item of ``path`` in pages of ``limit``, following the cursor header."""
    token = world.client.session(world["olga"])
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages_read = 0
    while True:
        seen: list[str | None] = []
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = world.client.request("GET", path, token=token, params=params, next_cursor=seen)
        assert len(body) <= limit
        items += body
        pages_read += 1
        cursor = seen[0]
        if cursor is None:
            return items, pages_read


def test_the_books_lists_come_in_cursor_pages(world: World) -> None:
    books = books_for(world, None)
    for cid in ("cyd", "ann", "ben", "dee", "eve"):
        make_client(world, books, cid)
    for cid in ("zed", "yan", "xia"):
        books.propose_client(
            world.client.sign(
                world["alice"], "client.propose", {"id": cid, "name": cid, "segregation": "omnibus"}
            )
        )
    for n in range(5):
        signed = world.client.sign(world["alice"], "prices.import", {"prices": [_price(world, n)]})
        books.import_prices(signed)

    clients, read = _walk(world, "/v1/books/clients", 2)
    assert [c["id"] for c in clients] == ["ann", "ben", "cyd", "dee", "eve"]
    assert read == 3
    proposals, read = _walk(world, "/v1/books/proposals", 2)
    assert sorted(p["content"]["id"] for p in proposals) == ["xia", "yan", "zed"]
    assert [p["proposal"] for p in proposals] == sorted(p["proposal"] for p in proposals)
    assert read == 2
    prices, read = _walk(world, "/v1/books/prices", 2)
    assert [p["price"] for p in prices] == [f"{2500 + n}.00" for n in range(5)]
    assert read == 3
    assert world.client.get_all(world["olga"], "/v1/books/prices") == prices
    for path, other in (("/v1/books/clients", "prices"), ("/v1/books/prices", "clients")):
        # a cursor of another list is refused, not misread
        from tandem.errors import RemoteError
        from tandem.store import pages

        shape: list[Any] = [3] if other == "prices" else ["ann"]
        with pytest.raises(RemoteError) as err:
            world.client.get(world["olga"], path, cursor=pages.encode_cursor(other, shape))
        assert err.value.remote_code == "invalid_input"


def test_a_page_in_memory_walks_every_item_once_in_order() -> None:
    from tandem.store import pages

    items = sorted((f"c{i % 4}", "ethereum", "sepolia", f"a{i}", "w", f"0x{i:02x}") for i in range(23))
    walked: list[tuple[str, ...]] = []
    cursor: str | None = None
    while True:
        page = pages.page_of(items, list, kind="positions", shape=(str,) * 6, limit=5, cursor=cursor)
        walked += page.rows
        cursor = page.next_cursor
        if cursor is None:
            break
    assert walked == items


def test_the_scans_marks_are_read_once_and_advanced(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deposit scan starts from where the last one of its network stopped; that mark
    comes from a view, so the thousandth scan does not read the 999 before it."""
    from tandem.services.books import SCAN_KIND

    books = books_for(world, None)
    now = world.svc.clock()

    def scanned(heights: list[int]) -> None:
        with world.svc.db.write() as session:
            deployment = world.svc.runner.deployment(session).id
            mark = {"chain": "ethereum", "network": "sepolia"}
            records = [
                audit_log.Record(SCAN_KIND, None, "ok", None, None, {**mark, "height": h}, now)
                for h in heights
            ]
            audit_log.append_batch(session, world.svc.key, deployment=deployment, records=records)

    scanned(list(range(100, 400)))
    folded = Folded(monkeypatch)
    with books._scans.reading(world.svc.db) as marks:
        assert marks.heights == {("ethereum", "sepolia"): 399}
    assert folded.kinds.count(SCAN_KIND) == 300
    folded.kinds.clear()
    scanned([400])
    with books._scans.reading(world.svc.db) as marks:
        assert marks.heights == {("ethereum", "sepolia"): 400}
    assert folded.kinds == [SCAN_KIND]
