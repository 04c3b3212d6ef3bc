"""THREATS 20: if an audit entry cannot be written, the state change does not happen
(fail closed): the member is not added, the proposal stays pending, no approval row,
no nonce spent, no TOTP code consumed — and the same request succeeds once the log
can be written again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import select
from tests.conftest import World, claim_token_of, new_member
from tests.helpers.audit import post, refusals
from tests.helpers.membership import wait_out_delay

from tandem.client.members import draft_genesis, proposal_digest, sign_genesis
from tandem.core.canonical import canonical
from tandem.core.roles import Role
from tandem.errors import AuditWriteError
from tandem.store import audit_log
from tandem.store.models import Approval, AuditRow, Member, Proposal, Session, UsedNonce


def state(world: World) -> dict[str, Any]:
    with world.svc.db.read() as s:
        bob = s.get(Member, world["bob"].member_id)
        assert bob is not None
        return {
            "members": sorted((m.id, m.name, m.role, m.status) for m in s.exec(select(Member)).all()),
            "proposals": sorted((p.id, p.status, p.approved_at) for p in s.exec(select(Proposal)).all()),
            "approvals": sorted((a.subject, a.member) for a in s.exec(select(Approval)).all()),
            "nonces": sorted(n.nonce for n in s.exec(select(UsedNonce)).all()),
            "sessions": len(s.exec(select(Session)).all()),
            "bob_totp": (bob.totp_last_step, bob.totp_failures),
            "audit_ok": sorted(
                r.seq for r in s.exec(select(AuditRow)).all() if json.loads(r.line)["outcome"] == "ok"
            ),
        }


@pytest.fixture
def failing_kinds(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Make ``audit_log.append`` fail for the entry kinds put in the returned set."""
    kinds: set[str] = set()
    real = audit_log.append

    def append(session: Any, key: Any, **kw: Any) -> dict[str, Any]:
        if kw["kind"] in kinds:
            raise AuditWriteError("the audit entry could not be written; nothing was changed")
        return real(session, key, **kw)

    monkeypatch.setattr(audit_log, "append", append)
    return kinds


@pytest.fixture
def failing_insert() -> Iterator[set[str]]:
    """Make the AuditRow INSERT itself fail in the database layer for the given kinds,
    so the real ``append`` and its own error handling are exercised."""
    kinds: set[str] = set()

    def before_insert(mapper: Any, connection: Any, target: AuditRow) -> None:
        if target.kind in kinds:
            raise RuntimeError("disk full")

    event.listen(AuditRow, "before_insert", before_insert)
    yield kinds
    event.remove(AuditRow, "before_insert", before_insert)


def approval(world: World, prop: dict[str, Any]) -> dict[str, Any]:
    env = world.client.sign(
        world["bob"],
        "proposal.approve",
        {"proposal": prop["id"], "digest": proposal_digest(prop)},
    )
    return {"envelope": env, "totp": world.code("bob")}


def failing_step(world: World, prop: dict[str, Any], kind: str) -> tuple[str, dict[str, Any], str]:
    """The request whose audit entry ``kind`` is written, as (path, body, refused kind).
    ``member.added`` is written when the approved addition is carried out after its
    delay (THREATS 35), so that case approves and waits first."""
    if kind == "proposal.approved":
        return f"/v1/proposals/{prop['id']}/approve", approval(world, prop), "proposal.approve.refused"
    done = post(world, f"/v1/proposals/{prop['id']}/approve", approval(world, prop))
    assert done.json()["status"] == "approved", done.text
    wait_out_delay(world)
    env = world.client.sign(world["alice"], "proposal.apply", {"proposal": prop["id"]})
    world.client.session(world["olga"])  # reads after the wait need a session; open it now
    return f"/v1/proposals/{prop['id']}/apply", {"envelope": env}, "proposal.apply.refused"


@pytest.mark.parametrize("kind", ["proposal.approved", "member.added"])
def test_approval_rolled_back_when_its_audit_entry_fails(
    world: World, failing_kinds: set[str], kind: str
) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    path, body, refused_kind = failing_step(world, prop, kind)
    before = state(world)
    status_before = {p[0]: p[1] for p in before["proposals"]}[prop["id"]]
    failing_kinds.add(kind)
    response = post(world, path, body)
    assert response.status_code == 500
    assert response.json()["code"] == "audit_write_failed"
    after = state(world)
    assert after == before
    assert "nina" not in {m[1] for m in after["members"]}
    assert {p[0]: p[1] for p in after["proposals"]}[prop["id"]] == status_before
    assert body["envelope"]["action"]["nonce"] not in after["nonces"]
    failing_kinds.clear()
    # The refusal itself was recorded (a different entry kind), in its own transaction.
    hits = refusals(world, "audit_write_failed")
    assert [h["kind"] for h in hits] == [refused_kind]
    # Nothing was consumed: the very same request, TOTP code included, now succeeds.
    done = post(world, path, body)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == ("approved" if kind == "proposal.approved" else "applied")


@pytest.mark.parametrize("kind", ["proposal.approved", "member.added"])
def test_database_insert_failure_of_the_audit_row_fails_closed(
    world: World, failing_insert: set[str], kind: str
) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    path, body, _refused_kind = failing_step(world, prop, kind)
    before = state(world)
    failing_insert.add(kind)
    response = post(world, path, body)
    assert response.status_code == 500
    assert response.json()["code"] == "audit_write_failed"
    assert "disk full" not in response.text  # the cause stays in the server
    assert state(world) == before
    failing_insert.clear()
    assert post(world, path, body).status_code == 200


def test_proposal_not_created_when_its_audit_entry_fails(world: World, failing_kinds: set[str]) -> None:
    before = state(world)
    failing_kinds.add("member.proposed")
    env = world.client.sign(
        world["alice"],
        "member.propose",
        {"change": "add", "card": new_member("nina", Role.CUSTODIAN).card().to_json()},
    )
    response = post(world, "/v1/members/proposals", {"envelope": env})
    assert response.json()["code"] == "audit_write_failed"
    assert state(world) == before


def test_removal_not_applied_when_its_audit_entry_fails(world: World, failing_kinds: set[str]) -> None:
    prop = world.client.members.propose_remove(world["alice"], world["cora"].member_id)
    body = approval(world, prop)
    before = state(world)
    failing_kinds.add("member.removed")
    response = post(world, f"/v1/proposals/{prop['id']}/approve", body)
    assert response.json()["code"] == "audit_write_failed"
    after = state(world)
    assert after == before
    assert ("cora", "active") in {(m[1], m[3]) for m in after["members"]}


def test_session_not_opened_when_its_audit_entry_fails(world: World, failing_kinds: set[str]) -> None:
    before = state(world)
    failing_kinds.add("session.opened")
    env = world.client.sign(world["olga"], "session.open", {})
    response = post(world, "/v1/sessions", {"envelope": env})
    assert response.status_code == 500
    assert "token" not in response.json()
    assert state(world) == before


def test_totp_unlock_not_applied_when_its_audit_entry_fails(world: World, failing_kinds: set[str]) -> None:
    with world.svc.db.write() as s:
        row = s.get(Member, world["bob"].member_id)
        row.totp_failures = 10
        row.totp_locked_until = world.clock() + 900
        s.add(row)
    failing_kinds.add("member.totp_unlocked")
    with pytest.raises(AuditWriteError):
        world.svc.members.unlock_totp(world["bob"].member_id)
    with world.svc.db.read() as s:
        assert s.get(Member, world["bob"].member_id).totp_locked_until is not None


def test_genesis_not_created_when_its_audit_entry_fails(
    svc: Any, http: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tandem.client import Client

    real = audit_log.append

    def append(session: Any, key: Any, **kw: Any) -> dict[str, Any]:
        if kw["kind"] == "deployment.genesis":
            raise AuditWriteError("the audit entry could not be written; nothing was changed")
        return real(session, key, **kw)

    monkeypatch.setattr(audit_log, "append", append)
    people = [new_member("alice", Role.MANAGER), new_member("bob", Role.CUSTODIAN)]
    client = Client(http=http, clock=clock)
    doc = draft_genesis(
        deployment="dep_0123456789abcdef",
        entity="E",
        created_at=clock(),
        service=client.deployment()["service"],
        cards=[m.card() for m in people],
    )
    response = http.post(
        "/v1/genesis",
        content=canonical({"genesis": doc, "signatures": dict(sign_genesis(m, doc) for m in people)}),
        headers={"X-Tandem-Claim-Token": claim_token_of(svc)},
    )
    assert response.status_code == 500
    assert "deployment" not in http.get("/v1/deployment").json()
    with svc.db.read() as s:
        assert s.exec(select(Member)).all() == []
