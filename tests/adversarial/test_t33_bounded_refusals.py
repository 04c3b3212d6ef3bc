"""THREATS 33: an unauthenticated request cannot grow the log by more than a bounded entry.

Every refusal is audited, and the log is permanent, so whatever a refusal stores is
written for good by whoever sends the request. A stranger posts a megabyte: the log
grows by one entry (and its signed checkpoint) of a few hundred bytes that keeps the
envelope's hash, size and claims, never its content. A verified member's refused
envelope stays whole evidence when it is of ordinary size, and is summarised the same
way when it is not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from sqlmodel import select
from tests.conftest import World, new_member
from tests.helpers.audit import audit_entries, membership_state, post

from tandem.client.members import proposal_digest
from tandem.core import audit
from tandem.core.actions import parse_envelope, sign_action
from tandem.core.canonical import canonical
from tandem.core.membership import replay_signatures
from tandem.core.roles import Role
from tandem.services.base import REFUSED_ENVELOPE_MAX_BYTES
from tandem.store.models import AuditRow, CheckpointRow

MIB = 1 << 20
# One refusal entry plus its checkpoint; far below any envelope worth stealing space with.
BOUND = 2048
PAD = MIB - 4096  # the whole request stays under the 1 MiB body cap (T34 is another test)


def log_bytes(world: World) -> tuple[int, int]:
    """(entries, bytes) of the permanent log: entry lines plus signed checkpoints."""
    with world.svc.db.read() as s:
        lines = [r.line for r in s.exec(select(AuditRow)).all()]
        checkpoints = [c.doc for c in s.exec(select(CheckpointRow)).all()]
    return len(lines), sum(len(x.encode()) for x in lines + checkpoints)


def the_new_entry(world: World, before: int) -> dict[str, Any]:
    world.client._sessions.clear()
    entries = audit_entries(world)
    # The auditor's own session.open adds entries after the refusal; the refusal is the
    # first entry after the snapshot.
    return entries[before]


def refused_digest(envelope: dict[str, Any]) -> str:
    return hashlib.sha256(b"TANDEM/1/refused-envelope\x00" + canonical(envelope)).hexdigest()


def log_still_verifies(world: World) -> None:
    world.client._sessions.clear()
    lines, checkpoint = world.client.audit.export(world["olga"])
    audit.verify_export(lines, checkpoint, world.svc.key.sign_public)
    replay_signatures(json.loads(line) for line in lines)


def stranger_envelope(world: World, *, pad: int) -> dict[str, Any]:
    """A well-formed, validly signed action from a key that is no member."""
    stranger = new_member("mallory", Role.MANAGER)
    return sign_action(
        stranger,
        type="member.propose",
        deployment=world.deployment,
        body={"change": "add", "card": {"pad": "a" * pad}},
        issued_at=world.clock(),
    ).to_json()


def test_stranger_megabyte_grows_the_log_by_one_bounded_entry(world: World) -> None:
    env = stranger_envelope(world, pad=PAD)
    assert len(canonical({"envelope": env})) > PAD
    before_state = membership_state(world)
    n0, bytes0 = log_bytes(world)

    response = post(world, "/v1/members/proposals", {"envelope": env})

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unknown_actor"
    n1, bytes1 = log_bytes(world)
    assert n1 == n0 + 1
    assert bytes1 - bytes0 < BOUND, f"a stranger's megabyte grew the log by {bytes1 - bytes0} bytes"
    assert membership_state(world) == before_state
    entry = the_new_entry(world, n0)
    assert (entry["kind"], entry["outcome"], entry["code"]) == (
        "member.propose.refused",
        "refused",
        "unknown_actor",
    )
    assert entry["actor"] is None
    assert entry["envelope"] is None
    received = entry["data"]["received"]
    assert received["bytes"] == len(canonical(env))
    assert received["sha256"] == refused_digest(env)
    assert received["claimed_type"] == "member.propose"
    assert received["claimed_actor"] == env["action"]["actor"]
    log_still_verifies(world)


def test_forged_claims_are_cut_short(world: World) -> None:
    """A forged envelope naming a real member; then one whose type and actor are made
    up: the claims are kept, cut to a bounded length."""
    env = stranger_envelope(world, pad=1000)
    env["action"]["actor"] = world["bob"].member_id
    n0, bytes0 = log_bytes(world)
    response = post(world, "/v1/members/proposals", {"envelope": env})
    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert log_bytes(world)[0] == n0 + 1
    entry = the_new_entry(world, n0)
    assert entry["code"] == "bad_signature"
    assert entry["actor"] is None, "a refusal was attributed to a member who did not sign it"
    assert entry["envelope"] is None
    assert entry["data"]["received"]["claimed_actor"] == world["bob"].member_id

    huge = {"action": {"type": "t" * 300_000, "actor": "x" * 300_000}, "signature": "AA"}
    n0, bytes0 = log_bytes(world)
    response = post(world, "/v1/sessions", {"envelope": huge})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    n1, bytes1 = log_bytes(world)
    assert n1 == n0 + 1
    assert bytes1 - bytes0 < BOUND
    received = the_new_entry(world, n0)["data"]["received"]
    assert len(received["claimed_type"]) < 200
    assert len(received["claimed_actor"]) < 200
    log_still_verifies(world)


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("garbage", b"\x01" * PAD, 422, "malformed_json"),
        (
            "long-unknown-fields",
            canonical({f"{i:06d}" + "k" * 5000: 1 for i in range(150)}),
            422,
            "unknown_field",
        ),
    ],
)
def test_unparsable_megabyte_leaves_one_bounded_entry(
    world: World, name: str, body: bytes, status: int, code: str
) -> None:
    """Bodies refused before any envelope exists: the reason (which may quote field
    names the sender chose) is cut short too."""
    before_state = membership_state(world)
    n0, bytes0 = log_bytes(world)
    response = world.client.http.post(
        "/v1/members/proposals", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == status, response.text[:300]
    assert response.json()["code"] == code
    n1, bytes1 = log_bytes(world)
    assert n1 == n0 + 1
    assert bytes1 - bytes0 < BOUND, f"{name}: the log grew by {bytes1 - bytes0} bytes"
    assert membership_state(world) == before_state
    entry = the_new_entry(world, n0)
    assert (entry["kind"], entry["code"], entry["envelope"]) == ("http.request.refused", code, None)
    assert len(entry["data"]["reason"]) < 400


def test_verified_member_refusal_keeps_the_envelope_as_evidence(world: World) -> None:
    """bob replays his own approval: bob did sign it, so it is kept whole and anyone
    can re-verify it from the log."""
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    body = {"proposal": prop["id"], "digest": proposal_digest(prop)}
    env = world.client.sign(world["bob"], "proposal.approve", body)
    done = post(world, f"/v1/proposals/{prop['id']}/approve", {"envelope": env, "totp": world.code("bob")})
    assert done.status_code == 200, done.text
    before_state = membership_state(world)
    n0, _ = log_bytes(world)
    again = post(world, f"/v1/proposals/{prop['id']}/approve", {"envelope": env, "totp": world.code("bob")})
    assert again.status_code == 409
    assert again.json()["code"] == "replayed_action"
    assert membership_state(world) == before_state
    entry = the_new_entry(world, n0)
    assert (entry["code"], entry["actor"]) == ("replayed_action", world["bob"].member_id)
    assert entry["envelope"] == env
    parse_envelope(entry["envelope"]).verify(world["bob"].card().sign_public)
    assert "received" not in entry["data"]
    log_still_verifies(world)


def test_verified_member_oversized_envelope_is_summarised(world: World) -> None:
    """A member's own signed megabyte is no licence to fill the log either."""
    env = world.client.sign(world["bob"], "session.open", {"pad": "p" * (PAD // 2)})
    assert len(canonical(env)) > REFUSED_ENVELOPE_MAX_BYTES
    before_state = membership_state(world)
    n0, bytes0 = log_bytes(world)
    response = post(world, "/v1/sessions", {"envelope": env})
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_field"
    n1, bytes1 = log_bytes(world)
    assert n1 == n0 + 1
    assert bytes1 - bytes0 < BOUND
    assert membership_state(world) == before_state
    entry = the_new_entry(world, n0)
    assert (entry["code"], entry["actor"], entry["envelope"]) == (
        "unknown_field",
        world["bob"].member_id,
        None,
    )
    assert entry["data"]["received"]["sha256"] == refused_digest(env)
    assert entry["data"]["received"]["bytes"] == len(canonical(env))
    log_still_verifies(world)
