"""Each refusal of THREATS.md 1-7 and 11-12 for withdrawals, tried for real."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.refusals import refused
from tests.helpers.withdrawals import (
    STRANGER_BTC,
    STRANGER_ETH,
    approve,
    approve_proposal,
    btc_intent,
    create_approved,
    eth_intent,
    policy_doc,
    rule,
    setup,
)

from tandem.core import withdrawal as wcore
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.errors import DisallowedContractCallError


def sql(world: World, statement: str, **params: Any) -> None:
    with world.svc.db.write() as session:
        session.connection().execute(text(statement), params)


def row(world: World, wid: str) -> dict[str, Any]:
    with world.svc.db.read() as session:
        result = session.connection().execute(text("SELECT * FROM withdrawal WHERE id = :id"), {"id": wid})
        return dict(result.mappings().one())


# --- who may do what (5) -------------------------------------------------------------------


def test_self_approval_refused(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("dual", custodians=1, managers=1)]))
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    refused("self_approval", approve, world, w["id"], "alice")
    assert any(
        e["kind"] == "withdrawal.approve.refused" and e["code"] == "self_approval"
        for e in audit_entries(world)
    )


def test_manager_approving_a_custodian_rule_refused(world: World) -> None:
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    refused("role_not_allowed", approve, world, w["id"], "mark")


def test_custodian_creating_refused(world: World) -> None:
    s = setup(world)
    refused("role_not_allowed", world.client.withdrawals.create, world["bob"], btc_intent(s))


def test_auditor_can_change_nothing(world: World) -> None:
    s = setup(world)
    c, olga = world.client, world["olga"]
    refused("role_not_allowed", c.withdrawals.create, olga, btc_intent(s))
    w = create_approved(world, btc_intent(s))
    body = wcore.approval_body(
        withdrawal=w["id"],
        intent_hash_hex=w["intent_hash"],
        tx_digest_hex=w["tx_digest"],
        policy_version=w["policy_version"],
        expires_at=world.clock() + 600,
    )
    env = c.sign(olga, "withdrawal.approve", body)
    refused(
        "role_not_allowed",
        c.request,
        "POST",
        f"/v1/withdrawals/{w['id']}/approve",
        json_body={"envelope": env, "totp": world.code("olga")},
    )
    refused("role_not_allowed", c.withdrawals.release, olga, w["id"])
    refused("role_not_allowed", c.withdrawals.cancel, olga, w["id"])
    refused("role_not_allowed", c.withdrawals.reject, olga, w["id"], reason="no")
    refused("role_not_allowed", c.policy.propose, olga, policy_doc(2, [rule("x")]))
    assert c.withdrawals.get(olga, w["id"])["status"] == "approved"


# --- what may leave (4) ----------------------------------------------------------------------


def test_destination_not_on_the_address_book_refused_at_create(world: World) -> None:
    s = setup(world)
    refused(
        "destination_not_allowed",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, destination=STRANGER_BTC),
    )
    refused(
        "destination_not_allowed",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s, destination=STRANGER_ETH),
    )
    refusals = [e for e in audit_entries(world) if e["kind"] == "withdrawal.create.refused"]
    assert [e["code"] for e in refusals] == ["destination_not_allowed"] * 2
    assert world.client.withdrawals.list(world["olga"]) == []


def test_token_not_allow_listed_refused(world: World) -> None:
    s = setup(world)
    other_token = eth.address_from_private_key(b"\x07" * 32)
    refused(
        "disallowed_contract_call",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s, asset=other_token),
    )


def test_non_transfer_contract_call_refused_by_the_approving_client(world: World) -> None:
    """The server (or its database) shows an `approve(spender, max)` on the token instead
    of the transfer: the custodian's client decodes the raw bytes and refuses to sign."""
    from tests.helpers.withdrawals import ETH_DEST, TOKEN

    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], eth_intent(s, asset=TOKEN, amount=5))
    approve_call = (
        bytes.fromhex("095ea7b3") + bytes(12) + bytes.fromhex(ETH_DEST[2:]) + (2**256 - 1).to_bytes(32, "big")
    )
    evil = eth.build_eip1559(
        chain_id=11155111,
        nonce=7,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=3 * 10**10,
        gas_limit=65000,
        to=TOKEN,
        value=0,
        data=approve_call,
    )
    sql(world, "UPDATE withdrawal SET unsigned_tx = :tx WHERE id = :id", tx=evil.hex(), id=w["id"])
    with pytest.raises(DisallowedContractCallError, match="only ERC-20 transfer"):
        approve(world, w["id"])
    assert row(world, w["id"])["status"] == "pending"


# --- replay, versions, expiry, removal (1, 6, 7) -------------------------------------------------


def test_replayed_approval_refused(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("two", custodians=2)]))
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    captured: dict[str, Any] = {}
    real = world.client.request

    def spy(method: str, path: str, **kwargs: Any) -> Any:
        if path.endswith("/approve"):
            captured.update(kwargs["json_body"])
        return real(method, path, **kwargs)

    world.client.request = spy  # type: ignore[method-assign]
    approve(world, w["id"], "bob")
    world.client.request = real  # type: ignore[method-assign]
    again = {**captured, "totp": world.code("bob")}
    refused(
        "replayed_action", world.client.request, "POST", f"/v1/withdrawals/{w['id']}/approve", json_body=again
    )
    assert len(world.client.withdrawals.get(world["olga"], w["id"])["approvals"]) == 1


def test_approval_under_an_older_policy_version_refused(world: World) -> None:
    long = {"request_ttl_seconds": 7 * 86400}
    s = setup(world, policy=policy_doc(2, [rule("default", **long)]))
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    approve(world, w["id"], "bob")
    pending = world.client.withdrawals.create(world["alice"], eth_intent(s))
    # Version 3 takes effect at once (version 2's delay is 0).
    prop = world.client.policy.propose(world["alice"], policy_doc(3, [rule("default", custodians=1, **long)]))
    approve_proposal(world, prop["id"])
    assert world.client.policy.show(world["olga"])["version"] == 3
    refused("policy_version_mismatch", approve, world, pending["id"], "bob")
    refused("policy_version_mismatch", world.client.withdrawals.release, world["bob"], w["id"])


def test_expired_request_refused(world: World) -> None:
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    world.clock.advance(86400)
    world.client._sessions.clear()
    assert world.client.withdrawals.get(world["olga"], w["id"])["status"] == "expired"
    refused("expired", approve, world, w["id"], "bob")


def test_expired_approval_does_not_count(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    world.clock.advance(3600)
    world.client._sessions.clear()
    refused("quorum_not_met", world.client.withdrawals.release, world["bob"], w["id"])


def test_approval_by_a_member_removed_after_the_request_does_not_count(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("two", custodians=2)]))
    w = create_approved(world, btc_intent(s), by=("bob", "cora"))
    assert w["status"] == "approved"
    prop = world.client.members.propose_remove(world["mark"], world["cora"].member_id)
    approve_proposal(world, prop["id"], "bob")
    err = refused("quorum_not_met", world.client.withdrawals.release, world["bob"], w["id"])
    assert "custodian 1/2" in err.message
    assert row(world, w["id"])["signed_tx"] is None


# --- payload swap (3) ---------------------------------------------------------------------------


def _no_signature(world: World, wid: str) -> None:
    r = row(world, wid)
    assert r["status"] == "tampered"
    assert r["signed_tx"] is None
    assert r["txid"] is None
    log = audit_entries(world)
    assert not any(e["kind"] == "withdrawal.released" for e in log)
    tampered = [e for e in log if e["kind"] == "withdrawal.tampered"]
    assert len(tampered) == 1
    assert tampered[0]["data"]["withdrawal"] == wid


def test_swapping_the_unsigned_transaction_in_the_database_marks_it_tampered(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    pub = s.keyset.keys[0][1]
    swapped = btc.build_p2wpkh_spend(
        from_pubkey=pub,
        prevouts=wcore.prevouts_from_json(w["prevouts"]),
        destination=STRANGER_BTC,
        amount=50_000,
        fee_rate=5,
        network="testnet",
    )
    sql(world, "UPDATE withdrawal SET unsigned_tx = :tx WHERE id = :id", tx=swapped.raw.hex(), id=w["id"])
    err = refused("tampered", world.client.withdrawals.release, world["bob"], w["id"])
    assert "nothing was signed" in err.message
    _no_signature(world, w["id"])
    # And it stays refused.
    refused("tampered", world.client.withdrawals.release, world["bob"], w["id"])
    assert len([e for e in audit_entries(world) if e["kind"] == "withdrawal.tampered"]) == 1


def test_a_consistent_forgery_of_the_row_is_caught_by_the_approvals(world: World) -> None:
    """Intent, intent hash, transaction and digest all rewritten to agree with each other:
    only the custodian's signed approval still names the original."""
    s = setup(world)
    w = create_approved(world, eth_intent(s))
    intent = {**w["intent"], "destination": STRANGER_ETH}
    forged = wcore.parse_intent(intent)
    built = wcore.build_transaction(forged, bytes.fromhex(w["public_key"]), allowed_tokens=[])
    ih = wcore.intent_hash(intent)
    td = wcore.tx_digest(
        chain="ethereum",
        network="sepolia",
        public_key=w["public_key"],
        unsigned_tx=built.unsigned.hex(),
        prevouts=[],
    )
    sql(
        world,
        "UPDATE withdrawal SET intent = :i, intent_hash = :ih, unsigned_tx = :tx, tx_digest = :td "
        "WHERE id = :id",
        i=json.dumps(intent),
        ih=ih,
        tx=built.unsigned.hex(),
        td=td,
        id=w["id"],
    )
    refused("tampered", world.client.withdrawals.release, world["bob"], w["id"])
    _no_signature(world, w["id"])


# --- exactly once (11, 12) -------------------------------------------------------------------------


def test_idempotent_retry_returns_the_first_answer(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    env = world.client.withdrawals.release_envelope(world["bob"], w["id"])
    first = world.client.withdrawals.release(world["bob"], w["id"], idempotency_key="k-1", envelope=env)
    again = world.client.withdrawals.release(world["bob"], w["id"], idempotency_key="k-1", envelope=env)
    assert again == first
    other = world.client.withdrawals.release_envelope(world["bob"], w["id"])
    refused(
        "idempotency_conflict",
        world.client.withdrawals.release,
        world["bob"],
        w["id"],
        idempotency_key="k-1",
        envelope=other,
    )
    assert [e["kind"] for e in audit_entries(world)].count("withdrawal.released") == 1


def test_double_release_refused(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    first = world.client.withdrawals.release(world["bob"], w["id"])
    err = refused("already_released", world.client.withdrawals.release, world["cora"], w["id"])
    assert err.http_status == 409
    assert row(world, w["id"])["signed_tx"] == first["signed_tx"]


def test_release_without_an_idempotency_key_refused(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    env = world.client.withdrawals.release_envelope(world["bob"], w["id"])
    refused(
        "invalid_input",
        world.client.request,
        "POST",
        f"/v1/withdrawals/{w['id']}/release",
        json_body={"envelope": env},
    )


# --- time lock and veto ----------------------------------------------------------------------------


def test_time_lock_holds_release_and_a_custodian_can_veto_during_it(world: World) -> None:
    doc = policy_doc(
        2, [rule("locked", time_lock={"above": "10000", "delay_seconds": 1800}, approval_ttl_seconds=7200)]
    )
    s = setup(world, policy=doc)
    vetoed = create_approved(world, btc_intent(s))
    kept = create_approved(world, eth_intent(s))
    assert kept["time_lock_until"] is not None
    err = refused("time_locked", world.client.withdrawals.release, world["bob"], kept["id"])
    assert err.http_status == 409
    refused("role_not_allowed", world.client.withdrawals.veto, world["mark"], vetoed["id"])
    assert (
        world.client.withdrawals.veto(world["cora"], vetoed["id"], reason="call back")["status"] == "vetoed"
    )
    world.clock.advance(1800)
    world.client._sessions.clear()
    refused("invalid_state", world.client.withdrawals.release, world["bob"], vetoed["id"])
    refused("invalid_state", world.client.withdrawals.veto, world["cora"], kept["id"])
    out = world.client.withdrawals.release(world["bob"], kept["id"])
    assert out["status"] == "released"
