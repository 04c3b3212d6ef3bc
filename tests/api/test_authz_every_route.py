"""The authorisation matrix over every write route: role x route.

For each write route (enumerated from the app, so a route added without an entry here
fails :func:`test_the_table_names_every_write_route`) and each role, a correctly signed,
fresh action of the route's own type is sent. A role outside the route's allowed set
must be refused with 403 ``role_not_allowed`` before anything else is looked at: no
state change, the nonce not consumed, and one refusal entry naming the actor. An
allowed role must get past the role gate (the ids are made up, so it then meets a 4xx
of another kind, never a 5xx).

Rules that depend on the object (who may approve a given ceremony or withdrawal, the
proposer's own side) are tried with real objects in ``tests/adversarial/test_t05_roles.py``,
``tests/api/test_ceremony.py`` and ``tests/adversarial/test_t03_t07_t12_withdrawal_refusals.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from tests.api.test_authz_matrix import routes, state
from tests.conftest import World
from tests.helpers.audit import refusals

from tandem.core.canonical import canonical
from tandem.core.roles import Role

M, C, A = Role.MANAGER, Role.CUSTODIAN, Role.AUDITOR
SIDES = frozenset({M, C})
EVERYONE = frozenset({M, C, A})

# path -> (action type, body key that must equal the path id, roles allowed past the gate)
TABLE: dict[str, tuple[str, str | None, frozenset[Role]]] = {
    "/v1/sessions": ("session.open", None, EVERYONE),
    "/v1/totp/enrol": ("member.totp_enrol", None, EVERYONE),
    "/v1/members/proposals": ("member.propose", None, SIDES),
    "/v1/proposals/{proposal_id}/approve": ("proposal.approve", "proposal", SIDES),
    "/v1/proposals/{proposal_id}/reject": ("proposal.reject", "proposal", SIDES),
    "/v1/proposals/{proposal_id}/veto": ("proposal.veto", "proposal", SIDES),
    "/v1/proposals/{proposal_id}/apply": ("proposal.apply", "proposal", SIDES),
    "/v1/ceremonies": ("ceremony.propose", None, frozenset({M})),
    "/v1/ceremonies/{ceremony_id}/approve": ("ceremony.approve", "ceremony", SIDES),
    "/v1/ceremonies/{ceremony_id}/reject": ("ceremony.reject", "ceremony", frozenset({C})),
    "/v1/ceremonies/{ceremony_id}/reveal": ("ceremony.reveal", "ceremony", SIDES),
    "/v1/ceremonies/{ceremony_id}/countersign": ("ceremony.countersign", "ceremony", SIDES),
    "/v1/ceremonies/{ceremony_id}/abort": ("ceremony.abort", "ceremony", frozenset({M})),
    "/v1/keysets/import": ("keyset.import", None, frozenset({M})),
    "/v1/keysets/import/{import_id}/approve": ("keyset.import_approve", "import", frozenset({C})),
    "/v1/keysets/{keyset_id}/operations": ("keyset.operation", "keyset", SIDES),
    "/v1/keysets/{keyset_id}/export": ("keyset.export", "keyset", SIDES),
    "/v1/withdrawals/operations": ("withdrawal.prepare", None, frozenset({M})),
    "/v1/withdrawals": ("withdrawal.create", None, frozenset({M})),
    "/v1/withdrawals/{withdrawal_id}/approve": ("withdrawal.approve", "withdrawal", SIDES),
    "/v1/withdrawals/approvals": ("withdrawal.batch_approve", None, SIDES),
    "/v1/withdrawals/{withdrawal_id}/reject": ("withdrawal.reject", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/cancel": ("withdrawal.cancel", "withdrawal", frozenset({M})),
    "/v1/withdrawals/{withdrawal_id}/veto": ("withdrawal.veto", "withdrawal", frozenset({C})),
    "/v1/withdrawals/{withdrawal_id}/operation": ("withdrawal.renew", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/shares": ("withdrawal.contribute", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/release": ("withdrawal.release", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/import": ("withdrawal.import", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/broadcast": ("withdrawal.broadcast", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/confirm": ("withdrawal.confirm", "withdrawal", SIDES),
    "/v1/withdrawals/{withdrawal_id}/abandon": ("withdrawal.abandon", "withdrawal", SIDES),
    "/v1/policy/proposals": ("policy.propose", None, frozenset({M})),
    "/v1/policy/proposals/{proposal_id}/veto": ("proposal.veto", "proposal", frozenset({C})),
    "/v1/addressbook/proposals": ("addressbook.propose", None, frozenset({M})),
    "/v1/proofs/challenges": ("proof.challenge", None, frozenset({C, A})),
    "/v1/proofs/{challenge_id}/contributions": ("proof.contribute", "challenge", SIDES),
    "/v1/proofs/{challenge_id}/operations": ("proof.operations", "challenge", EVERYONE),
    "/v1/books/clients": ("client.propose", None, frozenset({M})),
    "/v1/books/clients/proposals/{proposal_id}/approve": ("client.approve", "proposal", frozenset({C})),
    "/v1/books/allocations": ("allocation.propose", None, frozenset({M})),
    "/v1/books/allocations/{proposal_id}/approve": ("allocation.approve", "proposal", frozenset({C})),
    "/v1/books/scan": ("register.scan", None, SIDES),
    "/v1/books/withdrawals/{withdrawal_id}/broadcast": ("withdrawal.broadcast", "withdrawal", SIDES),
    "/v1/books/withdrawals/{withdrawal_id}/track": ("withdrawal.confirm", "withdrawal", SIDES),
    "/v1/books/reconciliations": ("reconciliation.run", None, SIDES),
    "/v1/books/prices": ("prices.import", None, SIDES),
    "/v1/books/statements": ("statement.issue", None, SIDES),
}
SELF_SIGNED = {"/v1/genesis"}
MEMBER = {M: "alice", C: "bob", A: "olga"}
PATH_ID = "x_matrix0001"


def extras(world: World, path: str) -> dict[str, Any]:
    """Every required field of the route's published request body besides the envelope,
    filled with a well-formed placeholder, so the body parses and the request reaches
    the role gate."""
    spec = world.client.http.app.openapi()
    op = spec["paths"][path]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    placeholders: dict[str, Any] = {
        "totp": "000000",
        "confirm_code": "000000",
        "sealed_share": "AAAA",
        "export": {},
        "items": [{"envelope": {}}],
    }
    out = {}
    for name in schema.get("required", []):
        if name != "envelope":
            assert name in placeholders, f"{path}: no placeholder for required field {name!r}"
            out[name] = placeholders[name]
    return out


def test_the_table_names_every_write_route(world: World) -> None:
    writes = {path for _method, path in routes(world, reads=False)} - SELF_SIGNED
    assert set(TABLE) == writes


def test_the_table_reads_as_the_design() -> None:
    """Read off the table: an auditor changes nothing but its own session, second factor
    and proof challenges; every approval route admits a custodian."""
    auditor_writes = {p for p, (_t, _k, roles) in TABLE.items() if A in roles}
    assert auditor_writes == {
        "/v1/sessions",
        "/v1/totp/enrol",
        "/v1/proofs/challenges",
        "/v1/proofs/{challenge_id}/operations",
    }
    for path, (_type, _key, roles) in TABLE.items():
        if path.endswith(("/approve", "/veto")):
            assert C in roles, path


CASES = [(path, role) for path in TABLE for role in (M, C, A)]


@pytest.mark.parametrize(("path", "role"), CASES, ids=[f"{r.value}:{p}" for p, r in CASES])
def test_role_by_route(world: World, path: str, role: Role) -> None:
    action_type, key, allowed = TABLE[path]
    who = MEMBER[role]
    body: dict[str, Any] = {key: PATH_ID} if key else {}
    envelope = world.client.sign(world[who], action_type, body)
    url = path.replace(path[path.find("{") : path.find("}") + 1], PATH_ID) if "{" in path else path
    before = state(world)
    response = world.client.http.post(
        url,
        content=canonical({"envelope": envelope, **extras(world, path)}),
        # release wants one; every other route ignores it
        headers={"Content-Type": "application/json", "Idempotency-Key": "matrix-" + role.value},
    )
    assert response.status_code < 500, response.text
    code = response.json().get("code") if response.status_code >= 400 else None
    if role in allowed:
        assert code != "role_not_allowed", response.text
        return
    assert (response.status_code, code) == (403, "role_not_allowed"), response.text
    assert state(world) == before  # nothing changed, the nonce was not consumed
    hits = refusals(world, "role_not_allowed")
    assert len(hits) == 1
    assert hits[0]["actor"] == world[who].member_id
    assert hits[0]["kind"].endswith(".refused")


@pytest.mark.parametrize("role", [M, C, A], ids=lambda r: r.value)
def test_every_role_reads_every_read_route(world: World, role: Role) -> None:
    """Auditors read everything, and so do both sides: no read route answers 401 or 403
    to a member with a session (made-up ids meet 404, missing parameters 422)."""
    token = world.client.session(world[MEMBER[role]])
    problems = []
    for _method, path in routes(world, reads=True):
        url = re.sub(r"\{[^}]+\}", "0" if path.endswith("{index}") else PATH_ID, path)
        response = world.client.http.get(url, headers={"Authorization": f"Bearer {token}"})
        if response.status_code in (401, 403) or response.status_code >= 500:
            problems.append(f"GET {path} -> {response.status_code} {response.text[:120]}")
    assert problems == []
