"""THREATS 17: malformed, oversized, deeply nested or duplicate-key JSON; floats and huge
integers; non-NFC Unicode; injection strings in every text field -> 4xx, never 5xx; text
is stored verbatim or refused, never interpreted or silently normalised."""

from __future__ import annotations

import copy
import json
import unicodedata
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select
from tests.conftest import FakeClock, World, claim_token_of, new_member

from tandem.api.deps import api_routes
from tandem.client.members import draft_genesis, proposal_digest, sign_genesis
from tandem.core.actions import sign_action
from tandem.core.canonical import canonical, digest_hex
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.services import Tandem
from tandem.store.models import AuditRow, Deployment, Member, Proposal

INJECTIONS = [
    "'; DROP TABLE member; --",
    "Robert'); DROP TABLE auditrow;--",
    "<script>alert(1)</script>",
    "{{7*7}}",
    "${jndi:ldap://x/a}",
    "../../etc/passwd",
    "a\x00b",
    "%s%s%n",
    "\u202e\u0000\ufeff",
]
INJECTION_IDS = ["sql", "sql2", "xss", "template", "jndi", "path", "nul", "format", "bidi-nul-bom"]


def post_raw(http: TestClient, path: str, data: bytes) -> httpx.Response:
    return http.post(path, content=data, headers={"Content-Type": "application/json"})


def post(http: TestClient, path: str, body: Any) -> httpx.Response:
    return post_raw(http, path, canonical(body))


def counts(svc: Tandem) -> dict[str, int]:
    with svc.db.read() as s:
        return {
            "member": s.exec(select(func.count()).select_from(Member)).one(),
            "proposal": s.exec(select(func.count()).select_from(Proposal)).one(),
            "deployment": s.exec(select(func.count()).select_from(Deployment)).one(),
        }


def assert_4xx(response: httpx.Response, *codes: str) -> None:
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if codes:
        assert response.json()["code"] in codes, response.text[:300]


def intact(svc: Tandem) -> None:
    """The tables still exist and the audit chain still verifies from scratch."""
    with svc.db.read() as s:
        assert s.exec(select(func.count()).select_from(AuditRow)).one() > 0
    fresh = Tandem(svc.db, svc.key, clock=svc.clock)
    fresh.audit.startup_check()
    assert fresh.runner.sealed_reason is None, fresh.runner.sealed_reason


# --- body parsing on every write route -------------------------------------------------------

MALFORMED: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("not-json", b"{not json", ("malformed_json",)),
    ("empty", b"", ("malformed_json",)),
    ("truncated", b'{"envelope":{"action":', ("malformed_json",)),
    ("trailing", b'{"envelope":{}} x', ("malformed_json",)),
    ("not-utf8", b'{"envelope":"\xff"}', ("malformed_json",)),
    ("lone-surrogate", b'{"envelope":"\\ud800"}', ("malformed_json",)),
    ("duplicate-key", b'{"envelope":{},"envelope":{}}', ("duplicate_key",)),
    ("nested-duplicate", b'{"envelope":{"action":1,"action":2}}', ("duplicate_key",)),
    ("float", b'{"envelope":{"amount":1.5}}', ("float_not_allowed",)),
    ("exponent", b'{"envelope":{"amount":1e400}}', ("float_not_allowed",)),
    ("nan", b'{"envelope":NaN}', ("float_not_allowed",)),
    ("huge-int", b'{"envelope":{"amount":' + b"9" * 40 + b"}}", ("invalid_input",)),
    ("int-2^53", b'{"envelope":{"amount":9007199254740992}}', ("invalid_input",)),
    ("deep-100", b'{"envelope":' + b"[" * 100 + b"]" * 100 + b"}", ("nesting_too_deep",)),
    ("deep-100k", b"[" * 100_000 + b"]" * 100_000, ("nesting_too_deep",)),
    ("array", b"[]", ()),
    ("string", b'"envelope"', ()),
    ("null", b"null", ()),
    ("number", b"1", ()),
]


def _post_routes(app: Any) -> list[str]:
    paths = []
    for route in api_routes(app):
        if route.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            paths.append(route.path.replace("{", "").replace("}", "_x"))
    assert "/v1/members/proposals" in paths
    return paths


@pytest.mark.parametrize(("name", "data", "codes"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_body_refused_on_every_write_route(
    world: World, name: str, data: bytes, codes: tuple[str, ...]
) -> None:
    http = world.client.http
    before = counts(world.svc)
    for path in _post_routes(http.app):
        response = post_raw(http, path, data)
        assert_4xx(response)
        if path in (
            "/v1/genesis",
            "/v1/sessions",
            "/v1/members/proposals",
            "/v1/totp/enrol",
            "/v1/proposals/proposal_id_x/approve",
            "/v1/proposals/proposal_id_x/reject",
        ):
            assert_4xx(response, *codes) if codes else assert_4xx(response, "invalid_input")
    assert counts(world.svc) == before
    intact(world.svc)


def test_oversized_body_refused_on_every_write_route(world: World) -> None:
    http = world.client.http
    data = b'{"envelope":{"pad":"' + b"a" * (1 << 20) + b'"}}'
    for path in _post_routes(http.app):
        response = post_raw(http, path, data)
        assert response.status_code == 413, (path, response.status_code, response.text[:200])
        assert response.json()["code"] == "payload_too_large"


def test_refusals_of_bad_bodies_are_audited(world: World) -> None:
    http = world.client.http
    post_raw(http, "/v1/members/proposals", b'{"envelope":{},"envelope":{}}')
    post_raw(http, "/v1/sessions", b'{"envelope":1.5}')
    world.client._sessions.clear()
    lines, _ = world.client.audit.export(world["olga"])
    codes = [json.loads(line)["code"] for line in lines if json.loads(line)["outcome"] == "refused"]
    assert "duplicate_key" in codes
    assert "float_not_allowed" in codes


def test_unknown_top_level_field_refused(world: World) -> None:
    env = world.client.sign(world["olga"], "session.open", {})
    response = post(world.client.http, "/v1/sessions", {"envelope": env, "admin": True})
    assert_4xx(response, "unknown_field")


def test_unknown_field_in_a_signed_session_open_body_refused(world: World) -> None:
    """ "Unknown or extra fields -> 422" holds inside signed bodies too."""
    env = world.client.sign(world["olga"], "session.open", {"role": "manager"})
    response = post(world.client.http, "/v1/sessions", {"envelope": env})
    assert_4xx(response, "unknown_field")


# --- genesis: every text field ---------------------------------------------------------------


def _genesis(
    http: TestClient,
    clock: FakeClock,
    *,
    people: list[MemberSecrets] | None = None,
    edit: Callable[[dict[str, Any]], None] | None = None,
    resign: bool = True,
) -> tuple[httpx.Response, dict[str, Any]]:
    people = people or [new_member("alice", Role.MANAGER), new_member("bob", Role.CUSTODIAN)]
    doc = draft_genesis(
        deployment="dep_0123456789abcdef",
        entity="Example Fund SICAV",
        created_at=clock(),
        service=http.get("/v1/deployment").json()["service"],
        cards=[m.card() for m in people],
    )
    if edit is not None and resign:
        edit(doc)
    sigs = dict(sign_genesis(m, doc) for m in people)
    if edit is not None and not resign:
        edit(doc)
    response = http.post(
        "/v1/genesis",
        content=canonical({"genesis": doc, "signatures": sigs}),
        headers={
            "Content-Type": "application/json",
            "X-Tandem-Claim-Token": claim_token_of(http.app.state.service),
        },
    )
    return response, doc


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_genesis_entity_stored_verbatim_or_refused(
    svc: Tandem, http: TestClient, clock: FakeClock, inj: str
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["entity"] = inj

    response, doc = _genesis(http, clock, edit=edit)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        info = http.get("/v1/deployment").json()
        assert info["entity"] == inj
        assert info["genesis_hash"] == digest_hex("genesis", doc)
        assert counts(svc)["member"] == 2
        intact(svc)
    else:
        assert counts(svc) == {"member": 0, "proposal": 0, "deployment": 0}


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_genesis_deployment_id_stored_verbatim_or_refused(
    svc: Tandem, http: TestClient, clock: FakeClock, inj: str
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["deployment"] = "dep_" + inj

    response, _ = _genesis(http, clock, edit=edit)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        assert http.get("/v1/deployment").json()["deployment"] == "dep_" + inj
        intact(svc)


def test_genesis_overlong_deployment_id_is_not_a_server_error(
    svc: Tandem, http: TestClient, clock: FakeClock
) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["deployment"] = "dep_" + "x" * 200

    response, _ = _genesis(http, clock, edit=edit)
    assert response.status_code < 500, response.text
    if response.status_code == 201:
        assert http.get("/v1/deployment").json()["deployment"] == "dep_" + "x" * 200


GENESIS_FIELDS: list[tuple[str, Callable[[dict[str, Any], str], None]]] = [
    ("format", lambda d, v: d.__setitem__("format", v)),
    ("service.sign_public", lambda d, v: d["service"].__setitem__("sign_public", v)),
    ("service.seal_public", lambda d, v: d["service"].__setitem__("seal_public", v)),
    ("member.format", lambda d, v: d["members"][0].__setitem__("format", v)),
    ("member.name", lambda d, v: d["members"][0].__setitem__("name", v)),
    ("member.role", lambda d, v: d["members"][0].__setitem__("role", v)),
    ("member.sign_public", lambda d, v: d["members"][0].__setitem__("sign_public", v)),
    ("member.seal_public", lambda d, v: d["members"][0].__setitem__("seal_public", v)),
    ("member.signature", lambda d, v: d["members"][0].__setitem__("signature", v)),
    ("extra-key", lambda d, v: d.__setitem__(v, "x")),
]


@pytest.mark.parametrize(("field", "setter"), GENESIS_FIELDS, ids=[f[0] for f in GENESIS_FIELDS])
def test_genesis_injection_in_structured_fields_refused(
    svc: Tandem, http: TestClient, clock: FakeClock, field: str, setter: Any
) -> None:
    for inj in INJECTIONS:
        response, _ = _genesis(http, clock, edit=lambda d, inj=inj: setter(d, inj))
        assert_4xx(response)
        assert counts(svc) == {"member": 0, "proposal": 0, "deployment": 0}


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_genesis_signature_map_injection_refused(
    svc: Tandem, http: TestClient, clock: FakeClock, inj: str
) -> None:
    people = [new_member("alice", Role.MANAGER), new_member("bob", Role.CUSTODIAN)]
    doc = draft_genesis(
        deployment="dep_0123456789abcdef",
        entity="E",
        created_at=clock(),
        service=http.get("/v1/deployment").json()["service"],
        cards=[m.card() for m in people],
    )
    sigs = dict(sign_genesis(m, doc) for m in people)
    for bad in ({**sigs, inj: "AAAA"}, dict.fromkeys(sigs, inj), {inj: next(iter(sigs.values()))}):
        assert_4xx(post(http, "/v1/genesis", {"genesis": doc, "signatures": bad}))
    assert counts(svc)["deployment"] == 0


# --- membership bodies: every text field -------------------------------------------------------


def _pending(world: World) -> dict[str, Any]:
    return world.client.members.propose_add(world["alice"], new_member("nina", Role.AUDITOR).card())


def _card_with(field: str, value: str) -> dict[str, Any]:
    m = new_member("nina", Role.CUSTODIAN)
    doc = m.card().to_json()
    doc[field] = value
    return doc


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_membership_signed_body_fields(world: World, inj: str) -> None:
    """Re-signed by a real member, so the body reaches the use case itself."""
    http = world.client.http
    c = world.client
    before = counts(world.svc)
    pending = _pending(world)
    before = counts(world.svc)
    digest = proposal_digest(pending)
    bodies = [
        ("member.propose", "/v1/members/proposals", {"change": inj}),
        ("member.propose", "/v1/members/proposals", {"change": "remove", "member": inj}),
        (
            "member.propose",
            "/v1/members/proposals",
            {"change": "rekey", "member": inj, "card": _card_with("name", "x")},
        ),
        ("member.propose", "/v1/members/proposals", {"change": "add", "card": _card_with("name", inj)}),
        ("member.propose", "/v1/members/proposals", {"change": "add", "card": _card_with("role", inj)}),
        ("member.propose", "/v1/members/proposals", {"change": "add", "card": _card_with("format", inj)}),
        (
            "member.propose",
            "/v1/members/proposals",
            {"change": "add", "card": _card_with("sign_public", inj)},
        ),
        ("member.propose", "/v1/members/proposals", {"change": "add", "card": _card_with("signature", inj)}),
        ("member.propose", "/v1/members/proposals", {"change": "add", "card": inj}),
        ("member.propose", "/v1/members/proposals", {"change": "add", inj: "x"}),
        (
            "proposal.approve",
            f"/v1/proposals/{pending['id']}/approve",
            {"proposal": pending["id"], "digest": inj},
        ),
        (
            "proposal.approve",
            f"/v1/proposals/{pending['id']}/approve",
            {"proposal": pending["id"], "digest": digest, inj: 1},
        ),
        ("member.totp_enrol", "/v1/totp/enrol", {"sealed_secret": inj}),
    ]
    for type_, path, body in bodies:
        env = c.sign(world["bob"] if type_ == "proposal.approve" else world["alice"], type_, body)
        extra = (
            {"totp": world.code("bob")}
            if type_ == "proposal.approve"
            else (
                {"confirm_code": "123456", "totp": world.code("alice")}
                if type_ == "member.totp_enrol"
                else {}
            )
        )
        response = post(http, path, {"envelope": env, **extra})
        assert_4xx(response)
    # The path id itself, matching the signed body.
    quoted = urllib.parse.quote(inj, safe="")
    env = c.sign(world["bob"], "proposal.approve", {"proposal": inj, "digest": digest})
    assert_4xx(post(http, f"/v1/proposals/{quoted}/approve", {"envelope": env, "totp": world.code("bob")}))
    assert counts(world.svc) == before
    intact(world.svc)


ENVELOPE_FIELDS: list[tuple[str, Callable[[dict[str, Any], str], None], tuple[str, ...]]] = [
    ("type", lambda e, v: e["action"].__setitem__("type", v), ("invalid_input",)),
    (
        "deployment",
        lambda e, v: e["action"].__setitem__("deployment", v),
        ("bad_signature", "wrong_deployment", "invalid_input"),
    ),
    ("actor", lambda e, v: e["action"].__setitem__("actor", v), ("invalid_input", "unknown_actor")),
    ("nonce", lambda e, v: e["action"].__setitem__("nonce", v), ("invalid_input",)),
    ("signature", lambda e, v: e.__setitem__("signature", v), ("invalid_input",)),
    ("issued_at", lambda e, v: e["action"].__setitem__("issued_at", v), ("invalid_input",)),
    ("body", lambda e, v: e["action"].__setitem__("body", v), ("invalid_input",)),
    ("action", lambda e, v: e.__setitem__("action", v), ("invalid_input",)),
    ("extra", lambda e, v: e["action"].__setitem__(v, v), ("unknown_field", "invalid_input")),
]


@pytest.mark.parametrize(("field", "setter", "codes"), ENVELOPE_FIELDS, ids=[f[0] for f in ENVELOPE_FIELDS])
def test_envelope_fields_injected_after_signing(
    world: World, field: str, setter: Any, codes: tuple[str, ...]
) -> None:
    http = world.client.http
    pending = _pending(world)
    before = counts(world.svc)
    routes = [
        ("/v1/sessions", "session.open", {}, "olga", {}),
        (
            "/v1/members/proposals",
            "member.propose",
            {"change": "remove", "member": world["mark"].member_id},
            "alice",
            {},
        ),
        (
            f"/v1/proposals/{pending['id']}/approve",
            "proposal.approve",
            {"proposal": pending["id"], "digest": proposal_digest(pending)},
            "bob",
            {"totp": "123456"},
        ),
    ]
    for path, type_, body, who, extra in routes:
        for inj in INJECTIONS:
            env = world.client.sign(world[who], type_, body)
            setter(env, inj)
            response = post(http, path, {"envelope": env, **extra})
            assert_4xx(response, *codes)
    assert counts(world.svc) == before
    intact(world.svc)


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_totp_and_confirm_code_fields(world: World, inj: str) -> None:
    http = world.client.http
    pending = _pending(world)
    before = counts(world.svc)
    env = world.client.sign(
        world["bob"],
        "proposal.approve",
        {"proposal": pending["id"], "digest": proposal_digest(pending)},
    )
    for value in (inj, (inj + "000000")[:6]):
        assert_4xx(post(http, f"/v1/proposals/{pending['id']}/approve", {"envelope": env, "totp": value}))
        enrol = world.client.sign(world["cora"], "member.totp_enrol", {"sealed_secret": "AAAA"})
        assert_4xx(post(http, "/v1/totp/enrol", {"envelope": enrol, "confirm_code": value}))
    assert counts(world.svc) == before


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_reject_reason_stored_verbatim(world: World, inj: str) -> None:
    pending = _pending(world)
    response = world.client.http.post(
        f"/v1/proposals/{pending['id']}/reject",
        content=canonical(
            {
                "envelope": world.client.sign(
                    world["bob"],
                    "proposal.reject",
                    {
                        "proposal": pending["id"],
                        "digest": proposal_digest(pending),
                        "reason": inj,
                    },
                )
            }
        ),
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        world.client._sessions.clear()
        lines, _ = world.client.audit.export(world["olga"])
        entry = next(json.loads(x) for x in lines if json.loads(x)["kind"] == "proposal.rejected")
        assert entry["data"]["reason"] == inj
        assert entry["envelope"]["action"]["body"]["reason"] == inj
    intact(world.svc)


@pytest.mark.parametrize("inj", INJECTIONS, ids=INJECTION_IDS)
def test_read_paths_and_queries(world: World, inj: str) -> None:
    http = world.client.http
    token = world.client.session(world["olga"])
    headers = {"Authorization": f"Bearer {token}"}
    quoted = urllib.parse.quote(inj, safe="")
    for path, params in [
        (f"/v1/proposals/{quoted}", None),
        ("/v1/proposals", {"status": inj}),
        ("/v1/audit/checkpoint", {"tree_size": inj}),
        (f"/v1/audit/inclusion/{quoted}", None),
        ("/v1/audit/consistency", {"old": inj, "new": inj}),
    ]:
        response = http.get(path, params=params, headers=headers)
        assert response.status_code < 500, (path, response.status_code, response.text[:200])
    assert http.get("/v1/members", headers={"Authorization": f"Bearer {quoted}"}).status_code == 401


# --- Unicode normalisation -----------------------------------------------------------------------

NFD = "Cafe\u0301 Fund \u212b"  # decomposed e-acute and the Angstrom sign (NFC maps it to U+00C5)


def test_non_nfc_entity_stored_verbatim(svc: Tandem, http: TestClient, clock: FakeClock) -> None:
    assert unicodedata.normalize("NFC", NFD) != NFD

    def edit(doc: dict[str, Any]) -> None:
        doc["entity"] = NFD

    response, doc = _genesis(http, clock, edit=edit)
    assert response.status_code == 201, response.text
    info = http.get("/v1/deployment").json()
    assert info["entity"] == NFD
    assert info["genesis_hash"] == digest_hex("genesis", doc)


def test_non_nfc_reason_stored_verbatim(world: World) -> None:
    pending = _pending(world)
    world.client.members.reject(world["bob"], pending["id"], reason=NFD)
    world.client._sessions.clear()
    lines, _ = world.client.audit.export(world["olga"])
    entry = next(json.loads(x) for x in lines if json.loads(x)["kind"] == "proposal.rejected")
    assert entry["data"]["reason"] == NFD


@pytest.mark.parametrize("name", ["Zoe\u0301", "Zo\u00e9", "\uff41lice", "a\u200dlice", "ali\u0441e"])
def test_non_ascii_member_names_refused_not_normalised(world: World, name: str) -> None:
    m = new_member("placeholder", Role.AUDITOR)
    m.name = name
    env = world.client.sign(world["alice"], "member.propose", {"change": "add", "card": m.card().to_json()})
    before = counts(world.svc)
    assert_4xx(post(world.client.http, "/v1/members/proposals", {"envelope": env}), "invalid_input")
    assert counts(world.svc) == before


def test_non_nfc_body_signature_is_over_the_exact_bytes(world: World) -> None:
    """A server that normalised text would break the member's signature: the signed
    reason must verify exactly as sent, both ways."""
    pending = _pending(world)
    env = sign_action(
        world["bob"],
        type="proposal.reject",
        deployment=world.deployment,
        body={"proposal": pending["id"], "digest": proposal_digest(pending), "reason": NFD},
        issued_at=world.clock(),
    ).to_json()
    normalised = copy.deepcopy(env)
    normalised["action"]["body"]["reason"] = unicodedata.normalize("NFC", NFD)
    response = post(world.client.http, f"/v1/proposals/{pending['id']}/reject", {"envelope": normalised})
    assert_4xx(response, "bad_signature")
    assert (
        post(world.client.http, f"/v1/proposals/{pending['id']}/reject", {"envelope": env}).status_code == 200
    )


# --- sizes ------------------------------------------------------------------------------------------


def test_huge_reason_is_not_a_server_error(world: World) -> None:
    pending = _pending(world)
    reason = "r" * (600 * 1024)
    env = world.client.sign(
        world["bob"],
        "proposal.reject",
        {"proposal": pending["id"], "digest": proposal_digest(pending), "reason": reason},
    )
    response = post(world.client.http, f"/v1/proposals/{pending['id']}/reject", {"envelope": env})
    assert response.status_code < 500, response.text[:300]
    intact(world.svc)


def test_many_small_fields_within_limit_are_refused_cleanly(world: World) -> None:
    body = {f"k{i}": i for i in range(20_000)}
    env = world.client.sign(world["olga"], "session.open", {})
    env["action"]["body"] = body
    response = post(world.client.http, "/v1/sessions", {"envelope": env})
    assert_4xx(response)


@pytest.mark.parametrize("value", [2**31, 2**53, 2**63, 10**30])
@pytest.mark.parametrize(
    "path",
    [
        "/v1/audit/checkpoint?tree_size={v}",
        "/v1/audit/inclusion/{v}",
        "/v1/audit/inclusion/0?tree_size={v}",
        "/v1/audit/consistency?old=1&new={v}",
        "/v1/audit/consistency?old={v}&new={v}",
    ],
)
def test_huge_integers_in_query_and_path_are_refused_cleanly(world: World, path: str, value: int) -> None:
    """Integers beyond the database's column range must be refused before any lookup."""
    token = world.client.session(world["olga"])
    response = world.client.http.get(path.format(v=value), headers={"Authorization": f"Bearer {token}"})
    assert_4xx(response)
