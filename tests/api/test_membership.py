from __future__ import annotations

import pytest
from tests.conftest import World, new_member

from tandem.client import RemoteError
from tandem.core.roles import Role


def test_member_added_with_other_side_approval(world: World) -> None:
    c = world.client
    newbie = new_member("nina", Role.CUSTODIAN)
    prop = c.propose_add(world["alice"], newbie.card())
    assert prop["status"] == "pending"
    done = c.approve_proposal(world["bob"], prop["id"], totp=world.code("bob"))
    assert done["status"] == "applied"
    names = {m["name"] for m in c.get(world["olga"], "/v1/members")}
    assert "nina" in names


def test_self_approval_refused_and_audited(world: World) -> None:
    c = world.client
    prop = c.propose_add(world["alice"], new_member("nina", Role.AUDITOR).card())
    with pytest.raises(RemoteError) as err:
        c.approve_proposal(world["alice"], prop["id"], totp=world.code("alice"))
    assert err.value.remote_code == "self_approval"
    lines, _ = c.audit_export(world["olga"])
    assert any('"outcome":"refused"' in line and "self_approval" in line for line in lines)


def test_refused_reads_are_audited_too(world: World) -> None:
    response = world.client.http.get("/v1/members")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_session"
    lines, _ = world.client.audit_export(world["olga"])
    refused = [line for line in lines if '"kind":"http.request.refused"' in line]
    assert any('"code":"invalid_session"' in line and '"path":"/v1/members"' in line for line in refused)
