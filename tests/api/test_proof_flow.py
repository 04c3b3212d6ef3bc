"""Proof of ownership through the API: challenge, both sides' contributions, the signed
bundle, the audit trail, and the refusals (one side only, roles, TOTP, expiry)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bip322
import nacl.signing
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from sqlmodel import select
from tests.conftest import World
from tests.helpers.keysets import make_keyset
from typer.testing import CliRunner

from tandem.core import proofs as core
from tandem.core.chains.base58 import b58decode
from tandem.errors import InputError, RemoteError
from tandem.store.models import Deployment, KeySet

if TYPE_CHECKING:
    from tests.helpers.keysets import TestKeyset

BTC_ETH = (("bitcoin", "testnet"), ("ethereum", "sepolia"))
SOL = (("solana", "devnet"),)


def three_chains(world: World) -> tuple[TestKeyset, TestKeyset]:
    own = make_keyset(world, chains=BTC_ETH, count=2, segregation="own")
    client = make_keyset(world, curve="ed25519", chains=SOL, count=2, segregation="client:acme")
    return own, client


def audit_entries(world: World, kind_prefix: str = "proof.") -> list[dict[str, Any]]:
    lines, _ = world.client.audit.export(world["olga"])
    return [e for e in map(json.loads, lines) if e["kind"].startswith(kind_prefix)]


def run(world: World, scope: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return world.client.proofs.run(
        issuer=world["olga"],
        manager=world["alice"],
        custodian=world["bob"],
        scope=scope or {"kind": "all"},
        code=lambda: world.code("bob"),
        **kw,
    )


def test_proof_round_trip_btc_eth_sol_verified_independently(world: World) -> None:
    own, client = three_chains(world)
    bundle = run(world)
    proofs = bundle["proofs"]
    expected = {(a["chain"], a["address"]) for a in own.addresses + client.addresses}
    assert {(p["chain"], p["address"]) for p in proofs} == expected
    assert len(proofs) == 6
    nonce = bundle["challenge"]["nonce"]
    for p in proofs:
        assert p["message"] == core.render_message(
            entity="Example Fund SICAV",
            address=p["address"],
            segregation=p["segregation"],
            nonce=nonce,
            date=core.utc_date(world.clock()),
        )
        if p["chain"] == "ethereum":
            assert p["format"] == "eip191"
            recovered = Account.recover_message(encode_defunct(text=p["message"]), signature=p["signature"])
            assert recovered == p["address"]
        elif p["chain"] == "bitcoin":
            assert p["format"] == "bip322-simple"
            bip322.verify_simple_encoded(p["address"], p["message"], p["signature"])
        else:
            assert p["format"] == "solana-offchain-v0"
            payload = bytes.fromhex(p["payload_hex"])
            assert payload.endswith(p["message"].encode())
            assert b58decode(p["address"]) in payload
            nacl.signing.VerifyKey(b58decode(p["address"])).verify(payload, b58decode(p["signature"]))
    report = core.verify_bundle(
        bundle,
        nonce=nonce,
        service_public_key=bytes.fromhex(world.client.deployment()["service"]["sign_public"]),
    )
    assert report.ok, report.failures
    assert report.checkpoint_signature_checked
    assert report.segregation_counts == {"own": 4, "client:acme": 2}


def test_audit_log_records_challenge_contributions_and_bundle_hash(world: World) -> None:
    make_keyset(world)
    bundle = run(world)
    entries = audit_entries(world)
    kinds = [e["kind"] for e in entries]
    assert kinds == ["proof.challenge", "proof.contributed", "proof.contributed", "proof.bundle"]
    assert entries[0]["data"]["challenge"] == bundle["challenge"]
    assert entries[0]["envelope"]["action"]["type"] == "proof.challenge"
    assert {e["data"]["side"] for e in entries[1:3]} == {"manager", "custodian"}
    assert entries[-1]["data"]["bundle_hash"] == core.bundle_hash(bundle)
    # The bundle's checkpoint covers everything up to the last contribution.
    assert bundle["checkpoint"]["checkpoint"]["tree_size"] == entries[2]["index"] + 1
    assert bundle["checkpoint"]["checkpoint"]["last_hash"] == entries[2]["hash"]
    # No share, only ciphertext, in the log; the bundle itself is not in it either.
    assert "signature" not in json.dumps(entries[-1]["data"])


def test_bundle_served_byte_for_byte_as_hashed(world: World) -> None:
    make_keyset(world)
    bundle = run(world)
    challenge_id = bundle["challenge"]["id"]
    response = world.client.http.get(
        f"/v1/proofs/{challenge_id}/bundle",
        headers={"Authorization": f"Bearer {world.client.session(world['olga'])}"},
    )
    assert response.status_code == 200
    digest = hashlib.sha256(response.content).hexdigest()
    assert digest == response.headers["X-Tandem-Bundle-Hash"] == core.bundle_hash(bundle)


def test_non_ascii_entity_name(world: World) -> None:
    entity = "Société Générale Fonds Ünïcødé — 基金"
    with world.svc.db.write() as session:
        dep = session.exec(select(Deployment)).one()
        dep.entity = entity
        session.add(dep)
    # The deployment row never changes after genesis, so the service reads it once; this
    # test rewrites it behind the service's back and must say so.
    world.svc.runner._known_deployment = None
    make_keyset(world)
    make_keyset(world, curve="ed25519", chains=SOL)
    bundle = run(world)
    assert bundle["challenge"]["entity"] == entity
    for p in bundle["proofs"]:
        assert f"entity: {entity} |" in p["message"]
        if p["chain"] == "ethereum":
            assert (
                Account.recover_message(encode_defunct(text=p["message"]), signature=p["signature"])
                == p["address"]
            )
        if p["chain"] == "bitcoin":
            bip322.verify_simple_encoded(p["address"], p["message"], p["signature"])
    assert core.verify_bundle(bundle, nonce=bundle["challenge"]["nonce"], entity=entity).ok


@pytest.mark.parametrize("only", ["alice", "bob"])
def test_one_side_alone_signs_nothing(world: World, only: str) -> None:
    make_keyset(world)
    c = world.client
    view = c.proofs.issue(world["bob"], statement="Q3", scope={"kind": "all"})
    totp = world.code("bob") if only == "bob" else None
    after = c.proofs.contribute(world[only], view["id"], totp=totp)
    assert after["status"] == "open"
    assert after["keysets"][0]["contributed"] == ["manager" if only == "alice" else "custodian"]
    assert after["bundle_hash"] is None
    with pytest.raises(RemoteError) as err:
        c.proofs.bundle(world["olga"], view["id"])
    assert err.value.remote_code == "invalid_state"
    # The same side again (even another member of it) still is one side, and the share
    # already stored is never replaced (THREATS 40).
    other = "mark" if only == "alice" else "cora"
    totp = world.code(other) if other == "cora" else None
    with pytest.raises(RemoteError) as again:
        c.proofs.contribute(world[other], view["id"], totp=totp)
    assert again.value.remote_code == "share_already_stored"
    assert c.proofs.get(world["olga"], view["id"])["status"] == "open"
    assert [e["kind"] for e in audit_entries(world) if e["kind"] == "proof.bundle"] == []


def test_custodian_contribution_needs_totp(world: World) -> None:
    make_keyset(world)
    c = world.client
    view = c.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    with pytest.raises(RemoteError) as err:
        c.proofs.contribute(world["bob"], view["id"])
    assert err.value.remote_code == "totp_invalid"
    assert any(e["kind"] == "proof.contribute.refused" for e in audit_entries(world))


def test_roles(world: World) -> None:
    make_keyset(world)
    c = world.client
    with pytest.raises(RemoteError) as err:
        c.proofs.issue(world["alice"], statement="Q3", scope={"kind": "all"})
    assert err.value.remote_code == "role_not_allowed"
    view = c.proofs.issue(world["bob"], statement="Q3", scope={"kind": "all"})
    env = c.sign(
        world["olga"],
        "proof.contribute",
        {
            "challenge": view["id"],
            "keyset": view["keysets"][0]["keyset"],
            "operation": view["keysets"][0]["operation"]["statement"]["operation"],
            "sealed_share": "AAAA",
        },
    )
    with pytest.raises(RemoteError) as err:
        c.request("POST", f"/v1/proofs/{view['id']}/contributions", json_body={"envelope": env})
    assert err.value.remote_code == "role_not_allowed"
    # An auditor reads the challenge but is never sent a key set's sealed document.
    seen = c.proofs.get(world["olga"], view["id"])
    assert "sealed" not in seen["keysets"][0]
    assert c.proofs.get(world["alice"], view["id"])["keysets"][0]["sealed"]


def test_contribution_to_a_stale_operation_refused(world: World) -> None:
    ks = make_keyset(world)
    c = world.client
    view = c.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    shares = c.proofs.reseal_shares(world["alice"], c.proofs.get(world["alice"], view["id"]))
    c.proofs.renew_operations(world["olga"], view["id"])
    env = c.sign(world["alice"], "proof.contribute", {"challenge": view["id"], **shares[0]})
    with pytest.raises(RemoteError) as err:
        c.request("POST", f"/v1/proofs/{view['id']}/contributions", json_body={"envelope": env})
    assert err.value.remote_code == "conflict"
    assert shares[0]["keyset"] == ks.id


def test_restart_loses_operations_and_renew_recovers(world: World) -> None:
    make_keyset(world)
    c = world.client
    view = c.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    shares = c.proofs.reseal_shares(world["alice"], c.proofs.get(world["alice"], view["id"]))
    world.svc.proofs._proof_operations.clear()  # what a restart does to process memory
    seen = c.proofs.get(world["alice"], view["id"])
    assert seen["operations_held"] is False
    with pytest.raises(InputError, match="no live operation key"):
        c.proofs.contribute(world["alice"], view["id"])
    env = c.sign(world["alice"], "proof.contribute", {"challenge": view["id"], **shares[0]})
    with pytest.raises(RemoteError) as err:
        c.request("POST", f"/v1/proofs/{view['id']}/contributions", json_body={"envelope": env})
    assert err.value.remote_code == "invalid_state"
    c.proofs.renew_operations(world["bob"], view["id"])
    c.proofs.contribute(world["alice"], view["id"])
    done = c.proofs.contribute(world["bob"], view["id"], totp=world.code("bob"))
    assert done["status"] == "signed"


def test_expired_challenge_refuses_contributions(world: World) -> None:
    make_keyset(world)
    c = world.client
    view = c.proofs.issue(
        world["olga"], statement="Q3", scope={"kind": "all"}, expires_at=world.clock() + 600
    )
    c.proofs.contribute(world["alice"], view["id"])
    world.clock.advance(600)
    with pytest.raises(RemoteError) as err:
        c.proofs.contribute(world["bob"], view["id"], totp=world.code("bob"))
    assert err.value.remote_code == "expired"
    assert c.proofs.get(world["olga"], view["id"])["status"] == "expired"


def test_scopes_keyset_segregation_and_addresses(world: World) -> None:
    own, client = three_chains(world)
    by_keyset = run(world, {"kind": "keyset", "keyset": client.id})
    assert {p["address"] for p in by_keyset["proofs"]} == {a["address"] for a in client.addresses}
    by_class = run(world, {"kind": "segregation", "segregation": "own"})
    assert {p["address"] for p in by_class["proofs"]} == {a["address"] for a in own.addresses}
    picked = [own.addresses[1]["address"].lower(), client.addresses[0]["address"]]
    by_list = run(world, {"kind": "addresses", "addresses": picked})
    assert sorted(
        p["address"].lower() if p["chain"] == "ethereum" else p["address"] for p in by_list["proofs"]
    ) == sorted(picked)
    assert by_list["challenge"]["keysets"] == sorted([own.id, client.id])


def test_unknown_address_and_reused_nonce_refused(world: World) -> None:
    make_keyset(world)
    c = world.client
    with pytest.raises(RemoteError) as err:
        c.proofs.issue(
            world["olga"], statement="Q3", scope={"kind": "addresses", "addresses": ["tb1qnotours"]}
        )
    assert err.value.remote_code == "not_found"
    c.proofs.issue(
        world["olga"], statement="Q3", scope={"kind": "all"}, nonce="block-000000000000000000012345"
    )
    with pytest.raises(RemoteError) as err:
        c.proofs.issue(
            world["olga"], statement="Q4", scope={"kind": "all"}, nonce="block-000000000000000000012345"
        )
    assert err.value.remote_code == "conflict"


def test_key_set_needing_reshare_cannot_be_challenged(world: World) -> None:
    ks = make_keyset(world)
    with world.svc.db.write() as session:
        row = session.get(KeySet, ks.id)
        assert row is not None
        row.status = "reshare_required"
        session.add(row)
    with pytest.raises(RemoteError) as err:
        world.client.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    assert err.value.remote_code == "reshare_required"


def test_auditor_verifies_downloaded_bundle_with_cli(world: World, tmp_path: Path) -> None:
    own, client = three_chains(world)
    bundle = run(world)
    data, parsed = world.client.proofs.bundle(world["olga"], bundle["challenge"]["id"])
    assert parsed == bundle
    path = tmp_path / "bundle.json"
    path.write_bytes(data)
    register = tmp_path / "register.csv"
    register.write_text(
        "address,segregation\n"
        + "".join(
            f"{a['address']},{seg}\n"
            for ks, seg in ((own, "own"), (client, "client:acme"))
            for a in ks.addresses
        )
    )
    from tandem.cli.main import app

    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "verify",
            "proofs",
            str(path),
            "--challenge",
            bundle["challenge"]["nonce"],
            "--addresses",
            str(register),
            "--report",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["ok"]
    assert report["verified"] == 6
    assert report["file_sha256"] == audit_entries(world)[-1]["data"]["bundle_hash"]
