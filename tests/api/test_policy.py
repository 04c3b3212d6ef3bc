"""Policy and address book: data, versioned, dual-controlled, with a delay and a veto."""

from __future__ import annotations

import json

from tests.conftest import World
from tests.helpers.refusals import refused
from tests.helpers.withdrawals import (
    BTC_DEST,
    DELAY,
    approve_proposal,
    btc_intent,
    fresh_sessions,
    pass_delay,
    policy_doc,
    rule,
    setup,
)


def kinds(world: World) -> list[str]:
    lines, _ = world.client.audit.export(world["olga"])
    return [json.loads(line)["kind"] for line in lines]


def test_policy_change_waits_out_the_current_delay_then_applies(world: World) -> None:
    c = world.client
    assert c.policy.show(world["olga"])["version"] == 1
    prop = c.policy.propose(world["alice"], policy_doc(2, [rule("two", custodians=2)]))
    assert prop["kind"] == "policy.change"
    assert prop["status"] == "pending"
    done = approve_proposal(world, prop["id"])
    assert done["status"] == "approved"
    assert done["effective_at"] == world.clock() + DELAY
    info = c.policy.show(world["olga"])
    assert info["version"] == 1
    assert [v["pending"] for v in info["versions"]] == [False, True]
    world.clock.advance(DELAY - 60)
    fresh_sessions(world)
    assert c.policy.show(world["olga"])["version"] == 1
    pass_delay(world, 60)
    info = c.policy.show(world["olga"])
    assert info["version"] == 2
    assert info["policy"]["rules"][0]["approvals"] == {"custodian": 2}
    assert "policy.change_approved" in kinds(world)


def test_a_custodian_vetoes_a_policy_change_during_its_delay(world: World) -> None:
    c = world.client
    prop = c.policy.propose(world["alice"], policy_doc(2, [rule("lax", allowlist_only=False)]))
    approve_proposal(world, prop["id"])
    refused("role_not_allowed", c.policy.veto, world["mark"], prop["id"])
    vetoed = c.policy.veto(world["cora"], prop["id"], reason="no allow-list is not acceptable")
    assert vetoed["status"] == "vetoed"
    pass_delay(world)
    info = c.policy.show(world["olga"])
    assert info["version"] == 1
    assert [v["version"] for v in info["versions"]] == [1]
    # The next proposal reuses the version number the vetoed one never got.
    again = c.policy.propose(world["alice"], policy_doc(2, [rule("strict", custodians=2)]))
    assert again["status"] == "pending"


def test_veto_after_the_change_took_effect_is_refused(world: World) -> None:
    prop = world.client.policy.propose(world["alice"], policy_doc(2, [rule("two", custodians=2)]))
    approve_proposal(world, prop["id"])
    pass_delay(world)
    refused("expired", world.client.policy.veto, world["bob"], prop["id"])
    assert world.client.policy.show(world["olga"])["version"] == 2


def test_policy_proposals_are_checked(world: World) -> None:
    c = world.client
    refused("role_not_allowed", c.policy.propose, world["bob"], policy_doc(2, [rule("x")]))
    refused("policy_version_mismatch", c.policy.propose, world["alice"], policy_doc(3, [rule("x")]))
    no_custodian = policy_doc(2, [{**rule("x"), "approvals": {"custodian": 0, "manager": 2}}])
    refused("invalid_input", c.policy.propose, world["alice"], no_custodian)
    refused("unknown_field", c.policy.propose, world["alice"], {**policy_doc(2, [rule("x")]), "extra": 1})
    prop = c.policy.propose(world["alice"], policy_doc(2, [rule("x")]))
    # Another manager is the wrong role for a policy change, not a self-approval.
    refused("role_not_allowed", c.members.approve, world["mark"], prop["id"], totp=world.code("mark"))
    refused("self_approval", c.members.approve, world["alice"], prop["id"], totp=world.code("alice"))


def test_address_book_entry_applies_after_its_delay_and_can_be_removed(world: World) -> None:
    s = setup(world)
    c = world.client
    from tests.helpers.withdrawals import STRANGER_BTC

    prop = c.policy.propose_address(
        world["alice"], chain="bitcoin", network="testnet", address=STRANGER_BTC, label="new broker"
    )
    approve_proposal(world, prop["id"])
    book = {e["address"]: e for e in c.policy.address_book(world["olga"])}
    assert book[STRANGER_BTC]["status"] == "pending"
    refused(
        "destination_not_allowed",
        c.withdrawals.create,
        world["alice"],
        btc_intent(s, destination=STRANGER_BTC),
    )
    pass_delay(world)
    created = c.withdrawals.create(world["alice"], btc_intent(s, destination=STRANGER_BTC))
    assert created["status"] == "pending"

    removal = c.policy.propose_address_removal(world["alice"], s.entries["cold vault btc"])
    approve_proposal(world, removal["id"])
    assert c.withdrawals.create(world["alice"], btc_intent(s))["status"] == "pending"
    pass_delay(world)
    book = {e["address"]: e for e in c.policy.address_book(world["olga"])}
    assert book[BTC_DEST]["status"] == "removed"
    refused("destination_not_allowed", c.withdrawals.create, world["alice"], btc_intent(s))


def test_vetoed_address_never_becomes_allowed(world: World) -> None:
    s = setup(world)
    c = world.client
    from tests.helpers.withdrawals import STRANGER_BTC

    prop = c.policy.propose_address(
        world["alice"], chain="bitcoin", network="testnet", address=STRANGER_BTC, label="suspicious"
    )
    approve_proposal(world, prop["id"])
    c.policy.veto(world["bob"], prop["id"], reason="not ours")
    pass_delay(world)
    book = {e["address"]: e for e in c.policy.address_book(world["olga"])}
    assert book[STRANGER_BTC]["status"] == "vetoed"
    refused(
        "destination_not_allowed",
        c.withdrawals.create,
        world["alice"],
        btc_intent(s, destination=STRANGER_BTC),
    )


def test_address_proposals_are_validated(world: World) -> None:
    c, alice = world.client, world["alice"]
    bad_checksum = "0x52908400098527886E0F7030069857D2E4169EE7".replace("E", "e", 1)
    refused(
        "invalid_address",
        c.policy.propose_address,
        alice,
        chain="ethereum",
        network="sepolia",
        address=bad_checksum,
        label="typo",
    )
    refused(
        "invalid_address",
        c.policy.propose_address,
        alice,
        chain="bitcoin",
        network="testnet",
        address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        label="mainnet address on testnet",
    )
    refused(
        "invalid_input",
        c.policy.propose_address,
        alice,
        chain="bitcoin",
        network="testnet",
        address=BTC_DEST,
        label="bad\x1blabel",
    )
    refused(
        "role_not_allowed",
        c.policy.propose_address,
        world["bob"],
        chain="bitcoin",
        network="testnet",
        address=BTC_DEST,
        label="custodian proposing",
    )


def test_policy_show_explains_which_rule_applies_and_why(world: World) -> None:
    doc = policy_doc(
        2,
        [
            rule(
                "large", custodians=2, match={"chain": "bitcoin", "min_amount": "100000"}, max_amount="150000"
            ),
            rule("default"),
        ],
    )
    s = setup(world, policy=doc)
    c = world.client
    facts = {
        "wallet": s.keyset.id,
        "chain": "bitcoin",
        "network": "testnet",
        "asset": "BTC",
        "amount": "120000",
        "destination": BTC_DEST,
    }
    out = c.policy.explain(world["olga"], **facts)
    assert out["allowed"] is True
    assert out["decision"]["rule"] == "large"
    assert out["decision"]["required"] == {"custodian": 2}
    assert any("cold vault btc" in line for line in out["decision"]["explanation"])
    over = c.policy.explain(world["olga"], **{**facts, "amount": "200000"})
    assert over["allowed"] is False
    assert over["decision"]["violations"][0]["code"] == "limit_exceeded"
    small = c.withdrawals.create(world["alice"], btc_intent(s, amount=50_000))
    explained = c.policy.explain(world["olga"], withdrawal=small["id"])
    assert explained["decision"]["rule"] == "default"
    assert explained["decision"]["explanation"][0].startswith("rule 'large' skipped")


def test_no_matching_rule_refuses(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("eth-only", match={"chain": "ethereum"})]))
    refused("no_matching_rule", world.client.withdrawals.create, world["alice"], btc_intent(s))


def test_velocity_counts_open_requests(world: World) -> None:
    doc = policy_doc(2, [rule("capped", velocity={"amount": "120000", "period_seconds": 86400})])
    s = setup(world, policy=doc)
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=70_000))
    refused(
        "velocity_exceeded", world.client.withdrawals.create, world["alice"], btc_intent(s, amount=60_000)
    )
    world.client.withdrawals.cancel(world["alice"], first["id"])
    assert (
        world.client.withdrawals.create(world["alice"], btc_intent(s, amount=60_000))["status"] == "pending"
    )
