"""The authorisation matrix.

1. Every write route (enumerated from ``api_routes(app)``, so routes added later are covered
   automatically) refuses an unsigned or garbage body with a 4xx and changes nothing;
   only ``/v1/genesis`` is exempt (it carries its own signatures).
2. Every read route except ``/v1/health`` and ``/v1/deployment`` refuses a request
   without a valid session with 401.
3. For membership and audit: role x operation, with the expected answer and code, and
   for each refusal no state change and an audit entry.

Role x route over every write route (ceremonies, key sets, withdrawals, policy, proofs
included) is in ``test_authz_every_route.py``.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlmodel import select
from tests.conftest import World, new_member
from tests.helpers.audit import refusals

from tandem.api import routes_public
from tandem.api.deps import api_routes
from tandem.client.members import proposal_digest
from tandem.core.actions import sign_action
from tandem.core.canonical import canonical
from tandem.core.identity import b64
from tandem.core.roles import Role
from tandem.store.models import Approval, AuditRow, Member, Proposal, UsedNonce

PUBLIC_READS = {"/v1/health", "/v1/deployment"}
SELF_SIGNED_WRITES = {"/v1/genesis"}


def routes(world: World, *, reads: bool) -> list[tuple[str, str]]:
    out = []
    for route in api_routes(world.client.http.app):
        if route.path.startswith(routes_public.PREFIX):
            continue  # session-less by design: tests/api/test_public_files.py
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            if (method == "GET") == reads:
                out.append((method, route.path))
    assert out
    return out


def concrete(path: str) -> str:
    """A path template with every parameter filled by a plausible, nonexistent id."""
    return re.sub(r"\{[^}]+\}", "1", path)


def post(world: World, method: str, path: str, data: bytes) -> httpx.Response:
    return world.client.http.request(method, path, content=data, headers={"Content-Type": "application/json"})


def state(world: World) -> dict[str, Any]:
    with world.svc.db.read() as s:
        return {
            "members": sorted((m.id, m.role, m.status, m.sign_public) for m in s.exec(select(Member)).all()),
            "proposals": sorted((p.id, p.status) for p in s.exec(select(Proposal)).all()),
            "approvals": sorted((a.subject, a.member) for a in s.exec(select(Approval)).all()),
            "nonces": len(s.exec(select(UsedNonce)).all()),
            # Every accepted state change writes an "ok" entry; refusals write "refused".
            "ok_entries": sum(1 for r in s.exec(select(AuditRow)).all() if '"outcome":"ok"' in r.line),
        }


# --- 1. write routes refuse unsigned and garbage bodies ----------------------------------------


def garbage_bodies(world: World) -> list[tuple[str, bytes]]:
    unsigned = {
        "action": {
            "type": "session.open",
            "deployment": world.deployment,
            "actor": world["alice"].member_id,
            "body": {},
            "nonce": "0" * 32,
            "issued_at": world.clock(),
        },
        "signature": b64(bytes(64)),
    }
    stranger = sign_action(
        new_member("mallory", Role.MANAGER),
        type="session.open",
        deployment=world.deployment,
        body={},
        issued_at=world.clock(),
    ).to_json()
    wrong_type = world.client.sign(world["alice"], "nothing.at_all", {})
    return [
        ("empty", b""),
        ("not-json", b"garbage"),
        ("empty-object", b"{}"),
        ("empty-envelope", b'{"envelope":{}}'),
        ("unsigned", canonical({"envelope": unsigned})),
        ("unsigned+totp", canonical({"envelope": unsigned, "totp": "123456", "confirm_code": "123456"})),
        ("stranger", canonical({"envelope": stranger})),
        ("wrong-type", canonical({"envelope": wrong_type, "totp": "123456"})),
    ]


def test_every_write_route_refuses_unsigned_or_garbage_bodies(world: World) -> None:
    before = state(world)
    bodies = garbage_bodies(world)
    problems = []
    for method, path in routes(world, reads=False):
        if path in SELF_SIGNED_WRITES:
            continue
        for name, data in bodies:
            response = post(world, method, concrete(path), data)
            if not 400 <= response.status_code < 500:
                problems.append(f"{method} {path} [{name}] -> {response.status_code} {response.text[:120]}")
    assert problems == []
    assert state(world) == before


def test_genesis_refuses_garbage_and_a_second_genesis(world: World) -> None:
    before = state(world)
    for _name, data in garbage_bodies(world):
        response = post(world, "POST", "/v1/genesis", data)
        assert 400 <= response.status_code < 500, response.text
    assert state(world) == before


def test_write_routes_are_all_enumerated(world: World) -> None:
    writes = {p for _m, p in routes(world, reads=False)}
    assert {
        "/v1/sessions",
        "/v1/totp/enrol",
        "/v1/members/proposals",
        "/v1/proposals/{proposal_id}/approve",
        "/v1/proposals/{proposal_id}/reject",
    } <= writes


# --- 2. read routes need a session -------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Basic YWxpY2U6cGFzcw==",
        "bearer " + "A" * 43,
        "Token x",
    ],
    ids=["none", "empty", "bearer-only", "bearer-space", "garbage", "basic", "random-token", "other-scheme"],
)
def test_every_read_route_needs_a_session(world: World, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    problems = []
    for _method, path in routes(world, reads=True):
        if path in PUBLIC_READS:
            continue
        response = world.client.http.get(concrete(path), headers=headers)
        if response.status_code != 401 or response.json().get("code") != "invalid_session":
            problems.append(f"GET {path} -> {response.status_code} {response.text[:120]}")
    assert problems == []


def test_public_reads_need_no_session(world: World) -> None:
    for path in PUBLIC_READS:
        assert world.client.http.get(path).status_code == 200


def test_expired_session_refused_everywhere(world: World) -> None:
    token = world.client.session(world["olga"])
    headers = {"Authorization": f"Bearer {token}"}
    assert world.client.http.get("/v1/members", headers=headers).status_code == 200
    world.clock.advance(15 * 60)
    for _method, path in routes(world, reads=True):
        if path in PUBLIC_READS:
            continue
        response = world.client.http.get(concrete(path), headers=headers)
        assert response.status_code == 401, (path, response.text)


def test_removed_members_session_and_signature_stop_working(world: World) -> None:
    token = world.client.session(world["cora"])
    headers = {"Authorization": f"Bearer {token}"}
    prop = world.client.members.propose_remove(world["alice"], world["cora"].member_id)
    world.client.members.approve(world["bob"], prop["id"], totp=world.code("bob"))
    for _method, path in routes(world, reads=True):
        if path in PUBLIC_READS:
            continue
        assert world.client.http.get(concrete(path), headers=headers).status_code == 401, path
    before = state(world)
    env = world.client.sign(world["cora"], "session.open", {})
    response = post(world, "POST", "/v1/sessions", canonical({"envelope": env}))
    assert response.status_code == 403
    assert state(world) == before


# --- 3. membership and audit: role x operation -------------------------------------------------

# (operation, proposer, actor, expected status, expected code or None)
MATRIX: list[tuple[str, str | None, str, int, str | None]] = [
    ("propose", None, "alice", 201, None),
    ("propose", None, "bob", 201, None),
    ("propose", None, "olga", 403, "role_not_allowed"),
    ("approve", "alice", "alice", 403, "self_approval"),
    ("approve", "alice", "mark", 403, "role_not_allowed"),
    ("approve", "alice", "bob", 200, None),
    ("approve", "alice", "olga", 403, "role_not_allowed"),
    ("approve", "bob", "bob", 403, "self_approval"),
    ("approve", "bob", "cora", 403, "role_not_allowed"),
    ("approve", "bob", "alice", 200, None),
    ("approve", "bob", "olga", 403, "role_not_allowed"),
    ("reject", "alice", "alice", 403, "self_approval"),
    ("reject", "alice", "mark", 403, "role_not_allowed"),
    ("reject", "alice", "bob", 200, None),
    ("reject", "alice", "olga", 403, "role_not_allowed"),
    ("reject", "bob", "cora", 403, "role_not_allowed"),
    ("reject", "bob", "alice", 200, None),
    ("reject", "bob", "olga", 403, "role_not_allowed"),
    ("remove", None, "alice", 201, None),
    ("remove", None, "bob", 201, None),
    ("remove", None, "olga", 403, "role_not_allowed"),
]


def _id(case: tuple[str, str | None, str, int, str | None]) -> str:
    op, proposer, actor, status, _code = case
    return f"{actor}-{op}" + (f"-of-{proposer}" if proposer else "") + f"-{status}"


@pytest.mark.parametrize("case", MATRIX, ids=[_id(c) for c in MATRIX])
def test_membership_matrix(world: World, case: tuple[str, str | None, str, int, str | None]) -> None:
    op, proposer, actor, status, code = case
    c = world.client
    http = c.http
    if op == "propose":
        env = c.sign(
            world[actor],
            "member.propose",
            {"change": "add", "card": new_member("nina", Role.AUDITOR).card().to_json()},
        )
        before = state(world)
        response = post(world, "POST", "/v1/members/proposals", canonical({"envelope": env}))
    elif op == "remove":
        env = c.sign(world[actor], "member.propose", {"change": "remove", "member": world["olga"].member_id})
        before = state(world)
        response = post(world, "POST", "/v1/members/proposals", canonical({"envelope": env}))
    else:
        assert proposer is not None
        prop = c.members.propose_add(world[proposer], new_member("nina", Role.AUDITOR).card())
        body = {"proposal": prop["id"], "digest": proposal_digest(prop)}
        if op == "approve":
            env = c.sign(world[actor], "proposal.approve", body)
            payload = {"envelope": env, "totp": world.code(actor)}
        else:
            env = c.sign(world[actor], "proposal.reject", {**body, "reason": "matrix"})
            payload = {"envelope": env}
        before = state(world)
        response = http.post(f"/v1/proposals/{prop['id']}/{op}", content=canonical(payload))
    assert response.status_code == status, response.text
    if code is None:
        assert state(world) != before
        return
    assert response.json()["code"] == code
    assert state(world) == before
    hits = refusals(world, code)
    assert len(hits) == 1
    assert hits[0]["actor"] == world[actor].member_id


READS = [
    "/v1/members",
    "/v1/proposals",
    "/v1/proposals/{pid}",
    "/v1/audit/export",
    "/v1/audit/checkpoint",
    "/v1/audit/inclusion/0",
    "/v1/audit/consistency?old=1&new=2",
]


@pytest.mark.parametrize("reader", ["alice", "bob", "olga"], ids=["manager", "custodian", "auditor"])
def test_every_role_may_read_membership_and_audit(world: World, reader: str) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.AUDITOR).card())
    token = world.client.session(world[reader])
    for path in READS:
        response = world.client.http.get(
            path.replace("{pid}", prop["id"]), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, (path, response.text)


@pytest.mark.parametrize("who", ["alice", "bob", "olga"], ids=["manager", "custodian", "auditor"])
def test_every_role_may_open_a_session_and_replace_its_own_totp_seed(world: World, who: str) -> None:
    from tandem.core.identity import MemberSecrets

    assert world.client.session(world[who])
    member = world[who]
    old_code = world.code(who)
    replacement = MemberSecrets(
        name=member.name,
        role=member.role,
        sign_seed=bytes(member._sign),
        seal_private=bytes(member.seal_private_key),
        totp_secret="KRUGKIDROVUWG2ZAMJZG653OEBTG66BA",
    )
    world.clock.advance(30)
    assert world.client.members.enrol_totp(replacement, old_code=old_code)["totp_enrolled"] is True


def test_nobody_can_enrol_a_seed_for_someone_else(world: World) -> None:
    """The enrolment action is signed by its actor: the seed always lands on the signer."""
    before = state(world)
    env = world.client.sign(world["alice"], "member.totp_enrol", {"sealed_secret": "AAAA"})
    env["action"]["actor"] = world["bob"].member_id
    response = post(
        world,
        "POST",
        "/v1/totp/enrol",
        canonical({"envelope": env, "confirm_code": "123456", "totp": "123456"}),
    )
    assert response.status_code == 401
    assert response.json()["code"] == "bad_signature"
    assert state(world) == before
