"""THREATS 30: structuring. Many withdrawals just under a rule's threshold each match the
weak rule; wallet-level limits (policy ``wallet_limits``) count them together whichever
rule matched: a window count, a window total, and a cumulative threshold above which
the stronger quorum and delay apply."""

from __future__ import annotations

from typing import Any

from tests.adversarial.limits_helpers import refused
from tests.conftest import World
from tests.helpers.withdrawals import (
    approve,
    approve_proposal,
    btc_intent,
    eth_intent,
    pass_delay,
    policy_doc,
    rule,
    setup,
)

LARGE = "100000"  # the rule threshold the attacker stays under


def structured_policy(**limit: Any) -> dict[str, Any]:
    doc = policy_doc(
        2,
        [
            rule(
                "large",
                custodians=2,
                match={"min_amount": LARGE},
                time_lock={"above": "0", "delay_seconds": 3600},
                approval_ttl_seconds=7200,
            ),
            rule("default", approval_ttl_seconds=7200),
        ],
    )
    doc["wallet_limits"] = [{"name": "btc-day", "match": {"asset": "BTC"}, "period_seconds": 86400, **limit}]
    return doc


def test_t30_without_wallet_limits_structuring_passes(world: World) -> None:
    """The weakness, shown once: under the rule's threshold each request needs one
    custodian and no delay, however many there are."""
    s = setup(world, policy=structured_policy(max_count=1000))
    for _ in range(4):
        w = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=90_000))
        assert w["decision"]["rule"] == "default"
        assert w["decision"]["required"] == {"custodian": 1}
        assert w["time_lock_until"] is None


def test_t30_many_small_withdrawals_refused_by_the_wallet_count(world: World) -> None:
    s = setup(world, policy=structured_policy(max_count=8))
    for _ in range(8):
        world.client.withdrawals.create(world["alice"], btc_intent(s, amount=10_000))
        world.clock.advance(5)
    err = refused(
        world,
        "wallet_limit_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, amount=10_000),
    )
    assert "9 withdrawals" in err.message
    assert "over 8" in err.message
    assert err.http_status == 403
    assert len(world.client.withdrawals.list(world["olga"])) == 8
    # Another asset of the same wallet is not this limit's business.
    assert world.client.withdrawals.create(world["alice"], eth_intent(s))["status"] == "pending"


def test_t30_wallet_total_refuses_what_each_rule_allows(world: World) -> None:
    s = setup(world, policy=structured_policy(max_amount="250000"))
    for _ in range(2):  # 2 x (90,000 + ~1,045 of fee): under 250,000
        world.client.withdrawals.create(world["alice"], btc_intent(s, amount=90_000))
    err = refused(
        world,
        "wallet_limit_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, amount=90_000),
    )
    assert "over 250000" in err.message


def test_t30_cumulative_threshold_brings_the_stronger_quorum_and_delay(world: World) -> None:
    escalate = {"above": "150000", "approvals": {"custodian": 2}, "delay_seconds": 3600}
    s = setup(world, policy=structured_policy(escalate=escalate))
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=60_000))
    second = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=60_000))
    for w in (first, second):
        assert w["decision"]["required"] == {"custodian": 1}
        assert w["time_lock_until"] is None
    third = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=60_000))
    assert third["decision"]["rule"] == "default"  # still the weak rule ...
    assert third["decision"]["required"] == {"custodian": 2}  # ... but the wallet's quorum
    assert third["time_lock_until"] == third["created_at"] + 3600
    assert any("cumulative" in line for line in third["decision"]["explanation"])

    # One custodian is no longer enough, and two must still wait out the delay.
    assert approve(world, third["id"], "bob")["status"] == "pending"
    refused(
        world,
        "invalid_state",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        third["id"],
    )
    assert approve(world, third["id"], "cora")["status"] == "approved"
    refused(
        world,
        "time_locked",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        third["id"],
    )
    pass_delay(world, 3600)
    assert world.client.withdrawals.release(world["bob"], third["id"])["status"] == "released"


def test_t30_wallet_limits_are_policy_data(world: World) -> None:
    """A wallet limit that limits nothing is refused when proposed; a good one is shown
    by the policy in force, and the other side's approval and the delay apply as usual."""
    setup(world)
    empty = {**structured_policy(), "wallet_limits": [{"name": "x", "period_seconds": 60}]}
    err = refused(
        world, "invalid_input", "policy.propose", world.client.policy.propose, world["alice"], empty
    )
    assert "limits nothing" in err.message
    prop = world.client.policy.propose(world["alice"], structured_policy(max_count=3))
    approve_proposal(world, prop["id"])
    pass_delay(world)
    shown = world.client.policy.show(world["olga"])
    assert shown["version"] == 2
    assert shown["policy"]["wallet_limits"][0]["max_count"] == 3
