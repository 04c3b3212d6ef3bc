"""THREATS 5: self-approval, one person with two accounts, one identity key under two
members, the wrong side approving, an auditor changing anything — refused; quorum
counts distinct members."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from tests.conftest import World, claim_token_of, new_member
from tests.helpers.audit import assert_refused, membership_state, post, refusals
from tests.helpers.membership import apply_change, wait_out_delay

from tandem.client.members import draft_genesis, proposal_digest, sign_genesis
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import RemoteError
from tandem.store.models import Approval


def propose_add(world: World, who: str, card_doc: dict[str, Any]) -> httpx.Response:
    env = world.client.sign(world[who], "member.propose", {"change": "add", "card": card_doc})
    return post(world, "/v1/members/proposals", {"envelope": env})


def decide(world: World, who: str, prop: dict[str, Any], *, approve: bool = True) -> httpx.Response:
    body = {"proposal": prop["id"], "digest": proposal_digest(prop)}
    if approve:
        env = world.client.sign(world[who], "proposal.approve", body)
        return post(world, f"/v1/proposals/{prop['id']}/approve", {"envelope": env, "totp": world.code(who)})
    env = world.client.sign(world[who], "proposal.reject", {**body, "reason": "no"})
    return post(world, f"/v1/proposals/{prop['id']}/reject", {"envelope": env})


# --- who may decide -----------------------------------------------------------------------


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
def test_self_approval_refused(world: World, approve: bool) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    before = membership_state(world)
    assert_refused(world, decide(world, "alice", prop, approve=approve), 403, "self_approval", before)
    assert len(refusals(world, "self_approval")) == 1


@pytest.mark.parametrize(
    ("proposer", "decider"),
    [("alice", "mark"), ("bob", "cora")],
    ids=["manager-approves-manager", "custodian-approves-custodian"],
)
@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
def test_same_side_cannot_decide(world: World, proposer: str, decider: str, approve: bool) -> None:
    prop = world.client.members.propose_add(world[proposer], new_member("nina", Role.AUDITOR).card())
    before = membership_state(world)
    # The same side is a wrong role, not a self-approval: it has its own code.
    assert_refused(world, decide(world, decider, prop, approve=approve), 403, "role_not_allowed", before)
    hits = refusals(world, "role_not_allowed")
    assert len(hits) == 1
    assert hits[0]["actor"] == world[decider].member_id


def test_other_side_may_decide_either_way(world: World) -> None:
    by_manager = world.client.members.propose_add(world["alice"], new_member("nina", Role.AUDITOR).card())
    by_custodian = world.client.members.propose_add(world["bob"], new_member("nora", Role.AUDITOR).card())
    # An addition is approved, then waits out its delay (THREATS 35).
    assert decide(world, "cora", by_manager).json()["status"] == "approved"
    assert decide(world, "mark", by_custodian).json()["status"] == "approved"


def test_auditor_cannot_propose(world: World) -> None:
    before = membership_state(world)
    response = propose_add(world, "olga", new_member("nina", Role.CUSTODIAN).card().to_json())
    assert_refused(world, response, 403, "role_not_allowed", before)
    hits = refusals(world, "role_not_allowed")
    assert len(hits) == 1
    assert hits[0]["kind"] == "member.propose.refused"


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
def test_auditor_cannot_decide(world: World, approve: bool) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    before = membership_state(world)
    assert_refused(world, decide(world, "olga", prop, approve=approve), 403, "role_not_allowed", before)
    assert len(refusals(world, "role_not_allowed")) == 1


def test_auditor_cannot_remove_or_rekey(world: World) -> None:
    before = membership_state(world)
    env = world.client.sign(
        world["olga"], "member.propose", {"change": "remove", "member": world["bob"].member_id}
    )
    assert_refused(
        world, post(world, "/v1/members/proposals", {"envelope": env}), 403, "role_not_allowed", before
    )
    new_keys = MemberSecrets.generate(name="bob", role=Role.CUSTODIAN)
    env = world.client.sign(
        world["olga"],
        "member.propose",
        {"change": "rekey", "member": world["bob"].member_id, "card": new_keys.card().to_json()},
    )
    assert_refused(
        world, post(world, "/v1/members/proposals", {"envelope": env}), 403, "role_not_allowed", before
    )


# --- one key, one member; one person, one role -------------------------------------------


def _clone_keys(
    of: MemberSecrets, *, name: str, role: Role, sign: bool = True, seal: bool = True
) -> MemberSecrets:
    return MemberSecrets(
        name=name,
        role=role,
        sign_seed=bytes(of._sign) if sign else os.urandom(32),
        seal_private=bytes(of.seal_private_key) if seal else os.urandom(32),
        totp_secret=of.totp_secret,
    )


@pytest.mark.parametrize(
    ("sign", "seal"), [(True, True), (True, False), (False, True)], ids=["both-keys", "sign-key", "seal-key"]
)
def test_existing_members_key_under_a_new_member_refused(world: World, sign: bool, seal: bool) -> None:
    """bob registers his own key again as "bobby", a manager: one key, two members."""
    twin = _clone_keys(world["bob"], name="bobby", role=Role.MANAGER, sign=sign, seal=seal)
    before = membership_state(world)
    response = propose_add(world, "mark", twin.card().to_json())
    assert_refused(world, response, 409, "duplicate_identity", before)
    assert len(refusals(world, "duplicate_identity")) == 1


@pytest.mark.parametrize("name", ["bob", "BOB", "Bob"])
def test_same_person_in_a_second_role_refused(world: World, name: str) -> None:
    """bob (custodian) with fresh keys, asking to become a manager too."""
    before = membership_state(world)
    response = propose_add(world, "cora", new_member(name, Role.MANAGER).card().to_json())
    assert_refused(world, response, 409, "duplicate_identity", before)
    assert len(refusals(world, "duplicate_identity")) == 1


def test_duplicate_checked_again_when_applied(world: World) -> None:
    """Two pending proposals for the same new person: the second to take effect is refused
    (both are approved; the check runs again when each change is carried out)."""
    nina = new_member("nina", Role.CUSTODIAN)
    nina_again = new_member("nina", Role.AUDITOR)
    first = world.client.members.propose_add(world["alice"], nina.card())
    second = world.client.members.propose_add(world["mark"], nina_again.card())
    assert decide(world, "bob", first).status_code == 200
    assert decide(world, "cora", second).status_code == 200
    wait_out_delay(world)
    assert apply_change(world, "alice", first["id"])["status"] == "applied"
    before = membership_state(world)
    env = world.client.sign(world["mark"], "proposal.apply", {"proposal": second["id"]})
    response = post(world, f"/v1/proposals/{second['id']}/apply", {"envelope": env})
    assert_refused(world, response, 409, "duplicate_identity", before)


def test_rekey_to_another_members_key_refused(world: World) -> None:
    stolen = _clone_keys(world["cora"], name="bob", role=Role.CUSTODIAN)
    before = membership_state(world)
    env = world.client.sign(
        world["alice"],
        "member.propose",
        {"change": "rekey", "member": world["bob"].member_id, "card": stolen.card().to_json()},
    )
    assert_refused(
        world, post(world, "/v1/members/proposals", {"envelope": env}), 409, "duplicate_identity", before
    )


def test_removed_members_key_cannot_come_back_under_another_name(world: World) -> None:
    prop = world.client.members.propose_remove(world["alice"], world["cora"].member_id)
    assert decide(world, "bob", prop).json()["status"] == "applied"
    twin = _clone_keys(world["cora"], name="corinna", role=Role.CUSTODIAN)
    before = membership_state(world)
    assert_refused(
        world, propose_add(world, "alice", twin.card().to_json()), 409, "duplicate_identity", before
    )


def test_removed_members_name_reused_with_new_keys_is_not_a_server_error(world: World) -> None:
    """cora is removed; a new person named cora is proposed and approved. The member
    table has a UNIQUE name: the service must answer with a stable code (or apply the
    change), never a 500 with no audit entry."""
    prop = world.client.members.propose_remove(world["alice"], world["cora"].member_id)
    assert decide(world, "bob", prop).json()["status"] == "applied"
    # Names stay reserved after removal (the log keeps naming the person), so the
    # proposal itself is refused with a stable code.
    with pytest.raises(RemoteError) as err:
        world.client.members.propose_add(world["alice"], new_member("cora", Role.CUSTODIAN).card())
    assert err.value.remote_code == "duplicate_identity"


# --- quorum counts members ------------------------------------------------------------------


def test_double_approval_by_the_same_member_counts_once(world: World) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    assert decide(world, "bob", prop).status_code == 200
    before = membership_state(world)
    response = decide(world, "bob", prop)
    assert response.status_code == 409
    assert response.json()["code"] in {"conflict", "invalid_state"}
    assert membership_state(world) == before
    with world.svc.db.read() as s:
        rows = s.exec(select(Approval).where(Approval.subject == prop["id"])).all()
    assert [(r.member, r.role) for r in rows] == [(world["bob"].member_id, "custodian")]
    wait_out_delay(world)
    apply_change(world, "alice", prop["id"])
    nina = [m for m in membership_state(world)["members"] if m[1] == "nina"]
    assert len(nina) == 1


def test_database_refuses_a_second_approval_row_for_one_member(world: World) -> None:
    """Defence in depth: even a code path that skipped the check could not store it."""
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    row = {
        "subject": prop["id"],
        "member": world["bob"].member_id,
        "role": "custodian",
        "envelope": "{}",
        "created_at": world.clock(),
    }
    with world.svc.db.write() as s:
        s.add(Approval(**row))
    with pytest.raises(IntegrityError), world.svc.db.write() as s:  # noqa: PT012 - the flush is the statement
        s.add(Approval(**row))
        s.flush()
    with world.svc.db.read() as s:
        assert len(s.exec(select(Approval).where(Approval.subject == prop["id"])).all()) == 1


# --- at genesis -------------------------------------------------------------------------------


def _genesis(world_http: Any, clock: Any, people: list[MemberSecrets]) -> httpx.Response:

    doc = draft_genesis(
        deployment="dep_0123456789abcdef",
        entity="E",
        created_at=clock(),
        service=world_http.get("/v1/deployment").json()["service"],
        cards=[m.card() for m in people],
    )
    sigs = dict(sign_genesis(m, doc) for m in people)
    return world_http.post(
        "/v1/genesis",
        content=canonical({"genesis": doc, "signatures": sigs}),
        headers={"X-Tandem-Claim-Token": claim_token_of(world_http.app.state.service)},
    )


def test_genesis_refuses_one_person_in_two_roles(http: Any, clock: Any) -> None:
    people = [
        new_member("alice", Role.MANAGER),
        new_member("Alice", Role.CUSTODIAN),
        new_member("bob", Role.CUSTODIAN),
    ]
    response = _genesis(http, clock, people)
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_identity"
    assert "deployment" not in http.get("/v1/deployment").json()


def test_genesis_refuses_one_key_under_two_members(http: Any, clock: Any) -> None:
    alice = new_member("alice", Role.MANAGER)
    twin = _clone_keys(alice, name="alicia", role=Role.CUSTODIAN)
    response = _genesis(http, clock, [alice, twin, new_member("bob", Role.CUSTODIAN)])
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_identity"


def test_genesis_happens_once(world: World) -> None:
    before = membership_state(world)
    response = _genesis(
        world.client.http, world.clock, [new_member("eve", Role.MANAGER), new_member("ed", Role.CUSTODIAN)]
    )
    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert membership_state(world) == before
