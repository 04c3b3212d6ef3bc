"""THREATS 25: an outpoint already in an open, approved or released (unconfirmed)
withdrawal is spent again - refused until the first is rejected, cancelled, vetoed or
expired.

Each output a withdrawal spends is reserved in the database inside the create
transaction (a table keyed by the outpoint); a second request naming it is refused with
``outpoint_reserved`` and leaves nothing behind but its refusal in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from scripts.harness import funding_tx, utxo
from tests.conftest import World
from tests.helpers.audit import audit_entries, refusals
from tests.helpers.withdrawal_raw import create_unchecked, withdrawal_state
from tests.helpers.withdrawals import approve, btc_intent, fresh_sessions, policy_doc, rule, setup

from tandem.core.chains import bitcoin as btc
from tandem.errors import InputError, RemoteError


def two_outputs(world: World, s: Any) -> tuple[list[dict[str, Any]], btc.Transaction]:
    deposit = funding_tx(s.btc_from, [80_000, 90_000])
    return [utxo(deposit, 0), utxo(deposit, 1)], deposit


def attempt(world: World, s: Any, spend: list[dict[str, Any]]) -> dict[str, Any]:
    """A second withdrawal over ``spend``: refused, nothing changed, the refusal logged."""
    before = withdrawal_state(world)
    logged = len(refusals(world, "outpoint_reserved"))
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    assert (err.value.http_status, err.value.remote_code) == (409, "outpoint_reserved")
    assert withdrawal_state(world) == before
    entries = refusals(world, "outpoint_reserved")
    assert len(entries) == logged + 1
    assert entries[-1]["kind"] == "withdrawal.create.refused"
    return entries[-1]


def test_an_output_of_a_pending_withdrawal_cannot_be_spent_again(world: World) -> None:
    s = setup(world)
    spend, deposit = two_outputs(world, s)
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    assert {(r[1], r[2], r[3]) for r in withdrawal_state(world)["reservations"]} == {
        (deposit.txid, 0, first["id"]),
        (deposit.txid, 1, first["id"]),
    }
    # Only one of its outputs, beside a fresh one, is enough to be refused.
    fresh = utxo(funding_tx(s.btc_from, [70_000]), 0)
    entry = attempt(world, s, [fresh, spend[1]])
    assert f"{deposit.txid}:1" in entry["data"]["reason"]
    assert first["id"] in entry["data"]["reason"]


@pytest.mark.parametrize("state", ["approved", "released"])
def test_approved_and_released_withdrawals_keep_their_outputs(world: World, state: str) -> None:
    s = setup(world)
    spend, _ = two_outputs(world, s)
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    assert approve(world, first["id"])["status"] == "approved"
    if state == "released":
        assert world.client.withdrawals.release(world["bob"], first["id"])["status"] == "released"
    attempt(world, s, spend)


def _reject(world: World, wid: str) -> None:
    world.client.withdrawals.reject(world["bob"], wid, reason="not today")


def _cancel(world: World, wid: str) -> None:
    world.client.withdrawals.cancel(world["alice"], wid)


def _expire(world: World, wid: str) -> None:
    view = world.client.withdrawals.get(world["olga"], wid)
    world.clock.advance(view["expires_at"] - world.clock() + 1)
    fresh_sessions(world)


@pytest.mark.parametrize("end", [_reject, _cancel, _expire], ids=["rejected", "cancelled", "expired"])
def test_once_the_first_ends_the_output_can_be_spent(world: World, end: Callable[[World, str], None]) -> None:
    s = setup(world)
    spend, deposit = two_outputs(world, s)
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    attempt(world, s, spend)
    end(world, first["id"])
    second = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    assert second["status"] == "pending"
    assert {(r[1], r[2], r[3]) for r in withdrawal_state(world)["reservations"]} == {
        (deposit.txid, 0, second["id"]),
        (deposit.txid, 1, second["id"]),
    }
    # And now the second holds them.
    attempt(world, s, spend)


def test_a_vetoed_withdrawal_frees_its_outputs(world: World) -> None:
    lock = {"time_lock": {"above": "0", "delay_seconds": 3600}}
    s = setup(world, policy=policy_doc(2, [rule("locked", **lock)]))
    spend, _ = two_outputs(world, s)
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    approve(world, first["id"])
    world.client.withdrawals.veto(world["bob"], first["id"], reason="stop")
    second = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    assert second["status"] == "pending"


def test_the_same_output_twice_in_one_intent_is_refused(world: World) -> None:
    s = setup(world)
    spend, _ = two_outputs(world, s)
    twice = [spend[0], spend[0]]
    with pytest.raises(InputError, match="lists an output twice"):
        world.client.withdrawals.create(world["alice"], btc_intent(s, spend=twice))
    before = withdrawal_state(world)
    response = create_unchecked(world, {**btc_intent(s, spend=twice), "from": s.btc_from})
    assert (response.status_code, response.json()["code"]) == (422, "invalid_input")
    assert "twice" in response.json()["message"]
    assert withdrawal_state(world) == before
    assert any(
        e["kind"] == "withdrawal.create.refused" and "twice" in e["data"]["reason"]
        for e in audit_entries(world)
        if e["outcome"] == "refused"
    )
