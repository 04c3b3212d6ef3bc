"""THREATS 29: an Ethereum max fee or priority fee above policy is refused, and the
worst-case fee (gas_limit x max_fee_per_gas) counts against limits and velocity."""

from __future__ import annotations

from typing import Any

from tests.adversarial.limits_helpers import refused
from tests.conftest import World
from tests.helpers.withdrawals import TOKEN, eth_intent, policy_doc, rule, setup

from tandem.client import withdrawal as cw


def with_fees(intent: dict[str, Any], **fees: Any) -> dict[str, Any]:
    return {**intent, "ethereum": {**intent["ethereum"], **fees}}


def test_t29_a_million_eth_of_possible_fee_on_a_0_001_eth_withdrawal_refused(world: World) -> None:
    """The issue's case: 30M gas at 4 * 10^16 wei per gas is 1.2 million ETH of
    worst-case fee on a 0.001 ETH withdrawal. No rule needed: the chain caps refuse it."""
    s = setup(world)
    intent = with_fees(
        eth_intent(s, amount=10**15),
        gas_limit=30_000_000,
        max_fee_per_gas=str(4 * 10**16),
        max_priority_fee_per_gas="1000000000",
    )
    err = refused(
        world, "fee_exceeded", "withdrawal.create", world.client.withdrawals.create, world["alice"], intent
    )
    assert err.http_status == 403
    assert world.client.withdrawals.list(world["olga"]) == []


def test_t29_priority_fee_above_the_chain_cap_refused(world: World) -> None:
    s = setup(world)
    intent = with_fees(
        eth_intent(s), max_fee_per_gas=str(500 * 10**9), max_priority_fee_per_gas=str(200 * 10**9)
    )
    err = refused(
        world, "fee_exceeded", "withdrawal.create", world.client.withdrawals.create, world["alice"], intent
    )
    assert "priority fee" in err.message


def test_t29_rule_caps_max_fee_per_gas_and_tip(world: World) -> None:
    fees = {"max_fee_rate": str(20 * 10**9), "max_priority_fee": str(2 * 10**9)}
    s = setup(world, policy=policy_doc(2, [rule("default", fees=fees)]))
    # eth_intent asks 30 gwei per gas: over this rule's 20.
    err = refused(
        world,
        "fee_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s),
    )
    assert "fee rate" in err.message
    refused(
        world,
        "fee_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        with_fees(eth_intent(s), max_fee_per_gas=str(10 * 10**9), max_priority_fee_per_gas=str(3 * 10**9)),
    )
    ok = world.client.withdrawals.create(
        world["alice"],
        with_fees(eth_intent(s), max_fee_per_gas=str(10 * 10**9), max_priority_fee_per_gas=str(10**9)),
    )
    assert ok["status"] == "pending"


def test_t29_worst_case_fee_counts_against_velocity(world: World) -> None:
    """Two withdrawals of 0.001 ETH under a 0.002 ETH velocity limit: without fees they
    would exactly fit; with 21000 x 30 gwei = 0.00063 ETH of worst-case fee each they do not."""
    velocity = {"amount": str(2 * 10**15), "period_seconds": 86400}
    s = setup(world, policy=policy_doc(2, [rule("default", velocity=velocity)]))
    first = world.client.withdrawals.create(world["alice"], eth_intent(s, amount=10**15, nonce=1))
    assert first["fee"] == str(21000 * 30 * 10**9)
    err = refused(
        world,
        "velocity_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s, amount=10**15, nonce=2),
    )
    assert str(10**15 + 21000 * 30 * 10**9) in err.message


def test_t29_worst_case_fee_counts_against_max_amount(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("default", max_amount=str(10**15 + 10**14))]))
    refused(
        world,
        "limit_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s, amount=10**15),
    )


def test_t29_token_withdrawal_fee_is_in_eth_and_still_capped(world: World) -> None:
    """A token's gas is paid in ETH: it does not count against the token amount, but the
    chain's caps hold, and the review says the fee is paid in another asset."""
    s = setup(world, policy=policy_doc(2, [rule("default", max_amount="5")]))
    w = world.client.withdrawals.create(world["alice"], eth_intent(s, amount=5, asset=TOKEN))
    review = cw.review(world.client.withdrawals.get(world["bob"], w["id"])).fee
    assert review is not None
    assert review["asset"] == "ETH"
    assert review["share"] is None
    refused(
        world,
        "fee_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        with_fees(
            eth_intent(s, amount=5, asset=TOKEN, nonce=8), gas_limit=3_000_000, max_fee_per_gas=str(10**12)
        ),
    )


def test_t29_approval_view_warns_on_a_fee_that_is_most_of_the_amount(world: World) -> None:
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], eth_intent(s, amount=10**15))
    view = world.client.withdrawals.get(world["bob"], w["id"])
    mine = cw.review(view).fee
    assert mine is not None
    assert mine["fee"] == str(21000 * 30 * 10**9)
    assert mine["rate"] == str(30 * 10**9)
    assert mine["priority_rate"] == str(10**9)
    assert mine["share"] == "63.00%"
    assert mine["warning"] is not None
    assert view["fee_review"] == mine
