"""SQL statements per withdrawal lifecycle (prepare, create, view, approve, release),
counted with SQLAlchemy's cursor events on the server's own engines (the statements of
the five calls, session lookups included). The count must not depend on how many
withdrawals came before; it was 93 before the hot-path work, then 84, then 78
(operation shares, outpoint reservations and a release's members each read once per
call), then 72 (a nonce is spent by one insert that does nothing when it is there; a
release's Idempotency-Key is looked up once, in its write transaction), then 57
(policies, address book, key sets, their addresses and keys, and the membership come
from the per-process fact cache, valid for the audit head each write transaction reads
once, tandem.store.facts), and is 55 now (a read session and its member in one query;
outpoint reservations inserted first, existing ones read only on a conflict); the
issue's budget of 35 is not reached yet (the strict xfail below turns red once it is,
so that the ceiling here gets lowered)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import World
from tests.helpers.withdrawals import btc_intent, setup
from tests.perf_counts.sql_counter import SqlCounter

CEILING = 55  # what a lifecycle costs today: a regression guard
COLD_CEILING = 62  # the first one after a change of policy, address book or key sets
BUDGET = 35  # issue 11's goal


def _lifecycle(world: World, s: Any, amount: int) -> None:
    created = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=amount))
    approved = world.client.withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    assert approved["status"] == "approved"
    out = world.client.withdrawals.release(world["bob"], created["id"])
    assert out["status"] == "released"


def _counts(world: World) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(the first lifecycle after the set-up, the second, the fifth)."""
    s = setup(world)
    counter = SqlCounter(world.svc, world.client)
    try:
        _lifecycle(world, s, 50_000)
        first = dict(counter.per_call)
        counter.reset()
        _lifecycle(world, s, 50_001)
        second = dict(counter.per_call)
        for n in range(2):
            _lifecycle(world, s, 50_002 + n)
        counter.reset()
        _lifecycle(world, s, 60_000)
        return first, second, dict(counter.per_call)
    finally:
        counter.close()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_lifecycle_sql_statements_flat_and_under_ceiling(world: World) -> None:
    first, second, later = _counts(world)
    assert set(first) == {"prepare", "create", "view", "approve", "release"}, first
    total = sum(later.values())
    print(f"SQL statements per lifecycle: {total} {later}; the first after the set-up: {sum(first.values())}")
    # The first lifecycle after the set-up reads what the per-process caches keep (the
    # deployment row, the facts the set-up's changes made the cache forget); from the
    # second on, the count does not move with the number of withdrawals before.
    assert total == sum(second.values()), (second, later)
    assert total <= CEILING, later
    assert sum(first.values()) <= COLD_CEILING, first


@pytest.mark.xfail(strict=True, reason="issue 11 budget of 35 statements per lifecycle not reached yet")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_lifecycle_sql_statements_within_issue_budget(world: World) -> None:
    _first, _second, later = _counts(world)
    assert sum(later.values()) <= BUDGET, later
