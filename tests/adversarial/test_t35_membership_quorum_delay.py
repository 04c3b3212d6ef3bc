"""THREATS 35: one custodian's approval added a custodian at once, and a sock-puppet
custodian then turned every two-custodian rule into one. Membership changes now follow
the policy's ``membership`` section: a quorum of distinct members of the other side, a
delay, and a veto by either side during it. The change is carried out only after the
delay (``proposal.apply``), with the quorum counted again; the verifiers' replay of the
log applies the same rule."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.conftest import World, new_member
from tests.helpers.audit import audit_entries, membership_state, post, refusals
from tests.helpers.membership import (
    MEMBER_DELAY,
    apply_change,
    approve,
    veto_member_change,
    wait_out_delay,
)
from tests.helpers.withdrawals import policy_doc, rule

from tandem.client import log as client_log
from tandem.core import audit
from tandem.core.membership import LogState
from tandem.core.roles import Role
from tandem.errors import RemoteError
from tandem.store import audit_log


def signed_post(world: World, who: str, type_: str, proposal_id: str, verb: str) -> httpx.Response:
    env = world.client.sign(world[who], type_, {"proposal": proposal_id})
    return post(world, f"/v1/proposals/{proposal_id}/{verb}", {"envelope": env})


def apply_response(world: World, who: str, proposal_id: str) -> httpx.Response:
    return signed_post(world, who, "proposal.apply", proposal_id, "apply")


def veto_response(world: World, who: str, proposal_id: str) -> httpx.Response:
    return signed_post(world, who, "proposal.veto", proposal_id, "veto")


def assert_refused(
    world: World, response: httpx.Response, status: int, code: str, *, kind: str, before: dict[str, Any]
) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    # Nothing changed, and the refused action's nonce was not consumed.
    assert membership_state(world) == before
    hits = refusals(world, code)
    assert hits, f"no {code} refusal in the log"
    assert hits[-1]["kind"] == kind


def names(world: World) -> dict[str, str]:
    return {m["name"]: m["status"] for m in world.client.get(world["olga"], "/v1/members")}


def replayed(world: World) -> LogState:
    lines, checkpoint = world.client.audit.export(world["olga"])
    state = LogState(genesis_hash_pin=world.client.deployment()["genesis_hash"])
    audit.verify_export(lines, checkpoint, world.svc.key.sign_public, replay=state.observe_entry)
    return state


def sock_puppet(world: World, who: str = "alice") -> dict[str, Any]:
    return world.client.members.propose_add(world[who], new_member("sock puppet", Role.CUSTODIAN).card())


def install_membership_policy(world: World, membership: dict[str, Any]) -> None:

    doc = {**policy_doc(2, [rule("default")]), "membership": membership}
    prop = world.client.policy.propose(world["alice"], doc)
    approve(world, "bob", prop["id"])
    wait_out_delay(world)  # the current policy's change delay
    assert world.client.policy.show(world["olga"])["version"] == 2


# --- one approval no longer adds a custodian at once ---------------------------------------


def test_one_custodians_approval_does_not_add_a_custodian_at_once(world: World) -> None:
    prop = sock_puppet(world)
    done = approve(world, "bob", prop["id"])
    assert done["status"] == "approved"
    assert done["effective_at"] == world.clock() + MEMBER_DELAY
    assert "sock puppet" not in names(world)
    # Not in the replayed membership either, and not a recipient of any share.
    assert "sock puppet" not in {m.name for m in replayed(world).members.values()}

    world.clock.advance(MEMBER_DELAY - 60)
    world.client._sessions.clear()
    before = membership_state(world)
    assert_refused(
        world,
        apply_response(world, "mark", prop["id"]),
        409,
        "time_locked",
        kind="proposal.apply.refused",
        before=before,
    )
    assert "sock puppet" not in names(world)


def test_the_change_takes_effect_after_the_delay(world: World) -> None:
    prop = sock_puppet(world)
    approve(world, "bob", prop["id"])
    wait_out_delay(world)
    applied = apply_change(world, "mark", prop["id"])
    assert applied["status"] == "applied"
    assert names(world)["sock puppet"] == "active"
    kinds = [e["kind"] for e in audit_entries(world) if e["data"].get("proposal") == prop["id"]]
    assert kinds == ["member.proposed", "proposal.approved", "proposal.applied", "member.added"]
    state = replayed(world)
    assert "sock puppet" in {m.name for m in state.members.values() if m.active}
    # Applied once: a second apply is refused.
    before = membership_state(world)
    assert_refused(
        world,
        apply_response(world, "bob", prop["id"]),
        409,
        "invalid_state",
        kind="proposal.apply.refused",
        before=before,
    )


# --- veto by either side ------------------------------------------------------------------


@pytest.mark.parametrize("vetoer", ["mark", "cora"], ids=["manager-veto", "custodian-veto"])
def test_either_side_vetoes_during_the_delay(world: World, vetoer: str) -> None:
    prop = sock_puppet(world)
    approve(world, "bob", prop["id"])
    vetoed = veto_member_change(world, vetoer, prop["id"], reason="we do not know this person")
    assert vetoed["status"] == "vetoed"
    wait_out_delay(world)
    before = membership_state(world)
    assert_refused(
        world,
        apply_response(world, "alice", prop["id"]),
        409,
        "invalid_state",
        kind="proposal.apply.refused",
        before=before,
    )
    assert "sock puppet" not in names(world)
    kinds = [e["kind"] for e in audit_entries(world) if e["data"].get("proposal") == prop["id"]]
    assert kinds == ["member.proposed", "proposal.approved", "proposal.vetoed"]
    veto = next(e for e in audit_entries(world) if e["kind"] == "proposal.vetoed")
    assert veto["actor"] == world[vetoer].member_id
    assert veto["envelope"]["action"]["type"] == "proposal.veto"
    replayed(world)  # the genuine log, veto included, verifies


def test_veto_refusals(world: World) -> None:
    prop = sock_puppet(world)
    before = membership_state(world)
    # Nothing to veto before the quorum is met (the other side rejects instead).
    assert_refused(
        world,
        veto_response(world, "mark", prop["id"]),
        409,
        "invalid_state",
        kind="proposal.veto.refused",
        before=before,
    )
    approve(world, "bob", prop["id"])
    before = membership_state(world)
    assert_refused(
        world,
        veto_response(world, "olga", prop["id"]),
        403,
        "role_not_allowed",
        kind="proposal.veto.refused",
        before=before,
    )
    wait_out_delay(world)
    before = membership_state(world)
    assert_refused(
        world,
        veto_response(world, "cora", prop["id"]),
        410,
        "expired",
        kind="proposal.veto.refused",
        before=before,
    )
    assert apply_change(world, "alice", prop["id"])["status"] == "applied"


def test_a_vetoed_change_forged_into_effect_is_refused_by_the_replay(world: World) -> None:
    """The server carries out a vetoed addition anyway, writing the effect with its own
    key: the verifiers apply the same veto rule and refuse it."""
    card = new_member("sock puppet", Role.CUSTODIAN).card()
    prop = world.client.members.propose_add(world["alice"], card)
    approve(world, "bob", prop["id"])
    veto_member_change(world, "mark", prop["id"])
    wait_out_delay(world)
    with world.svc.db.write() as s:
        index = audit_log.append(
            s,
            world.svc.key,
            deployment=world.deployment,
            kind="member.added",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data={"proposal": prop["id"], "member": card.member_id, "card": card.to_json()},
            time=world.clock(),
        )["index"]
    lines, checkpoint = world.client.audit.export(world["olga"])
    with pytest.raises(Exception, match="vetoed") as err:
        client_log.verify_log(lines, checkpoint, genesis_hash_pin=world.client.deployment()["genesis_hash"])
    assert getattr(err.value, "index", None) == index


# --- quorum by policy ---------------------------------------------------------------------


def test_policy_quorum_two_custodians_for_a_managers_proposal(world: World) -> None:
    install_membership_policy(world, {"approvals": {"custodian": 2, "manager": 1}, "delay_seconds": 3600})
    prop = sock_puppet(world)
    # Every view of the proposal says what the policy in force asks for.
    assert world.client.members.proposal(world["bob"], prop["id"])["required"] == {"custodian": 2}
    listed = world.client.members.proposals(world["bob"], status="pending")
    assert {p["id"]: p["required"] for p in listed}[prop["id"]] == {"custodian": 2}
    first = approve(world, "bob", prop["id"])
    assert first["status"] == "pending"  # one of two custodians
    assert first["required"] == {"custodian": 2}
    entry = [e for e in audit_entries(world) if e["kind"] == "proposal.approved"][-1]
    assert entry["data"]["quorum_met"] is False
    second = approve(world, "cora", prop["id"])
    assert second["status"] == "approved"
    assert second["effective_at"] == world.clock() + 3600
    wait_out_delay(world, 3600)
    assert apply_change(world, "alice", prop["id"])["status"] == "applied"
    # The replay counted the same quorum under the same policy.
    assert "sock puppet" in {m.name for m in replayed(world).members.values()}


def test_policy_membership_section_is_checked() -> None:
    from tandem.core.policy import parse_policy
    from tandem.errors import InputError, UnknownFieldError

    base = policy_doc(2, [rule("default")])
    with pytest.raises(InputError, match="custodian must be at least 1"):
        parse_policy(
            {**base, "membership": {"approvals": {"custodian": 0, "manager": 1}, "delay_seconds": 0}}
        )
    with pytest.raises(UnknownFieldError):
        parse_policy(
            {**base, "membership": {"approvals": {"custodian": 1, "manager": 1}, "delay_seconds": 0, "x": 1}}
        )
    with pytest.raises(InputError, match="missing"):
        parse_policy({**base, "membership": {"approvals": {"custodian": 1}, "delay_seconds": 0}})
    p = parse_policy(
        {**base, "membership": {"approvals": {"custodian": 2, "manager": 1}, "delay_seconds": 60}}
    )
    assert parse_policy(p.to_json()) == p
    assert p.membership_rule().required(Role.MANAGER) == {Role.CUSTODIAN: 2}
    assert p.membership_rule().required(Role.CUSTODIAN) == {Role.MANAGER: 1}
    # A policy without the section keeps its hash and gets the default rule.
    plain = parse_policy(base)
    assert "membership" not in plain.to_json()
    assert plain.membership_rule().delay_seconds == plain.change_delay_seconds


def test_approver_removed_during_the_delay_no_longer_counts(world: World) -> None:
    prop = sock_puppet(world)
    approve(world, "bob", prop["id"])
    removal = world.client.members.propose_remove(world["mark"], world["bob"].member_id)
    assert approve(world, "cora", removal["id"])["status"] == "applied"  # removals: at once
    wait_out_delay(world)
    before = membership_state(world)
    assert_refused(
        world,
        apply_response(world, "alice", prop["id"]),
        409,
        "quorum_not_met",
        kind="proposal.apply.refused",
        before=before,
    )


def test_a_removal_may_be_delayed_by_policy(world: World) -> None:
    install_membership_policy(
        world,
        {"approvals": {"custodian": 1, "manager": 1}, "delay_seconds": 3600, "remove_delay_seconds": 600},
    )
    removal = world.client.members.propose_remove(world["alice"], world["cora"].member_id)
    assert approve(world, "bob", removal["id"])["status"] == "approved"
    assert names(world)["cora"] == "active"
    with pytest.raises(RemoteError) as err:
        apply_change(world, "alice", removal["id"])
    assert err.value.remote_code == "time_locked"
    wait_out_delay(world, 600)
    assert apply_change(world, "alice", removal["id"])["status"] == "applied"
    assert names(world)["cora"] == "removed"
    replayed(world)


def test_apply_is_for_members_of_either_side_only(world: World) -> None:
    prop = sock_puppet(world)
    approve(world, "bob", prop["id"])
    wait_out_delay(world)
    before = membership_state(world)
    assert_refused(
        world,
        apply_response(world, "olga", prop["id"]),
        403,
        "role_not_allowed",
        kind="proposal.apply.refused",
        before=before,
    )
