"""Self-verifying files served without a session (ADR 0012).

With no Authorization header a caller gets the signed checkpoint, inclusion and
consistency proofs (hashes only), a completed proof bundle and a keygen transcript;
each verifies offline against the pinned genesis, and an edited copy does not. What
names clients or amounts (the export, the entries themselves) still needs a session; a
reshare transcript, which carries sealed shares, is refused; the routes answer single
objects only, hold each address to a rate, and audit their refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from tests.conftest import World
from tests.helpers.audit import audit_entries, refusals

from tandem.api import routes_public
from tandem.client import public_files as pf
from tandem.client.pin import PinnedDeployment
from tandem.core.canonical import canonical
from tandem.errors import AuditVerificationError, BadSignatureError, VerificationError

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_PATHS = {
    "/v1/public/checkpoint",
    "/v1/public/inclusion/{index}",
    "/v1/public/consistency",
    "/v1/public/proofs/{challenge_id}/bundle",
    "/v1/public/ceremonies/{ceremony_id}/transcript",
}


def definition(name: str) -> str:
    return (ROOT / "ceremonies" / f"{name}.toml").read_text(encoding="utf-8")


@pytest.fixture
def filled(world: World) -> dict[str, Any]:
    """A deployment with a keygen ceremony done and a proof challenge answered."""
    transcript = world.client.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["bob"]],
        definition_text=definition("bitcoin-testnet-cold"),
        code=world.code,
    )
    bundle = world.client.proofs.run(
        issuer=world["olga"],
        manager=world["alice"],
        custodian=world["bob"],
        scope={"kind": "all"},
        code=lambda: world.code("bob"),
    )
    return {"transcript": transcript, "bundle": bundle}


def pin_of(world: World) -> PinnedDeployment:
    assert world.client.pin is not None
    return world.client.pin


def get(world: World, path: str, **params: Any) -> Any:
    # The test client carries no Authorization header unless one is passed.
    response = world.client.http.get(path, params=params or None)
    assert response.status_code == 200, (path, response.text)
    assert "authorization" not in {k.lower() for k in response.request.headers}
    return response


def test_the_public_routes_are_exactly_these(world: World) -> None:
    # An included router's routes are not in app.routes (FastAPI resolves them lazily);
    # the OpenAPI document lists what is served.
    paths = world.client.http.get("/openapi.json").json()["paths"]
    served = {p for p in paths if p.startswith("/v1/public")}
    assert served == PUBLIC_PATHS
    for path in PUBLIC_PATHS:
        assert set(paths[path]) == {"get"}, path
    assert {r.path for r in routes_public.router.routes if isinstance(r, APIRoute)} == PUBLIC_PATHS


def test_each_file_is_served_without_a_session_and_verifies_offline(
    world: World, filled: dict[str, Any]
) -> None:
    pin = pin_of(world)
    n = get(world, "/v1/public/checkpoint").json()["checkpoint"]["tree_size"]
    challenge = filled["bundle"]["challenge"]
    ceremony = filled["transcript"]["ceremony"]["id"]
    files = {
        "checkpoint": get(world, "/v1/public/checkpoint").content,
        "inclusion": get(world, "/v1/public/inclusion/3", tree_size=n - 1).content,
        "consistency": get(world, "/v1/public/consistency", old=2, new=n).content,
        "proofs": get(world, f"/v1/public/proofs/{challenge['id']}/bundle").content,
        "transcript": get(world, f"/v1/public/ceremonies/{ceremony}/transcript").content,
    }
    for kind, data in files.items():
        lines = pf.verify(kind, data, pin, nonce=challenge["nonce"] if kind == "proofs" else None)
        assert lines, kind

    # The bundle is the very file the session route serves, byte for byte.
    session = {"Authorization": f"Bearer {world.client.session(world['olga'])}"}
    private = world.client.http.get(f"/v1/proofs/{challenge['id']}/bundle", headers=session)
    assert private.content == files["proofs"]
    assert (
        private.headers["X-Tandem-Bundle-Hash"]
        == get(world, f"/v1/public/proofs/{challenge['id']}/bundle").headers["X-Tandem-Bundle-Hash"]
    )

    # The inclusion proof names the entry by its hash only: the entry is not served.
    doc = json.loads(files["inclusion"])
    assert set(doc) == {"index", "tree_size", "leaf_hash", "proof", "checkpoint"}
    entry = audit_entries(world)[3]
    assert doc["leaf_hash"] == entry["hash"]
    assert json.dumps(entry["data"]) not in files["inclusion"].decode()


def _edited(data: bytes, edit: Any) -> bytes:
    doc = json.loads(data)
    edit(doc)
    return canonical(doc)


def test_an_edited_file_fails_the_offline_check(world: World, filled: dict[str, Any]) -> None:
    pin = pin_of(world)
    n = get(world, "/v1/public/checkpoint").json()["checkpoint"]["tree_size"]
    checkpoint = get(world, "/v1/public/checkpoint").content
    inclusion = get(world, "/v1/public/inclusion/1").content
    consistency = get(world, "/v1/public/consistency", old=1, new=n).content
    challenge = filled["bundle"]["challenge"]
    bundle = get(world, f"/v1/public/proofs/{challenge['id']}/bundle").content
    ceremony = filled["transcript"]["ceremony"]["id"]
    transcript = get(world, f"/v1/public/ceremonies/{ceremony}/transcript").content

    def bump_size(d: dict[str, Any]) -> None:
        d["checkpoint"]["tree_size"] += 1

    with pytest.raises(BadSignatureError):
        pf.verify("checkpoint", _edited(checkpoint, bump_size), pin)

    def other_leaf(d: dict[str, Any]) -> None:
        d["leaf_hash"] = "00" * 32

    with pytest.raises(VerificationError):
        pf.verify("inclusion", _edited(inclusion, other_leaf), pin)

    def drop_step(d: dict[str, Any]) -> None:
        d["proof"] = d["proof"][:-1]

    with pytest.raises(VerificationError):
        pf.verify("consistency", _edited(consistency, drop_step), pin)

    def move_address(d: dict[str, Any]) -> None:
        d["proofs"][0]["signature"] = d["proofs"][1]["signature"]

    with pytest.raises(VerificationError, match="does not verify"):
        pf.verify("proofs", _edited(bundle, move_address), pin, nonce=challenge["nonce"])
    with pytest.raises(VerificationError, match="does not verify"):
        pf.verify("proofs", bundle, pin, nonce="not-the-nonce-i-issued")

    def swap_address(d: dict[str, Any]) -> None:
        d["addresses"][0]["address"] = d["addresses"][1]["address"] if len(d["addresses"]) > 1 else "x"

    with pytest.raises(VerificationError):
        pf.verify("transcript", _edited(transcript, swap_address), pin)

    # A genuine file of another deployment (another service key) does not pass either.
    other = copy.copy(pin)
    other.sign_public = bytes(32)
    with pytest.raises(AuditVerificationError, match="another key"):
        pf.verify("checkpoint", checkpoint, other)


def test_what_names_clients_or_amounts_still_needs_a_session(world: World, filled: dict[str, Any]) -> None:
    for path in ("/v1/audit/export", "/v1/audit/inclusion/0", "/v1/audit/checkpoint", "/v1/books/clients"):
        response = world.client.http.get(path)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_session"), path


def test_a_reshare_transcript_is_not_served_publicly(world: World, filled: dict[str, Any]) -> None:
    keyset = filled["transcript"]["keyset"]["id"]
    reshare = world.client.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["cora"]],
        definition_text=definition("reshare"),
        code=world.code,
        target_keyset=keyset,
    )
    assert routes_public.secret_field(reshare) == "sealed_share"
    ceremony = reshare["ceremony"]["id"]
    response = world.client.http.get(f"/v1/public/ceremonies/{ceremony}/transcript")
    assert (response.status_code, response.json()["code"]) == (403, "not_public")
    assert "sealed_share" not in response.text.replace("(sealed_share)", "")
    refused = refusals(world, "not_public")
    assert refused[-1]["data"]["path"] == f"/v1/public/ceremonies/{ceremony}/transcript"
    assert refused[-1]["actor"] is None
    # Members still read it with a session.
    assert world.client.ceremonies.transcript(world["olga"], ceremony) == reshare
    # And a keygen transcript carries none of those fields.
    assert routes_public.secret_field(filled["transcript"]) is None


def test_refusals_are_audited_and_inputs_bounded(world: World) -> None:
    for path, status, code in (
        ("/v1/public/proofs/pc_0123456789abcdef/bundle", 404, "not_found"),
        ("/v1/public/proofs/../bundle", 404, None),
        ("/v1/public/proofs/pc_NOT-AN-ID/bundle", 422, "invalid_input"),
        ("/v1/public/ceremonies/cer_" + "a" * 200 + "/transcript", 422, "invalid_input"),
        ("/v1/public/inclusion/999999", 422, "invalid_input"),
        ("/v1/public/consistency?old=3&new=2", 422, "invalid_input"),
        ("/v1/public/checkpoint?tree_size=0", 422, "invalid_input"),
    ):
        response = world.client.http.get(path)
        assert response.status_code == status, (path, response.text)
        if code is not None:
            assert response.json()["code"] == code, path
    assert {e["data"]["path"] for e in refusals(world, "not_found")} >= {
        "/v1/public/proofs/pc_0123456789abcdef/bundle"
    }
    assert any(e["data"]["path"] == "/v1/public/inclusion/999999" for e in refusals(world, "invalid_input"))


def test_one_address_is_held_to_a_rate_and_a_flood_writes_one_refusal(world: World) -> None:
    now = [0.0]
    world.client.http.app.state.public_rate_limit = routes_public.PublicRateLimit(
        per_minute=60, burst=3, clock=lambda: now[0]
    )
    before = len(refusals(world, "rate_limited"))
    answers = [world.client.http.get("/v1/public/checkpoint").status_code for _ in range(10)]
    assert answers == [200, 200, 200] + [429] * 7
    body = world.client.http.get("/v1/public/checkpoint").json()
    assert body["code"] == "rate_limited"
    assert body["details"]["retry_in_seconds"] >= 1
    assert len(refusals(world, "rate_limited")) == before + 1
    now[0] += 1.0  # one token back: served again, and the next run of refusals is recorded once
    assert world.client.http.get("/v1/public/checkpoint").status_code == 200
    assert world.client.http.get("/v1/public/checkpoint").status_code == 429
    assert world.client.http.get("/v1/public/checkpoint").status_code == 429
    assert len(refusals(world, "rate_limited")) == before + 2
    # Reads with a session are not counted against the public rate.
    assert world.client.get(world["olga"], "/v1/audit/checkpoint")["checkpoint"]["tree_size"] >= 1
