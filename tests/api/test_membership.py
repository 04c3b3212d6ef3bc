from __future__ import annotations

import json

import pytest
from tests.conftest import World, new_member
from tests.helpers.membership import apply_change, wait_out_delay

from tandem.core.roles import Role
from tandem.errors import RemoteError


def test_member_added_with_other_side_approval(world: World) -> None:
    """The other side's approval starts the membership delay; the member is added when
    the delay has passed (THREATS 35: never at once)."""
    c = world.client
    newbie = new_member("nina", Role.CUSTODIAN)
    prop = c.members.propose_add(world["alice"], newbie.card())
    assert prop["status"] == "pending"
    done = c.members.approve(world["bob"], prop["id"], totp=world.code("bob"))
    assert done["status"] == "approved"
    assert "nina" not in {m["name"] for m in c.get(world["olga"], "/v1/members")}
    wait_out_delay(world)
    assert apply_change(world, "alice", prop["id"])["status"] == "applied"
    names = {m["name"] for m in c.get(world["olga"], "/v1/members")}
    assert "nina" in names


def test_a_removal_takes_effect_at_once(world: World) -> None:
    """Removing a member only takes power away: no delay by default."""
    c = world.client
    prop = c.members.propose_remove(world["alice"], world["cora"].member_id)
    done = c.members.approve(world["bob"], prop["id"], totp=world.code("bob"))
    assert done["status"] == "applied"
    status = {m["name"]: m["status"] for m in c.get(world["olga"], "/v1/members")}
    assert status["cora"] == "removed"


def test_self_approval_refused_and_audited(world: World) -> None:
    c = world.client
    prop = c.members.propose_add(world["alice"], new_member("nina", Role.AUDITOR).card())
    with pytest.raises(RemoteError) as err:
        c.members.approve(world["alice"], prop["id"], totp=world.code("alice"))
    assert err.value.remote_code == "self_approval"
    lines, _ = c.audit.export(world["olga"])
    assert any('"outcome":"refused"' in line and "self_approval" in line for line in lines)


def test_refused_reads_are_audited_too(world: World) -> None:
    response = world.client.http.get("/v1/members")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_session"
    lines, _ = world.client.audit.export(world["olga"])
    refused = [line for line in lines if '"kind":"http.request.refused"' in line]
    assert any('"code":"invalid_session"' in line and '"path":"/v1/members"' in line for line in refused)


def test_a_lapsed_session_is_reopened_once_by_the_client(world: World) -> None:
    """Reads go on after the 15-minute session lapses: the client opens a new session
    with a fresh signed action (two session entries in the log), never reuses the old."""
    c = world.client
    c._sessions.clear()
    c.get(world["olga"], "/v1/members")
    first = c._sessions[world["olga"].member_id]
    world.clock.advance(16 * 60)
    assert c.get(world["olga"], "/v1/proposals") == []
    assert c._sessions[world["olga"].member_id] != first
    lines, _ = c.audit.export(world["olga"])
    opened = [
        e
        for e in map(json.loads, lines)
        if e["kind"] == "session.opened" and e["actor"] == world["olga"].member_id
    ]
    assert len(opened) >= 2
