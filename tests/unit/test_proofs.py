"""Proof-of-ownership core: message text, bundles, offline verification and the
`tandem verify proofs` command, on synthetic bundles (no server, no database).

Signatures are also checked with independent implementations: eth-account for
EIP-191, the `bip322` library (rust-bitcoin) for BIP-322 simple, and PyNaCl over the
off-chain message bytes rebuilt here from the Agave proposal's layout."""

from __future__ import annotations

import base64
import copy
import json
import os
import struct
from pathlib import Path
from typing import Any

import bip322
import nacl.signing
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tandem.cli import exit_codes
from tandem.cli.parallel import chunk_runner, usable_cores
from tandem.core import proofs as core
from tandem.core.audit import sign_checkpoint
from tandem.core.canonical import canonical
from tandem.core.chains import get_chain, secp256k1
from tandem.core.chains.base58 import b58decode
from tandem.errors import (
    DuplicateKeyError,
    FloatNotAllowedError,
    InputError,
    MalformedJSONError,
    VerificationError,
)

VECTORS = Path(__file__).parents[1] / "vectors"
T0 = 1_790_000_000  # 2026-09-21
NONCE = "4f1c2a9e0b7d4e3f8a6c5b2d1e0f9a8b"
ENTITY = "Example Fund SICAV"
SERVICE_SEED = bytes(range(32))
CHAINS = (("bitcoin", "testnet"), ("ethereum", "sepolia"), ("solana", "devnet"))


def new_key(chain: str) -> tuple[bytes, bytes]:
    """(private key, public key) for a chain's curve."""
    while True:
        priv = os.urandom(32)
        if chain == "solana":
            return priv, bytes(nacl.signing.SigningKey(priv).verify_key)
        if secp256k1.is_valid_private_key(priv):
            return priv, secp256k1.public_key(priv)


def make_challenge(*, entity: str = ENTITY, nonce: str = NONCE, expires_in: int = 86400) -> dict[str, Any]:
    return core.make_challenge(
        challenge_id="pc_test",
        deployment="dep_test",
        entity=entity,
        nonce=nonce,
        statement="Q3 2026 statement of position",
        scope={"kind": "all"},
        keysets=["ks_a"],
        issuer="mem_olga",
        issuer_role="auditor",
        created_at=T0,
        expires_at=T0 + expires_in,
    )


def make_proof(
    chain: str,
    network: str,
    *,
    segregation: str = "own",
    entity: str = ENTITY,
    nonce: str = NONCE,
    key: tuple[bytes, bytes] | None = None,
    date: str = "2026-09-21",
) -> dict[str, Any]:
    priv, pub = key or new_key(chain)
    address = get_chain(chain).address(pub, network)
    return core.sign_proof(
        chain=chain,
        network=network,
        address=address,
        public_key=pub,
        segregation=segregation,
        private_key=priv,
        entity=entity,
        nonce=nonce,
        date=date,
    )


def make_bundle(
    proofs: list[dict[str, Any]], *, entity: str = ENTITY, nonce: str = NONCE, signed_at: int = T0 + 60
) -> dict[str, Any]:
    checkpoint = sign_checkpoint(
        SERVICE_SEED, deployment="dep_test", tree_size=5, root="00" * 32, last_hash="11" * 32, time=signed_at
    )
    return core.build_bundle(
        challenge=make_challenge(entity=entity, nonce=nonce),
        signed_at=signed_at,
        checkpoint=checkpoint,
        proofs=proofs,
    )


def mixed_bundle(entity: str = ENTITY) -> dict[str, Any]:
    proofs = [make_proof(c, n, entity=entity) for c, n in CHAINS]
    proofs.append(make_proof("bitcoin", "testnet", segregation="client:acme", entity=entity))
    proofs.append(make_proof("ethereum", "sepolia", segregation="client-omnibus", entity=entity))
    return make_bundle(proofs, entity=entity)


def failed_addresses(report: core.ProofReport) -> set[str | None]:
    return {f.address for f in report.failures}


def solana_payload(message: bytes, signer: bytes) -> bytes:
    """Off-chain message v0, proposal layout, written out independently of the chain module."""
    fmt = 0 if all(0x20 <= b <= 0x7E for b in message) else 1
    return (
        b"\xffsolana offchain"
        + bytes([0])
        + bytes(32)
        + bytes([fmt, 1])
        + signer
        + struct.pack("<H", len(message))
        + message
    )


def check_independently(proof: dict[str, Any]) -> None:
    message = proof["message"]
    if proof["chain"] == "ethereum":
        recovered = Account.recover_message(encode_defunct(text=message), signature=proof["signature"])
        assert recovered == proof["address"]
    elif proof["chain"] == "bitcoin":
        assert proof["format"] == "bip322-simple"
        bip322.verify_simple_encoded(proof["address"], message, proof["signature"])  # raises if bad
    else:
        signer = b58decode(proof["address"])
        payload = solana_payload(message.encode("utf-8"), signer)
        assert payload.hex() == proof["payload_hex"]
        nacl.signing.VerifyKey(signer).verify(payload, b58decode(proof["signature"]))


# --- message text and known answers --------------------------------------------------


def test_message_template_names_entity_address_class_nonce_and_date() -> None:
    text = core.render_message(
        entity="Fonds Æther S.A.",
        address="tb1qxyz",
        segregation="client:acme",
        nonce=NONCE,
        date="2026-09-21",
    )
    assert text == (
        "Tandem proof of ownership | entity: Fonds Æther S.A. | address: tb1qxyz | "
        f"segregation: client:acme | challenge: {NONCE} | date: 2026-09-21"
    )
    assert core.utc_date(T0) == "2026-09-21"


def test_known_answer_vectors_reproduce_and_verify_independently() -> None:
    """Fixed keys, fixed challenge: RFC 6979 and Ed25519 are deterministic, so the
    signatures are known answers; each is also checked by an independent library."""
    vectors = json.loads((VECTORS / "proof_messages.json").read_text(encoding="utf-8"))
    for case in vectors["cases"]:
        proof = core.sign_proof(
            chain=case["chain"],
            network=case["network"],
            address=case["address"],
            public_key=bytes.fromhex(case["public_key"]),
            segregation=case["segregation"],
            private_key=bytes.fromhex(case["private_key"]),
            entity=case["entity"],
            nonce=case["nonce"],
            date=case["date"],
        )
        assert proof["message"] == case["message"]
        assert proof["format"] == case["format"]
        assert proof["signature"] == case["signature"]
        assert proof.get("payload_hex") == case.get("payload_hex")
        check_independently(proof)
        assert core.check_proof(proof, entity=case["entity"], nonce=case["nonce"], date=case["date"]) is None


@pytest.mark.parametrize("entity", [ENTITY, "Société Générale Fonds Ü — 基金 🚀", "ACME | x: y"])
def test_bundle_round_trip_and_independent_verification(entity: str) -> None:
    bundle = mixed_bundle(entity)
    data = core.bundle_bytes(bundle)
    assert data == canonical(bundle)  # the fast path is RFC 8785
    parsed = core.parse_bundle(data)
    assert parsed == bundle
    report = core.verify_bundle(parsed, nonce=NONCE)
    report.require()
    assert report.proofs == report.verified == 5
    assert report.bundle_hash == core.bundle_hash(bundle)
    assert {s.format for s in report.summary} == {"bip322-simple", "eip191", "solana-offchain-v0"}
    for proof in parsed["proofs"]:
        assert entity in proof["message"]
        check_independently(proof)


def test_checkpoint_signature_checked_when_service_key_given() -> None:
    bundle = mixed_bundle()
    good = bytes(nacl.signing.SigningKey(SERVICE_SEED).verify_key)
    report = core.verify_bundle(bundle, nonce=NONCE, service_public_key=good)
    assert report.ok
    assert report.checkpoint_signature_checked
    other = bytes(nacl.signing.SigningKey(bytes(32)).verify_key)
    bad = core.verify_bundle(bundle, nonce=NONCE, service_public_key=other)
    assert any("checkpoint" in f.reason and f.address is None for f in bad.failures)


# --- tampering ---------------------------------------------------------------------------


def test_tampered_message_refused_naming_the_address() -> None:
    bundle = mixed_bundle()
    victim = next(p for p in bundle["proofs"] if p["segregation"] == "own")
    victim["message"] = victim["message"].replace("segregation: own", "segregation: client:x")
    report = core.verify_bundle(bundle, nonce=NONCE)
    assert not report.ok
    assert failed_addresses(report) == {victim["address"]}
    assert "template" in report.failures[0].reason
    with pytest.raises(VerificationError, match=victim["address"]):
        report.require()


@pytest.mark.parametrize("chain", ["bitcoin", "ethereum", "solana"])
def test_tampered_signature_refused_naming_the_address(chain: str) -> None:
    bundle = mixed_bundle()
    victim = next(p for p in bundle["proofs"] if p["chain"] == chain)
    # Another genuine signature from the bundle's own chain: well-formed, wrong.
    other = make_proof(chain, dict(CHAINS)[chain])
    victim["signature"] = other["signature"]
    report = core.verify_bundle(bundle, nonce=NONCE)
    assert failed_addresses(report) == {victim["address"]}


def test_segregation_class_swapped_in_message_and_field_refused() -> None:
    bundle = mixed_bundle()
    victim = next(p for p in bundle["proofs"] if p["segregation"] == "client:acme")
    victim["segregation"] = "own"
    victim["message"] = victim["message"].replace("client:acme", "own")
    report = core.verify_bundle(bundle, nonce=NONCE)
    assert failed_addresses(report) == {victim["address"]}


def test_addresses_swapped_between_proofs_refused() -> None:
    a = make_proof("ethereum", "sepolia")
    b = make_proof("ethereum", "sepolia")
    a["address"], b["address"] = b["address"], a["address"]
    report = core.verify_bundle(make_bundle([a, b]), nonce=NONCE)
    assert failed_addresses(report) == {a["address"], b["address"]}


def test_public_key_swapped_refused() -> None:
    a = make_proof("bitcoin", "testnet")
    b = make_proof("bitcoin", "testnet")
    a["public_key"] = b["public_key"]
    report = core.verify_bundle(make_bundle([a, b]), nonce=NONCE)
    assert failed_addresses(report) == {a["address"]}


def test_nonce_changed_refused() -> None:
    bundle = mixed_bundle()
    # Checked against the auditor's own nonce: a bundle for another challenge fails whole.
    report = core.verify_bundle(bundle, nonce="a-different-nonce")
    assert any(f.address is None and "challenge" in f.reason for f in report.failures)
    # Relabelling the bundle with the auditor's nonce leaves every message naming the old one.
    bundle["challenge"]["nonce"] = "a-different-nonce"
    report = core.verify_bundle(bundle, nonce="a-different-nonce")
    assert failed_addresses(report) == {p["address"] for p in bundle["proofs"]}


def test_signed_after_expiry_refused() -> None:
    bundle = mixed_bundle()
    bundle["challenge"]["expires_at"] = bundle["signed_at"] - 1
    report = core.verify_bundle(bundle, nonce=NONCE)
    assert any(f.address is None and "expired" in f.reason for f in report.failures)


def test_date_moved_refused_naming_every_address() -> None:
    bundle = mixed_bundle()
    bundle["signed_at"] += 86400
    bundle["date"] = core.utc_date(bundle["signed_at"])
    bundle["challenge"]["expires_at"] += 86400
    report = core.verify_bundle(bundle, nonce=NONCE)
    assert failed_addresses(report) == {p["address"] for p in bundle["proofs"]}


def test_entity_checked_when_given() -> None:
    report = core.verify_bundle(mixed_bundle(), nonce=NONCE, entity="Another Fund")
    assert any("entity" in f.reason for f in report.failures)


def test_duplicate_proof_refused() -> None:
    proof = make_proof("solana", "devnet")
    report = core.verify_bundle(make_bundle([proof, copy.deepcopy(proof)]), nonce=NONCE)
    assert [f.address for f in report.failures] == [proof["address"]]
    assert "twice" in report.failures[0].reason


def test_malformed_entries_reported_not_raised() -> None:
    good = make_proof("ethereum", "sepolia")
    extra = {**make_proof("ethereum", "sepolia"), "note": "x"}
    no_sig = {k: v for k, v in make_proof("bitcoin", "testnet").items() if k != "signature"}
    bad_chain = {**make_proof("bitcoin", "testnet"), "chain": "dogecoin"}
    bad_format = {**make_proof("bitcoin", "testnet"), "format": "eip191"}
    sol_no_payload = {k: v for k, v in make_proof("solana", "devnet").items() if k != "payload_hex"}
    bundle = make_bundle([good])
    bundle["proofs"] += [extra, no_sig, bad_chain, bad_format, sol_no_payload, "junk", None]
    report = core.verify_bundle(bundle, nonce=NONCE)
    assert report.verified == 1
    assert len(report.failures) == 7


# --- segregation and the auditor's list --------------------------------------------------


def test_own_and_client_overlap_refused() -> None:
    key = new_key("ethereum")
    own = make_proof("ethereum", "sepolia", key=key, segregation="own")
    client = make_proof("ethereum", "mainnet", key=key, segregation="client:acme")
    report = core.verify_bundle(make_bundle([own, client]), nonce=NONCE)
    assert not report.ok
    assert failed_addresses(report) == {own["address"]}
    assert "disjoint" in report.failures[0].reason


def test_same_key_own_on_one_chain_client_on_another_refused() -> None:
    key = new_key("bitcoin")
    own = make_proof("bitcoin", "testnet", key=key, segregation="own")
    client = make_proof("ethereum", "sepolia", key=key, segregation="client-omnibus")
    report = core.verify_bundle(make_bundle([own, client]), nonce=NONCE)
    assert failed_addresses(report) == {own["address"], client["address"]}
    assert all("keys must be disjoint" in f.reason for f in report.failures)


def test_every_listed_address_must_have_a_valid_proof() -> None:
    bundle = mixed_bundle()
    addresses = [p["address"] for p in bundle["proofs"]]
    listed = core.parse_address_list("\n".join(["# register export", *addresses, ""]))
    assert core.verify_bundle(bundle, nonce=NONCE, addresses=listed).ok
    missing = make_proof("bitcoin", "testnet")["address"]
    listed = core.parse_address_list("\n".join([*addresses, missing]))
    report = core.verify_bundle(bundle, nonce=NONCE, addresses=listed)
    assert [f.address for f in report.failures] == [missing]
    assert "no proof" in report.failures[0].reason


def test_listed_address_with_failed_proof_says_why() -> None:
    bundle = mixed_bundle()
    victim = bundle["proofs"][0]
    victim["signature"] = make_proof(victim["chain"], victim["network"])["signature"]
    listed = core.parse_address_list(victim["address"])
    report = core.verify_bundle(bundle, nonce=NONCE, addresses=listed)
    assert [f.address for f in report.failures] == [victim["address"], victim["address"]]
    assert "its proof failed" in report.failures[1].reason


def test_csv_address_list_with_segregation_column() -> None:
    bundle = mixed_bundle()
    eth = next(p for p in bundle["proofs"] if p["segregation"] == "client-omnibus")
    btc = next(p for p in bundle["proofs"] if p["segregation"] == "client:acme")
    text = (
        "\ufeffTxhash,Address,Balance,Segregation\n"
        f"0x1,{eth['address'].lower()},1.5,client-omnibus\n"
        f'0x2,"{btc["address"]}",2,own\n'
    )
    listed = core.parse_address_list(text)
    assert [entry.address for entry in listed] == [eth["address"].lower(), btc["address"]]
    report = core.verify_bundle(bundle, nonce=NONCE, addresses=listed)
    assert [f.address for f in report.failures] == [btc["address"]]
    assert "says own" in report.failures[0].reason


def test_address_list_refusals() -> None:
    with pytest.raises(InputError, match="no 'address' column"):
        core.parse_address_list("wallet,balance\nx,1\n")
    with pytest.raises(InputError, match="one address per line"):
        core.parse_address_list("addr1 addr2\n")
    with pytest.raises(InputError, match="no address"):
        core.parse_address_list("# nothing\n\n")


# --- parsing and canonical bytes ---------------------------------------------------------


def test_parse_bundle_is_strict() -> None:
    data = core.bundle_bytes(mixed_bundle())
    with pytest.raises(DuplicateKeyError):
        core.parse_bundle(data.replace(b'{"challenge":', b'{"date":"x","challenge":', 1))
    with pytest.raises(FloatNotAllowedError):
        core.parse_bundle(data.replace(b'"signed_at":', b'"signed_at":1.5,"x":', 1))
    with pytest.raises(InputError, match="unknown field"):
        core.parse_bundle(data.replace(b'{"challenge":', b'{"extra":1,"challenge":', 1))
    with pytest.raises(MalformedJSONError, match="malformed bundle JSON"):
        core.parse_bundle(data[:-1])


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60), st.text(max_size=30))
def test_fast_canonical_bytes_equal_rfc8785(entity: str, statement_tail: str) -> None:
    doc = {
        "format": core.BUNDLE_FORMAT,
        "challenge": {"entity": entity, "statement": statement_tail},
        "proofs": [{"message": entity + statement_tail, "n": -(2**53) + 1, "b": True, "z": None}],
    }
    try:
        expected = canonical(doc)
    except InputError:
        with pytest.raises(InputError):
            core.bundle_bytes(doc)
        return
    assert core.bundle_bytes(doc) == expected


# --- parallel verification and the CLI --------------------------------------------------


def synthetic_bundle(count: int) -> dict[str, Any]:
    proofs = []
    for i in range(count):
        chain, network = CHAINS[i % 3]
        proofs.append(make_proof(chain, network, segregation="own" if i % 2 else "client-omnibus"))
    return make_bundle(proofs)


def test_parallel_result_equals_sequential() -> None:
    bundle = synthetic_bundle(1200)
    bundle["proofs"][7]["signature"] = bundle["proofs"][10]["signature"]
    bundle["proofs"][1100]["message"] += " "
    one = core.verify_bundle(bundle, nonce=NONCE)
    runner = chunk_runner(2, len(bundle["proofs"]))
    assert runner is not None
    two = core.verify_bundle(bundle, nonce=NONCE, run_chunks=runner)
    assert one.failures == two.failures
    assert failed_addresses(two) == {bundle["proofs"][7]["address"], bundle["proofs"][1100]["address"]}


def test_usable_cores_without_sched_getaffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no os.sched_getaffinity: the machine's count is used."""
    monkeypatch.delattr("os.sched_getaffinity", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert usable_cores() == 6
    assert chunk_runner(None, 10) is None  # small inputs stay in this process


def run_verify(args: list[str]) -> Any:
    from tandem.cli.main import app

    return CliRunner().invoke(app, ["verify", "proofs", *args])


def test_cli_verifies_2000_proofs_with_two_jobs(tmp_path: Path) -> None:
    bundle = synthetic_bundle(2000)
    path = tmp_path / "bundle.json"
    path.write_bytes(core.bundle_bytes(bundle))
    listed = tmp_path / "addresses.txt"
    listed.write_text("\n".join(p["address"] for p in bundle["proofs"][::7]) + "\n")
    report_path = tmp_path / "report.json"
    result = run_verify(
        [
            str(path),
            "--challenge",
            NONCE,
            "--jobs",
            "2",
            "--addresses",
            str(listed),
            "--report",
            str(report_path),
        ]
    )
    assert result.exit_code == 0, result.output
    assert "every proof verifies" in result.output
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert report["proofs"] == report["verified"] == 2000
    assert report["listed_addresses"] == len(bundle["proofs"][::7])
    assert report["bundle_hash"] == report["file_sha256"] == core.bundle_hash(bundle)


def test_cli_exits_non_zero_naming_failing_addresses(tmp_path: Path) -> None:
    bundle = mixed_bundle()
    victim = bundle["proofs"][2]
    victim["signature"] = make_proof(victim["chain"], victim["network"])["signature"]
    path = tmp_path / "bundle.json"
    path.write_bytes(core.bundle_bytes(bundle))
    missing = make_proof("ethereum", "sepolia")["address"]
    listed = tmp_path / "register.csv"
    listed.write_text(
        "address,label\n" + "\n".join(f"{a},x" for a in [p["address"] for p in bundle["proofs"]] + [missing])
    )
    report_path = tmp_path / "report.json"
    result = run_verify(
        [str(path), "--challenge", NONCE, "--addresses", str(listed), "--report", str(report_path)]
    )
    assert result.exit_code == 1
    assert victim["address"] in result.output
    assert missing in result.output
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert {f["address"] for f in report["failures"]} == {victim["address"], missing}


def test_cli_refuses_unreadable_bundle(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text('{"format": 1.5}')
    result = run_verify([str(path), "--challenge", NONCE])
    assert result.exit_code == exit_codes.BAD_INPUT
    assert "refused" in result.output


def test_base64_signatures_are_canonical_in_bundles() -> None:
    proof = make_proof("bitcoin", "testnet")
    assert base64.b64encode(base64.b64decode(proof["signature"])).decode() == proof["signature"]
    assert make_proof("ethereum", "sepolia")["signature"].startswith("0x")
