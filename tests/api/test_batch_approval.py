"""Batch approval: several reviewed withdrawals approved with one TOTP code.

The code is checked once and spent; each signed approval then goes through the same
approval engine as the single route, with per-item results and every refusal audited."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tests.api.test_withdrawal_offline import SIGNER, full_bundle
from tests.conftest import World
from tests.helpers.audit import audit_entries, post, refusals
from tests.helpers.withdrawals import btc_intent, policy_doc, rule, setup

from tandem.client import withdrawal as cw
from tandem.core.identity import MemberSecrets
from tandem.errors import RemoteError
from tandem.services.batch import MAX_BATCH


def requests(world: World, s: Any, n: int, by: str = "alice") -> list[dict[str, Any]]:
    return [world.client.withdrawals.create(world[by], btc_intent(s, amount=40_000 + i)) for i in range(n)]


def views(world: World, member: MemberSecrets, created: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [world.client.withdrawals.get(member, w["id"]) for w in created]


def batch_body(world: World, member: MemberSecrets, vs: list[dict[str, Any]], code: str) -> dict[str, Any]:
    """The request client.withdrawals.approve_many sends, built here so a test can change it."""
    items = [world.client.withdrawals.signed_approval(member, v["id"], view=v) for v in vs]
    env = world.client.sign(
        member,
        "withdrawal.batch_approve",
        {"withdrawals": [v["id"] for v in vs], "nonces": [i["envelope"]["action"]["nonce"] for i in items]},
    )
    return {"envelope": env, "totp": code, "items": items}


def status_of(world: World, wid: str) -> str:
    return str(world.client.withdrawals.get(world["olga"], wid)["status"])


def test_three_withdrawals_approved_with_one_code_and_released(world: World) -> None:
    s = setup(world)
    created = requests(world, s, 3)
    bob = world["bob"]
    fingerprints = {w["id"]: w["fingerprint"] for w in created}
    out = world.client.withdrawals.approve_many(
        bob,
        views(world, bob, created),
        totp=world.code("bob"),
        expected_fingerprints=fingerprints,
    )
    assert out["approved"] == 3
    assert out["refused"] == 0
    assert [r["withdrawal"] for r in out["results"]] == [w["id"] for w in created]
    assert {r["outcome"] for r in out["results"]} == {"approved"}
    assert all(status_of(world, w["id"]) == "approved" for w in created)

    entries = audit_entries(world)
    batch = [e for e in entries if e["kind"] == "withdrawal.batch_verified"]
    assert len(batch) == 1
    assert batch[0]["actor"] == bob.member_id
    assert batch[0]["data"]["withdrawals"] == [w["id"] for w in created]
    assert batch[0]["envelope"]["action"]["type"] == "withdrawal.batch_approve"
    approved = [e for e in entries if e["kind"] == "withdrawal.approved" and e["actor"] == bob.member_id]
    assert sorted(e["data"]["withdrawal"] for e in approved) == sorted(fingerprints)

    # Each approval carried bob's share: the first releases, and an offline bundle of the
    # second verifies its batch-given approval from the log like any other.
    released = world.client.withdrawals.release(bob, created[0]["id"])
    assert released["status"] == "released"
    signed = cw.offline_sign(full_bundle(world, created[1]["id"]), SIGNER, now=world.clock())
    assert signed["withdrawal"] == created[1]["id"]


def test_the_code_cannot_be_used_again(world: World) -> None:
    s = setup(world)
    first, second = requests(world, s, 2)
    bob = world["bob"]
    code = world.code("bob")
    world.client.withdrawals.approve_many(bob, views(world, bob, [first]), totp=code)
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.approve_many(bob, views(world, bob, [second]), totp=code)
    assert err.value.remote_code == "totp_replayed"
    # Nor on the single route.
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.approve(bob, second["id"], totp=code)
    assert err.value.remote_code == "totp_replayed"
    assert status_of(world, second["id"]) == "pending"
    assert [e["kind"] for e in refusals(world, "totp_replayed")] == [
        "withdrawal.batch_approve.refused",
        "withdrawal.approve.refused",
    ]


def test_own_request_in_a_batch_is_refused_and_audited(world: World) -> None:
    # A manager's approval counts under this policy; alice still may not approve her own.
    s = setup(world, policy=policy_doc(2, [rule("default", custodians=1, managers=1)]))
    mine = requests(world, s, 1, by="alice")[0]
    theirs = requests(world, s, 1, by="mark")[0]
    alice = world["alice"]
    out = world.client.withdrawals.approve_many(
        alice, views(world, alice, [mine, theirs]), totp=world.code("alice")
    )
    by_id = {r["withdrawal"]: r for r in out["results"]}
    assert by_id[mine["id"]]["outcome"] == "refused"
    assert by_id[mine["id"]]["code"] == "self_approval"
    assert by_id[theirs["id"]]["outcome"] == "approved"
    assert (out["approved"], out["refused"]) == (1, 1)
    assert world.client.withdrawals.get(world["olga"], mine["id"])["approvals"] == []
    given = world.client.withdrawals.get(world["olga"], theirs["id"])["approvals"]
    assert [a["member"] for a in given] == [alice.member_id]
    refused = refusals(world, "self_approval")
    assert len(refused) == 1
    assert refused[0]["kind"] == "withdrawal.approve.refused"
    assert refused[0]["actor"] == alice.member_id
    assert refused[0]["envelope"]["action"]["body"]["withdrawal"] == mine["id"]


def test_a_tampered_item_is_refused_the_others_admitted(world: World) -> None:
    s = setup(world)
    created = requests(world, s, 3)
    bob = world["bob"]
    body = batch_body(world, bob, views(world, bob, created), world.code("bob"))
    # The server is asked to record an approval bob did not sign (a longer expiry).
    body["items"][1]["envelope"]["action"]["body"]["expires_at"] -= 1
    answer = post(world, "/v1/withdrawals/approvals", body)
    assert answer.status_code == 200, answer.text
    outcomes = [(r["outcome"], r.get("code")) for r in answer.json()["results"]]
    assert outcomes == [("approved", None), ("refused", "bad_signature"), ("approved", None)]
    assert status_of(world, created[1]["id"]) == "pending"
    refused = refusals(world, "bad_signature")
    assert [e["kind"] for e in refused] == ["withdrawal.approve.refused"]
    # Who signed it is not established, so the refusal names no actor.
    assert refused[0]["actor"] is None


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b, other: b["items"].reverse(), id="items-out-of-order"),
        pytest.param(lambda b, other: b["items"].pop(), id="item-left-out"),
        pytest.param(lambda b, other: b["items"].__setitem__(0, other), id="item-signed-by-someone-else"),
    ],
)
def test_items_not_named_by_the_signed_batch_refuse_the_whole_batch(world: World, change: Any) -> None:
    s = setup(world)
    created = requests(world, s, 2)
    bob, cora = world["bob"], world["cora"]
    code = world.code("bob")
    body = batch_body(world, bob, views(world, bob, created), code)
    other = world.client.withdrawals.signed_approval(cora, created[0]["id"])
    change(body, other)
    answer = post(world, "/v1/withdrawals/approvals", copy.deepcopy(body))
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_input"
    assert all(status_of(world, w["id"]) == "pending" for w in created)
    assert refusals(world, "invalid_input")[-1]["kind"] == "withdrawal.batch_approve.refused"
    # The code was not spent by a refused batch: it still approves one request.
    world.client.withdrawals.approve(bob, created[0]["id"], totp=code)
    assert status_of(world, created[0]["id"]) == "approved"


def test_a_wrong_code_approves_nothing_and_counts_as_a_failure(world: World) -> None:
    s = setup(world)
    created = requests(world, s, 2)
    bob = world["bob"]
    wrong = f"{(int(world.code('bob')) + 1) % 1_000_000:06d}"
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.approve_many(bob, views(world, bob, created), totp=wrong)
    assert err.value.remote_code == "totp_invalid"
    assert all(status_of(world, w["id"]) == "pending" for w in created)
    assert not [e for e in audit_entries(world) if e["kind"] == "withdrawal.approved"]
    with world.svc.db.read() as session:
        from tandem.store.models import Member

        member = session.get(Member, bob.member_id)
        assert member is not None
        assert member.totp_failures == 1


def test_a_batch_is_at_most_max_batch_long(world: World) -> None:
    s = setup(world)
    created = requests(world, s, 1)
    bob = world["bob"]
    body = batch_body(world, bob, views(world, bob, created), world.code("bob"))
    body["items"] = body["items"] * (MAX_BATCH + 1)
    answer = post(world, "/v1/withdrawals/approvals", body)
    assert answer.status_code == 422, answer.text
    assert status_of(world, created[0]["id"]) == "pending"


def test_a_grant_is_only_honoured_while_its_batch_runs(world: World) -> None:
    """The item's second factor is a server-side grant; one kept after its batch (or
    made for someone else) is refused like a wrong code."""
    from tandem.services.batch import TotpGrant

    s = setup(world)
    created = requests(world, s, 1)
    bob = world["bob"]
    item = world.client.withdrawals.signed_approval(bob, created[0]["id"])
    with pytest.raises(Exception) as err:
        world.svc.withdrawals.approve_withdrawal(
            item["envelope"], totp=TotpGrant(bob.member_id), sealed_share=item["sealed_share"]
        )
    assert getattr(err.value, "code", None) == "totp_invalid"
    assert status_of(world, created[0]["id"]) == "pending"
