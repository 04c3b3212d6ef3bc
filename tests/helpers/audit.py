"""Shared test helpers: post a raw body, snapshot membership state, read the audit log
as the auditor does, and assert a refusal (status, stable code, nothing changed)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlmodel import select
from tests.conftest import World

from tandem.core.canonical import canonical
from tandem.store.models import Approval, Member, Proposal, UsedNonce


def post(world: World, path: str, body: Any) -> httpx.Response:
    """POST ``body`` as canonical JSON, bypassing the client's own checks."""
    return world.client.http.post(path, content=canonical(body), headers={"Content-Type": "application/json"})


def membership_state(world: World) -> dict[str, Any]:
    """Members, proposals, approvals and used nonces: what a refused request must not touch."""
    with world.svc.db.read() as s:
        return {
            "members": sorted((m.id, m.name, m.role, m.status) for m in s.exec(select(Member)).all()),
            "proposals": sorted((p.id, p.status) for p in s.exec(select(Proposal)).all()),
            "approvals": sorted((a.subject, a.member) for a in s.exec(select(Approval)).all()),
            "nonces": sorted(n.nonce for n in s.exec(select(UsedNonce)).all()),
        }


def audit_entries(world: World) -> list[dict[str, Any]]:
    """The whole log, exported over the API by the auditor."""
    lines, _ = world.client.audit.export(world["olga"])
    return [json.loads(line) for line in lines]


def refusals(world: World, code: str) -> list[dict[str, Any]]:
    return [e for e in audit_entries(world) if e["outcome"] == "refused" and e["code"] == code]


def assert_refused(
    world: World, response: httpx.Response, status: int, code: str, before: dict[str, Any]
) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert membership_state(world) == before
