"""THREATS 1: replay of a used approval (the same request, or a copy with identical
fields) is refused with ``replayed_action``; state does not change; the refusal is
in the audit log."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import World, new_member
from tests.helpers.audit import membership_state, post, refusals

from tandem.client.members import proposal_digest
from tandem.core.actions import parse_envelope, sign_action
from tandem.core.roles import Role


def approval_body(world: World, who: str, prop: dict[str, Any]) -> dict[str, Any]:
    env = world.client.sign(
        world[who], "proposal.approve", {"proposal": prop["id"], "digest": proposal_digest(prop)}
    )
    return {"envelope": env, "totp": world.code(who)}


def test_same_approval_request_resent_is_refused(world: World) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    body = approval_body(world, "bob", prop)
    first = post(world, f"/v1/proposals/{prop['id']}/approve", body)
    assert first.status_code == 200, first.text
    # The approval meets the quorum; the addition then waits out its delay (THREATS 35).
    assert first.json()["status"] == "approved"
    before = membership_state(world)

    again = post(world, f"/v1/proposals/{prop['id']}/approve", body)
    assert again.status_code == 409
    assert again.json()["code"] == "replayed_action"
    assert membership_state(world) == before
    # Even with a fresh, valid second factor the envelope stays spent.
    world.clock.advance(30)
    again = post(world, f"/v1/proposals/{prop['id']}/approve", {**body, "totp": world.code("bob")})
    assert again.json()["code"] == "replayed_action"
    assert membership_state(world) == before

    hits = refusals(world, "replayed_action")
    assert len(hits) == 2
    assert all(h["kind"] == "proposal.approve.refused" for h in hits)
    assert all(h["actor"] == world["bob"].member_id for h in hits)
    assert all(h["envelope"] == body["envelope"] for h in hits)


def test_resigned_copy_with_same_nonce_is_refused(world: World) -> None:
    """Identical fields, the same nonce, a different issued_at: a genuinely different
    signature over a copy of the request. The nonce is what is spent."""
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    body = approval_body(world, "bob", prop)
    assert post(world, f"/v1/proposals/{prop['id']}/approve", body).status_code == 200
    before = membership_state(world)

    original = parse_envelope(body["envelope"])
    world.clock.advance(5)
    copy = sign_action(
        world["bob"],
        type=original.type,
        deployment=original.deployment,
        body=dict(original.body),
        issued_at=world.clock(),
        nonce=original.nonce,
    ).to_json()
    assert copy["signature"] != body["envelope"]["signature"]
    response = post(
        world, f"/v1/proposals/{prop['id']}/approve", {"envelope": copy, "totp": world.code("bob")}
    )
    assert response.status_code == 409
    assert response.json()["code"] == "replayed_action"
    assert membership_state(world) == before
    assert len(refusals(world, "replayed_action")) == 1


def test_copy_with_fresh_nonce_cannot_approve_twice(world: World) -> None:
    """A copy with identical fields and a new nonce passes the nonce check but meets the
    proposal's state: it is no longer pending."""
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    assert (
        post(world, f"/v1/proposals/{prop['id']}/approve", approval_body(world, "bob", prop)).status_code
        == 200
    )
    before = membership_state(world)
    response = post(world, f"/v1/proposals/{prop['id']}/approve", approval_body(world, "cora", prop))
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"
    assert membership_state(world) == before
    assert len(refusals(world, "invalid_state")) == 1


def test_replayed_proposal_creates_nothing(world: World) -> None:
    card = new_member("nina", Role.CUSTODIAN).card()
    env = world.client.sign(world["alice"], "member.propose", {"change": "add", "card": card.to_json()})
    assert post(world, "/v1/members/proposals", {"envelope": env}).status_code == 201
    before = membership_state(world)
    response = post(world, "/v1/members/proposals", {"envelope": env})
    assert response.status_code == 409
    assert response.json()["code"] == "replayed_action"
    after = membership_state(world)
    assert after == before
    assert len(after["proposals"]) == 1
    assert len(refusals(world, "replayed_action")) == 1


def test_replayed_rejection_refused(world: World) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    env = world.client.sign(
        world["bob"],
        "proposal.reject",
        {"proposal": prop["id"], "digest": proposal_digest(prop), "reason": "no"},
    )
    assert post(world, f"/v1/proposals/{prop['id']}/reject", {"envelope": env}).status_code == 200
    before = membership_state(world)
    response = post(world, f"/v1/proposals/{prop['id']}/reject", {"envelope": env})
    assert response.json()["code"] == "replayed_action"
    assert membership_state(world) == before


def test_replayed_session_open_gives_no_second_session(world: World) -> None:
    env = world.client.sign(world["olga"], "session.open", {})
    assert post(world, "/v1/sessions", {"envelope": env}).status_code == 201
    response = post(world, "/v1/sessions", {"envelope": env})
    assert response.status_code == 409
    assert response.json()["code"] == "replayed_action"
    assert "token" not in response.json()
    assert len(refusals(world, "replayed_action")) == 1


def test_approval_envelope_replayed_at_service_layer(world: World) -> None:
    """The same check without HTTP in front: the service itself refuses."""
    from tandem.errors import ReplayError

    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    body = approval_body(world, "bob", prop)
    world.svc.proposals.decide_proposal(body["envelope"], totp=body["totp"], approve=True)
    before = membership_state(world)
    world.clock.advance(30)
    totp_code = world.code("bob")
    with pytest.raises(ReplayError) as err:
        world.svc.proposals.decide_proposal(body["envelope"], totp=totp_code, approve=True)
    assert err.value.code == "replayed_action"
    assert membership_state(world) == before


def test_one_envelope_raced_many_times_is_used_once(world: World) -> None:
    """The same signed proposal submitted concurrently: one proposal, the rest replays."""
    import threading

    from tandem.errors import Error

    card = new_member("nina", Role.CUSTODIAN).card()
    env = world.client.sign(world["alice"], "member.propose", {"change": "add", "card": card.to_json()})
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def attempt() -> None:
        barrier.wait()
        try:
            world.svc.members.propose_member_change(env)
            outcomes.append("ok")
        except Error as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["ok"] + ["replayed_action"] * 5
    assert len(membership_state(world)["proposals"]) == 1
    assert len(refusals(world, "replayed_action")) == 5
