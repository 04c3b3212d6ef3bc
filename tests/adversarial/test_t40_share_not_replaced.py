"""THREATS 40: a stored share is replaced by another member of the same side — refused.

The signer combines exactly one manager share and one custodian share per operation.
If a second member of a side could overwrite the stored share, a custodian who never
approved (and never typed a TOTP code) would decide which share the signer opens, or
could break a release the real approver enabled. A share, once stored for an
operation and side, stands: a second store is refused with ``share_already_stored``
and audited, and a custodian's share needs a TOTP code like the rest of its flow.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select
from tests.conftest import World
from tests.helpers.audit import audit_entries, post
from tests.helpers.keysets import make_keyset
from tests.helpers.withdrawals import (
    approve,
    btc_intent,
    create_approved,
    fresh_sessions,
    policy_doc,
    rule,
    setup,
    verify_bitcoin,
)

from tandem.client import ceremony as cc
from tandem.client import withdrawal as cw
from tandem.core import withdrawal as wcore
from tandem.core.split import reseal_for_operation
from tandem.store.models import Approval, OperationShare


def shares(world: World) -> list[tuple[str, str, str, str]]:
    with world.svc.db.read() as s:
        return sorted((r.operation, r.side, r.member, r.sealed) for r in s.exec(select(OperationShare)).all())


def approvals(world: World, subject: str) -> list[str]:
    with world.svc.db.read() as s:
        return sorted(a.member for a in s.exec(select(Approval).where(Approval.subject == subject)).all())


def refused(world: World, kind: str, code: str) -> list[dict[str, Any]]:
    fresh_sessions(world)
    return [e for e in audit_entries(world) if e["kind"] == kind and e["code"] == code]


def contribute_body(world: World, who: str, wid: str, *, totp: str | None) -> dict[str, Any]:
    """What the real client sends for ``withdrawal.contribute``, built here so the TOTP
    code can be left out."""
    view = world.client.withdrawals.get(world[who], wid)
    service = bytes.fromhex(world.client.deployment()["service"]["sign_public"])
    _side, sealed = reseal_for_operation(world[who], view["keyset"], view["operation"], service)
    env = world.client.sign(
        world[who],
        "withdrawal.contribute",
        {
            "withdrawal": wid,
            "operation": view["operation"]["statement"]["operation"],
            "share_digest": wcore.share_digest(sealed),
        },
    )
    body: dict[str, Any] = {"envelope": env, "sealed_share": sealed}
    if totp is not None:
        body["totp"] = totp
    return body


def test_second_custodian_cannot_overwrite_the_approvers_share(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))  # alice's share at create, bob's with his approval
    before = shares(world)
    assert [(side, member) for _op, side, member, _ in before] == [
        ("custodian", world["bob"].member_id),
        ("manager", world["alice"].member_id),
    ]

    # cora has not approved and sends no TOTP code: refused for the missing factor.
    no_code = post(
        world, f"/v1/withdrawals/{w['id']}/shares", contribute_body(world, "cora", w["id"], totp=None)
    )
    assert no_code.status_code == 401, no_code.text
    assert no_code.json()["code"] == "totp_invalid"
    assert shares(world) == before

    # With a valid code the share is still not replaced.
    with_code = post(
        world,
        f"/v1/withdrawals/{w['id']}/shares",
        contribute_body(world, "cora", w["id"], totp=world.code("cora")),
    )
    assert with_code.status_code == 409, with_code.text
    assert with_code.json()["code"] == "share_already_stored"
    assert shares(world) == before
    hits = refused(world, "withdrawal.contribute.refused", "share_already_stored")
    assert len(hits) == 1
    assert hits[0]["actor"] == world["cora"].member_id

    # The release opens exactly the shares the requester and the approver gave.
    out = world.client.withdrawals.release(world["bob"], w["id"])
    verify_bitcoin(out["signed_tx"], w["prevouts"], s.keyset.keys[0][1])


def test_second_manager_cannot_overwrite_the_requesters_share(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    before = shares(world)
    response = post(
        world, f"/v1/withdrawals/{w['id']}/shares", contribute_body(world, "mark", w["id"], totp=None)
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "share_already_stored"
    assert shares(world) == before
    hits = refused(world, "withdrawal.contribute.refused", "share_already_stored")
    assert [h["actor"] for h in hits] == [world["mark"].member_id]


def test_an_approval_carrying_a_second_share_is_refused_whole(world: World) -> None:
    """Under a two-custodian rule the second approver's client sends no share (the view
    says the custodian share is held); one that sends one anyway is refused, and its
    approval is not counted either."""
    doc = policy_doc(2, [rule("dual", custodians=2)])
    s = setup(world, policy=doc)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    assert approve(world, created["id"], "bob")["status"] == "pending"
    view = world.client.withdrawals.get(world["cora"], created["id"])
    assert view["shares"] == ["custodian", "manager"]
    before = shares(world)
    checked = cw.review(view)
    service = bytes.fromhex(world.client.deployment()["service"]["sign_public"])
    _side, sealed = reseal_for_operation(world["cora"], view["keyset"], view["operation"], service)
    body = wcore.approval_body(
        withdrawal=created["id"],
        intent_hash_hex=checked.intent_hash,
        tx_digest_hex=checked.tx_digest,
        policy_version=view["policy_version"],
        expires_at=world.clock() + 600,
        operation=view["operation"]["statement"]["operation"],
        share_digest=wcore.share_digest(sealed),
    )
    env = world.client.sign(world["cora"], "withdrawal.approve", body)
    response = post(
        world,
        f"/v1/withdrawals/{created['id']}/approve",
        {"envelope": env, "totp": world.code("cora"), "sealed_share": sealed},
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "share_already_stored"
    assert shares(world) == before
    assert approvals(world, created["id"]) == [world["bob"].member_id]
    assert len(refused(world, "withdrawal.approve.refused", "share_already_stored")) == 1
    # The real client leaves its share out and the approval counts.
    assert approve(world, created["id"], "cora")["status"] == "approved"
    assert shares(world) == before
    out = world.client.withdrawals.release(world["bob"], created["id"])
    verify_bitcoin(out["signed_tx"], created["prevouts"], s.keyset.keys[0][1])


def test_custodian_share_after_a_restart_needs_totp(world: World) -> None:
    from tandem.services.keyuse import OperationKeys

    s = setup(world)
    w = create_approved(world, btc_intent(s))
    world.svc.keys.operations = OperationKeys()  # a restart: the signer lost the operation key
    world.client.withdrawals.renew_operation(world["alice"], w["id"])
    world.client.withdrawals.contribute_share(world["alice"], w["id"])
    before = shares(world)
    response = post(
        world, f"/v1/withdrawals/{w['id']}/shares", contribute_body(world, "cora", w["id"], totp=None)
    )
    assert response.status_code == 401
    assert response.json()["code"] == "totp_invalid"
    assert shares(world) == before
    assert len(refused(world, "withdrawal.contribute.refused", "totp_invalid")) == 1
    world.client.withdrawals.contribute_share(world["cora"], w["id"], totp=world.code("cora"))
    out = world.client.withdrawals.release(world["bob"], w["id"])
    verify_bitcoin(out["signed_tx"], w["prevouts"], s.keyset.keys[0][1])


@pytest.mark.parametrize(("first", "second"), [("alice", "mark"), ("bob", "cora")])
def test_proof_share_is_not_replaced(world: World, first: str, second: str) -> None:
    make_keyset(world)
    c = world.client
    view = c.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})

    def code(who: str) -> str | None:
        return world.code(who) if world[who].role.value == "custodian" else None

    c.proofs.contribute(world[first], view["id"], totp=code(first))
    before = shares(world)
    fresh = c.proofs.get(world[second], view["id"])
    body = {"challenge": view["id"], **c.proofs.reseal_shares(world[second], fresh)[0]}
    payload: dict[str, Any] = {"envelope": c.sign(world[second], "proof.contribute", body)}
    totp = code(second)
    if totp is not None:
        payload["totp"] = totp
    response = post(world, f"/v1/proofs/{view['id']}/contributions", payload)
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "share_already_stored"
    assert shares(world) == before
    hits = refused(world, "proof.contribute.refused", "share_already_stored")
    assert [h["actor"] for h in hits] == [world[second].member_id]
    assert c.proofs.get(world["olga"], view["id"])["status"] == "open"


TWO_CUSTODIAN_RESHARE = """
[ceremony]
name = "reshare-two-custodians"
description = "Rotate a key set's data key with two custodians approving"
kind = "reshare"
expiry_seconds = 86400

[ceremony.approvals]
custodian = 2
manager = 0
"""


def test_reshare_second_custodian_cannot_replace_the_first_share(world: World) -> None:
    """Under a two-custodian reshare the first custodian's approval carries the share;
    a second approval carrying another is refused whole, the real client sends none."""
    ks = make_keyset(world)
    c = world.client
    view = c.ceremonies.propose(world["alice"], TWO_CUSTODIAN_RESHARE, target_keyset=ks.id)
    c.ceremonies.approve(world["bob"], view["id"], totp=world.code("bob"))
    before = shares(world)
    assert [side for _op, side, _m, _s in before] == ["custodian", "manager"]

    seen = c.ceremonies.get(world["cora"], view["id"])
    service = bytes.fromhex(c.deployment()["service"]["sign_public"])
    _side, sealed = reseal_for_operation(
        world["cora"], c.keysets.get(world["cora"], ks.id)["sealed"], seen["operation"], service
    )
    body = {"ceremony": view["id"], "digest": cc.local_digest(seen), "sealed_share": sealed}
    env = c.sign(world["cora"], "ceremony.approve", body)
    response = post(
        world, f"/v1/ceremonies/{view['id']}/approve", {"envelope": env, "totp": world.code("cora")}
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "share_already_stored"
    assert shares(world) == before
    assert c.ceremonies.get(world["olga"], view["id"])["approvals"] == [world["bob"].member_id]
    assert len(refused(world, "ceremony.approve.refused", "share_already_stored")) == 1

    done = c.ceremonies.approve(world["cora"], view["id"], totp=world.code("cora"))
    assert sorted(done["approvals"]) == sorted([world["bob"].member_id, world["cora"].member_id])
    assert c.keysets.get(world["olga"], ks.id)["generation"] == 2
