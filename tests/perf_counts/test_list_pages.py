"""Withdrawal lists come in cursor pages: a walk sees every row once, the status filter
runs in SQL, and a page costs the same statements whatever the table holds."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select
from tests.conftest import World
from tests.helpers.withdrawals import btc_intent, setup
from tests.perf_counts.sql_counter import SqlCounter

from tandem.client import RemoteError
from tandem.client import withdrawal as cw
from tandem.store import pages
from tandem.store.models import Withdrawal


def _copies(world: World, n: int, *, start: int = 0) -> None:
    """``n`` more rows shaped exactly like the first real withdrawal, some sharing a
    creation time (the cursor's tie-break on id is exercised)."""
    with world.svc.db.write() as session:
        template = session.exec(select(Withdrawal)).first()
        assert template is not None
        fields = template.model_dump()
        for i in range(start, start + n):
            row = dict(fields, id=f"wd_copy{i:05d}", created_at=template.created_at + i // 3)
            row["status"] = "pending" if i % 2 else "rejected"
            session.add(Withdrawal(**row))


def _page(world: World, **params: Any) -> tuple[list[dict[str, Any]], str | None]:
    seen: list[str | None] = []
    token = world.client.session(world["olga"])
    body = world.client.request("GET", "/v1/withdrawals", token=token, params=params, next_cursor=seen)
    return body, seen[0]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_walk_250_withdrawals_in_pages_without_dupes_or_misses(world: World) -> None:
    s = setup(world)
    cw.create_withdrawal(world.client, world["alice"], btc_intent(s))
    _copies(world, 249)
    with world.svc.db.read() as session:
        expected = [
            r.id for r in sorted(session.exec(select(Withdrawal)).all(), key=lambda r: (r.created_at, r.id))
        ]
    assert len(expected) == 250

    walked: list[str] = []
    cursor: str | None = None
    sizes = []
    while True:
        body, cursor = _page(world, limit=40, **({"cursor": cursor} if cursor else {}))
        sizes.append(len(body))
        walked.extend(w["id"] for w in body)
        if cursor is None:
            break
    assert walked == expected
    assert sizes == [40] * 6 + [10]

    # The default page is 100 and the cap 500; the client's helper follows the cursors.
    first, cursor = _page(world)
    assert len(first) == pages.DEFAULT_LIMIT
    assert cursor is not None
    assert [w["id"] for w in cw.list_withdrawals(world.client, world["olga"])] == expected
    pending = cw.list_withdrawals(world.client, world["olga"], status="pending")
    assert [w["id"] for w in pending] == [
        i for i in expected if not i.startswith("wd_copy") or int(i[7:]) % 2
    ]
    assert all(w["status"] == "pending" for w in pending)
    assert cw.list_withdrawals(world.client, world["olga"], status="expired") == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"cursor": pages.encode_cursor("ceremonies", [1, "x"])},
    ],
)
def test_bad_page_parameters_are_refused(world: World, params: dict[str, Any]) -> None:
    with pytest.raises(RemoteError) as err:
        _page(world, **params)
    assert err.value.remote_code == "invalid_input"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_list_page_sql_count_does_not_grow_with_rows(world: World) -> None:
    s = setup(world)
    created = cw.create_withdrawal(world.client, world["alice"], btc_intent(s))
    cw.approve_withdrawal(world.client, world["bob"], created["id"], totp=world.code("bob"))
    _copies(world, 4)
    counter = SqlCounter(world.svc, world.client)
    try:
        world.client.session(world["olga"])
        body, _ = _page(world)
        assert len(body) == 5
        small = counter.total()
        counter.reset()
        _copies(world, 45, start=4)
        body, _ = _page(world)
        assert len(body) == 50
        (real,) = [w for w in body if w["id"] == created["id"]]
        assert [a["member"] for a in real["approvals"]] == [world["bob"].member_id]
        large = counter.total()
    finally:
        counter.close()
    assert small == large, (small, large)
    print(f"SQL statements per list page: {large}")
