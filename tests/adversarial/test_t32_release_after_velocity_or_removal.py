"""THREATS 32: release re-evaluates velocity and membership. A window that filled after
approval (other withdrawals released meanwhile) or an approver removed since approval
stops the release."""

from __future__ import annotations

from tests.adversarial.limits_helpers import count_ok, refused
from tests.conftest import World
from tests.helpers.withdrawals import (
    approve_proposal,
    btc_intent,
    create_approved,
    fresh_sessions,
    policy_doc,
    rule,
    setup,
)

HOUR = 3600
LONG = {"request_ttl_seconds": 7 * 86400, "approval_ttl_seconds": 2 * 86400}


def test_t32_release_after_the_velocity_window_filled_refused(world: World) -> None:
    """Both requests passed velocity when made (each alone in its window), both were
    approved; once the first is released, releasing the second would put 2 x ~81,000
    out of the wallet inside one hour against a limit of 150,000."""
    velocity = {"amount": "150000", "period_seconds": HOUR}
    s = setup(world, policy=policy_doc(2, [rule("capped", velocity=velocity, **LONG)]))
    first = create_approved(world, btc_intent(s, amount=80_000))
    world.clock.advance(HOUR + 1)
    fresh_sessions(world)
    second = create_approved(world, btc_intent(s, amount=80_000))
    assert second["status"] == "approved"
    assert world.client.withdrawals.release(world["bob"], first["id"])["status"] == "released"
    err = refused(
        world,
        "velocity_exceeded",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        second["id"],
    )
    assert "over the rule's limit 150000" in err.message
    assert world.client.withdrawals.get(world["olga"], second["id"])["signed_tx"] is None
    assert count_ok(world, "withdrawal.released") == 1
    # Once the first release is out of the window the second may go.
    world.clock.advance(HOUR)
    fresh_sessions(world)
    assert world.client.withdrawals.release(world["bob"], second["id"])["status"] == "released"


def test_t32_wallet_limit_filled_after_approval_refused_at_release(world: World) -> None:
    doc = policy_doc(2, [rule("default", **LONG)])
    doc["wallet_limits"] = [{"name": "btc-hour", "period_seconds": HOUR, "max_count": 1}]
    s = setup(world, policy=doc)
    first = create_approved(world, btc_intent(s))
    world.clock.advance(HOUR + 1)
    fresh_sessions(world)
    second = create_approved(world, btc_intent(s))
    world.client.withdrawals.release(world["bob"], first["id"])
    refused(
        world,
        "wallet_limit_exceeded",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        second["id"],
    )


def test_t32_release_after_the_only_approver_was_removed_refused(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("default", **LONG)]))
    w = create_approved(world, btc_intent(s), by=("cora",))
    prop = world.client.members.propose_remove(world["mark"], world["cora"].member_id)
    approve_proposal(world, prop["id"], "bob")
    err = refused(
        world,
        "quorum_not_met",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        w["id"],
    )
    assert "custodian 0/1" in err.message
    assert world.client.withdrawals.get(world["olga"], w["id"])["signed_tx"] is None
