"""THREATS 36: a rekeyed member's old key keeps no session.

A member is rekeyed because its old key is lost or suspected stolen. Whoever holds the
old key may have opened a read session before the rekey; that session must die with
the key. The session records the key that signed ``session.open`` and every read checks
it against the member's key now, so this holds however the key came to change.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlmodel import select
from tests.conftest import World
from tests.helpers.audit import audit_entries, membership_state, post
from tests.helpers.withdrawals import approve_proposal, pass_delay

from tandem.core.actions import sign_action
from tandem.core.identity import MemberSecrets
from tandem.core.policy import default_policy
from tandem.core.roles import Role
from tandem.store.models import Member
from tandem.store.models import Session as SessionRow


@pytest.fixture(autouse=True)
def membership_changes_at_approval(world: World) -> None:
    """A policy whose membership changes take effect at approval. With the default day
    of delay every session opened before the rekey would have lapsed by the time it
    took effect, and the test would show nothing."""
    doc = default_policy().to_json() | {
        "version": 2,
        "membership": {"approvals": {"custodian": 1, "manager": 1}, "delay_seconds": 0},
    }
    approve_proposal(world, world.client.policy.propose(world["alice"], doc)["id"])
    pass_delay(world)


class RekeyedSigner:
    """The member's new key acting under its unchanged member id."""

    def __init__(self, member_id: str, keys: MemberSecrets) -> None:
        self.member_id = member_id
        self.keys = keys

    def sign(self, message: bytes) -> bytes:
        return self.keys.sign(message)


def session_open(world: World, signer: MemberSecrets | RekeyedSigner) -> dict[str, Any]:
    return sign_action(
        signer, type="session.open", deployment=world.deployment, body={}, issued_at=world.clock()
    ).to_json()


def open_session(world: World, signer: MemberSecrets | RekeyedSigner) -> str:
    response = post(world, "/v1/sessions", {"envelope": session_open(world, signer)})
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def read_members(world: World, token: str) -> httpx.Response:
    return world.client.http.get("/v1/members", headers={"Authorization": f"Bearer {token}"})


def session_refusals(world: World) -> list[dict[str, Any]]:
    world.client._sessions.clear()
    return [
        e
        for e in audit_entries(world)
        if e["outcome"] == "refused"
        and e["code"] == "invalid_session"
        and e["data"].get("path") == "/v1/members"
    ]


def rekey(world: World, who: str, *, proposer: str, approver: str) -> MemberSecrets:
    old = world[who]
    new = MemberSecrets.generate(name=old.name, role=old.role)
    prop = world.client.members.propose_rekey(world[proposer], old.member_id, new.card())
    done = world.client.members.approve(world[approver], prop["id"], totp=world.code(approver))
    assert done["status"] == "applied", done
    return new


def test_old_keys_session_is_refused_after_rekey(world: World) -> None:
    stolen_token = open_session(world, world["bob"])
    assert read_members(world, stolen_token).status_code == 200

    new_bob = rekey(world, "bob", proposer="alice", approver="cora")
    before = membership_state(world)

    response = read_members(world, stolen_token)

    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_session"
    assert membership_state(world) == before
    hits = session_refusals(world)
    assert len(hits) == 1
    assert hits[0]["kind"] == "http.request.refused"
    assert hits[0]["actor"] is None
    # The old key cannot open a new session either; the new key can, and reads.
    again = post(world, "/v1/sessions", {"envelope": session_open(world, world["bob"])})
    assert again.status_code == 401
    assert again.json()["code"] == "key_rotated"
    fresh = open_session(world, RekeyedSigner(world["bob"].member_id, new_bob))
    assert read_members(world, fresh).status_code == 200


def test_session_check_holds_however_the_key_changed(world: World) -> None:
    """Whatever path changes a member's key (a future membership flow, a repair), the
    check at read time refuses a session the old key opened."""
    token = open_session(world, world["cora"])
    replacement = MemberSecrets.generate(name="cora", role=Role.CUSTODIAN).card()
    with world.svc.db.write() as s:
        row = s.get(Member, world["cora"].member_id)
        assert row is not None
        row.sign_public = replacement.sign_public.hex()
        s.add(row)
    with world.svc.db.read() as s:
        sessions_before = sorted(r.token_hash for r in s.exec(select(SessionRow)).all())
    before = membership_state(world)

    response = read_members(world, token)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_session"
    assert membership_state(world) == before
    with world.svc.db.read() as s:
        assert sorted(r.token_hash for r in s.exec(select(SessionRow)).all()) == sessions_before
    assert len(session_refusals(world)) == 1


def test_other_members_sessions_survive_a_rekey(world: World) -> None:
    cora_token = open_session(world, world["cora"])
    rekey(world, "bob", proposer="alice", approver="cora")
    assert read_members(world, cora_token).status_code == 200
