"""THREATS 2: cross-context replay. The signature covers type, deployment, actor,
body and nonce, and the server checks type, deployment and freshness: an envelope made
for one context is refused in every other, and an edited one does not verify."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from tests.conftest import World, new_member
from tests.helpers.audit import assert_refused, membership_state, post, refusals

from tandem.client.members import proposal_digest
from tandem.core.actions import (
    MAX_AGE_SECONDS,
    MAX_FUTURE_SECONDS,
    check_context,
    parse_envelope,
    sign_action,
)
from tandem.core.roles import Role
from tandem.errors import Error
from tandem.store.models import Member


@pytest.fixture
def pending(world: World) -> dict[str, Any]:
    return world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())


def approval_env(world: World, who: str, prop: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body = {"proposal": prop["id"], "digest": proposal_digest(prop)}
    return sign_action(
        world[who],
        type=overrides.get("type", "proposal.approve"),
        deployment=overrides.get("deployment", world.deployment),
        body=body,
        issued_at=overrides.get("issued_at", world.clock()),
    ).to_json()


# --- wrong type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "wrapper"),
    [
        ("/v1/sessions", lambda env, totp: {"envelope": env}),
        ("/v1/members/proposals", lambda env, totp: {"envelope": env}),
        ("/v1/totp/enrol", lambda env, totp: {"envelope": env, "confirm_code": totp}),
    ],
    ids=["as-session.open", "as-member.propose", "as-totp_enrol"],
)
def test_approval_presented_as_another_action_type(
    world: World, pending: dict[str, Any], path: str, wrapper: Any
) -> None:
    env = approval_env(world, "bob", pending)
    before = membership_state(world)
    response = post(world, path, wrapper(env, world.code("bob")))
    assert_refused(world, response, 401, "wrong_action_type", before)
    hits = refusals(world, "wrong_action_type")
    assert len(hits) == 1
    # bob really signed it; attributing it to him is right, leaving it null is acceptable
    assert hits[0]["actor"] in (world["bob"].member_id, None)
    assert hits[0]["envelope"] == env
    # The genuine approval still works afterwards: nothing was consumed.
    done = post(world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": world.code("bob")})
    assert done.status_code == 200, done.text


def test_approval_presented_as_rejection_and_vice_versa(world: World, pending: dict[str, Any]) -> None:
    before = membership_state(world)
    env = approval_env(world, "bob", pending)
    response = post(world, f"/v1/proposals/{pending['id']}/reject", {"envelope": env})
    assert_refused(world, response, 401, "wrong_action_type", before)
    env = approval_env(world, "bob", pending, type="proposal.reject")
    response = post(
        world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": world.code("bob")}
    )
    assert_refused(world, response, 401, "wrong_action_type", before)
    assert len(refusals(world, "wrong_action_type")) == 2


@pytest.mark.parametrize(
    "other_type", ["ceremony.approve", "withdrawal.approve", "policy.approve", "keyset.approve"]
)
def test_approval_of_another_subject_kind_refused_for_a_proposal(
    world: World, pending: dict[str, Any], other_type: str
) -> None:
    """A ceremony or withdrawal approval carrying the same ids cannot approve a proposal."""
    before = membership_state(world)
    env = approval_env(world, "bob", pending, type=other_type)
    response = post(
        world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": world.code("bob")}
    )
    assert_refused(world, response, 401, "wrong_action_type", before)
    assert len(refusals(world, "wrong_action_type")) == 1


def test_approval_for_one_proposal_presented_for_another(world: World, pending: dict[str, Any]) -> None:
    other = world.client.members.propose_add(world["alice"], new_member("nora", Role.AUDITOR).card())
    before = membership_state(world)
    env = approval_env(world, "bob", pending)
    response = post(
        world, f"/v1/proposals/{other['id']}/approve", {"envelope": env, "totp": world.code("bob")}
    )
    assert_refused(world, response, 422, "invalid_input", before)
    assert len(refusals(world, "invalid_input")) == 1


def test_digest_of_other_content_refused(world: World, pending: dict[str, Any]) -> None:
    """Signed over a digest of different content (what a spoofed screen would show)."""
    before = membership_state(world)
    forged = {
        **pending,
        "body": {**pending["body"], "card": new_member("eve", Role.CUSTODIAN).card().to_json()},
    }
    env = approval_env(world, "bob", forged)
    response = post(
        world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": world.code("bob")}
    )
    assert_refused(world, response, 409, "conflict", before)
    assert len(refusals(world, "conflict")) == 1


# --- wrong deployment, stale ------------------------------------------------------------


def test_envelope_for_another_deployment_refused(world: World, pending: dict[str, Any]) -> None:
    before = membership_state(world)
    env = approval_env(world, "bob", pending, deployment="dep_" + "0" * 16)
    response = post(
        world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": world.code("bob")}
    )
    assert_refused(world, response, 401, "wrong_deployment", before)
    env = sign_action(
        world["olga"], type="session.open", deployment="dep_elsewhere", body={}, issued_at=world.clock()
    ).to_json()
    response = post(world, "/v1/sessions", {"envelope": env})
    assert_refused(world, response, 401, "wrong_deployment", before)
    assert len(refusals(world, "wrong_deployment")) == 2


@pytest.mark.parametrize("offset", [-600, -(MAX_AGE_SECONDS + 1), MAX_FUTURE_SECONDS + 1, 3600])
def test_stale_or_future_envelope_refused(world: World, pending: dict[str, Any], offset: int) -> None:
    before = membership_state(world)
    totp = world.code("bob")
    env = approval_env(world, "bob", pending, issued_at=world.clock() + offset)
    response = post(world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": totp})
    assert_refused(world, response, 401, "stale_action", before)
    assert len(refusals(world, "stale_action")) == 1


@pytest.mark.parametrize("offset", [-MAX_AGE_SECONDS, MAX_FUTURE_SECONDS])
def test_freshness_window_edges_accepted(world: World, pending: dict[str, Any], offset: int) -> None:
    totp = world.code("bob")
    env = approval_env(world, "bob", pending, issued_at=world.clock() + offset)
    response = post(world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": totp})
    assert response.status_code == 200, response.text


# --- edited after signing ---------------------------------------------------------------


def _flip(signature_b64: str) -> str:
    raw = bytearray(base64.b64decode(signature_b64))
    raw[10] ^= 0x04
    return base64.b64encode(bytes(raw)).decode("ascii")


def _edits(world: World, pending: dict[str, Any]) -> dict[str, Any]:
    return {
        "body.digest": lambda e: e["action"]["body"].__setitem__("digest", "0" * 64),
        "body.extra": lambda e: e["action"]["body"].__setitem__("reason", "added later"),
        "actor": lambda e: e["action"].__setitem__("actor", world["cora"].member_id),
        "issued_at": lambda e: e["action"].__setitem__("issued_at", e["action"]["issued_at"] + 1),
        "nonce": lambda e: e["action"].__setitem__("nonce", "f" * 32),
        "signature": lambda e: e.__setitem__("signature", _flip(e["signature"])),
    }


@pytest.mark.parametrize("field", ["body.digest", "body.extra", "actor", "issued_at", "nonce", "signature"])
def test_envelope_edited_after_signing_refused(world: World, pending: dict[str, Any], field: str) -> None:
    before = membership_state(world)
    env = approval_env(world, "bob", pending)
    edited = copy.deepcopy(env)
    _edits(world, pending)[field](edited)
    response = post(
        world, f"/v1/proposals/{pending['id']}/approve", {"envelope": edited, "totp": world.code("bob")}
    )
    assert_refused(world, response, 401, "bad_signature", before)
    assert len(refusals(world, "bad_signature")) == 1
    # bob's second factor was never consulted, so nothing counts against him
    with world.svc.db.read() as s:
        assert s.get(Member, world["bob"].member_id).totp_failures == 0


def test_proposal_body_edited_after_signing_refused(world: World) -> None:
    env = world.client.sign(
        world["alice"],
        "member.propose",
        {"change": "add", "card": new_member("nina", Role.CUSTODIAN).card().to_json()},
    )
    env["action"]["body"]["card"] = new_member("eve", Role.CUSTODIAN).card().to_json()
    before = membership_state(world)
    response = post(world, "/v1/members/proposals", {"envelope": env})
    assert_refused(world, response, 401, "bad_signature", before)


def test_envelope_signed_by_a_stranger_refused(world: World, pending: dict[str, Any]) -> None:
    stranger = new_member("mallory", Role.CUSTODIAN)
    before = membership_state(world)
    env = sign_action(
        stranger,
        type="proposal.approve",
        deployment=world.deployment,
        body={"proposal": pending["id"], "digest": proposal_digest(pending)},
        issued_at=world.clock(),
    ).to_json()
    response = post(world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": "123456"})
    assert_refused(world, response, 401, "unknown_actor", before)
    # Claiming to be bob with the stranger's signature is a bad signature.
    env["action"]["actor"] = world["bob"].member_id
    response = post(world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": "123456"})
    assert_refused(world, response, 401, "bad_signature", before)


# --- core level: the signature covers every field ----------------------------------------


@pytest.mark.parametrize("field", ["type", "deployment", "actor", "body", "nonce", "issued_at"])
def test_signature_covers_every_action_field(field: str) -> None:
    signer = new_member("alice", Role.MANAGER)
    action = sign_action(
        signer,
        type="proposal.approve",
        deployment="dep_a",
        body={"proposal": "p1"},
        issued_at=1000,
        nonce="a" * 32,
    )
    action.verify(signer.sign_public)
    changed = {
        "type": "proposal.reject",
        "deployment": "dep_b",
        "actor": "mem_" + "0" * 20,
        "body": {"proposal": "p2"},
        "nonce": "b" * 32,
        "issued_at": 1001,
    }[field]
    doc = action.to_json()
    doc["action"][field] = changed
    with pytest.raises(Error) as err:
        parse_envelope(doc).verify(signer.sign_public)
    assert err.value.code == "bad_signature"


def test_check_context_codes() -> None:
    signer = new_member("alice", Role.MANAGER)
    action = sign_action(signer, type="proposal.approve", deployment="dep_a", body={}, issued_at=1000)
    check_context(action, expected_type="proposal.approve", deployment="dep_a", now=1000)
    cases = [
        ({"expected_type": "session.open", "deployment": "dep_a", "now": 1000}, "wrong_action_type"),
        (
            {"expected_type": frozenset({"a.b", "c.d"}), "deployment": "dep_a", "now": 1000},
            "wrong_action_type",
        ),
        ({"expected_type": "proposal.approve", "deployment": "dep_b", "now": 1000}, "wrong_deployment"),
        (
            {"expected_type": "proposal.approve", "deployment": "dep_a", "now": 1000 + MAX_AGE_SECONDS + 1},
            "stale_action",
        ),
        (
            {
                "expected_type": "proposal.approve",
                "deployment": "dep_a",
                "now": 1000 - MAX_FUTURE_SECONDS - 1,
            },
            "stale_action",
        ),
    ]
    for kwargs, code in cases:
        with pytest.raises(Error) as err:
            check_context(action, **kwargs)
        assert err.value.code == code


@pytest.mark.parametrize("context", ["right", "wrong-deployment", "stale"])
def test_forged_envelope_is_not_attributed_to_the_claimed_actor(
    world: World, pending: dict[str, Any], context: str
) -> None:
    """A stranger claims to be bob. Whatever else is wrong with the envelope, the audit
    log must not record bob as the actor of an action bob never signed (the claim is
    still visible in the refusal's bounded summary of the envelope)."""
    stranger = new_member("mallory", Role.CUSTODIAN)
    env = sign_action(
        stranger,
        type="proposal.approve",
        deployment="dep_elsewhere" if context == "wrong-deployment" else world.deployment,
        body={"proposal": pending["id"], "digest": proposal_digest(pending)},
        issued_at=world.clock() - (3600 if context == "stale" else 0),
    ).to_json()
    env["action"]["actor"] = world["bob"].member_id
    response = post(world, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": "123456"})
    assert response.status_code == 401
    world.client._sessions.clear()
    lines, _ = world.client.audit.export(world["olga"])
    refused = [json.loads(x) for x in lines if json.loads(x)["outcome"] == "refused"]
    assert len(refused) == 1
    # An unverified envelope is kept as a bounded summary (T33); the claim stays visible.
    assert refused[0]["envelope"] is None
    assert refused[0]["data"]["received"]["claimed_actor"] == world["bob"].member_id
    assert refused[0]["actor"] != world["bob"].member_id, "refusal attributed to a member who did not sign it"
    with world.svc.db.read() as s:
        assert s.get(Member, world["bob"].member_id).totp_failures == 0
