"""Fuzzing every parser and verifier that reads outside input.

Random and mutated inputs must either succeed or raise a :class:`tandem.errors.Error`
subclass, never any other exception (IndexError, ValueError, KeyError, UnicodeError,
RecursionError, struct.error...). Crashers found are kept in
``tests/vectors/fuzz_regressions.json`` and replayed by ``test_regressions``.

``TANDEM_DEEP=1`` runs ten times as many examples.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit import test_audit as audit_fixture
from tests.unit import test_proofs as proof_fixture

from tandem.core import actions, audit, proofs
from tandem.core.canonical import canonical, loads_strict
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains import get_chain, rlp, secp256k1
from tandem.core.chains import solana as sol
from tandem.core.chains.base import MessageProof
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.core.chains.secp256k1 import public_key as secp_public
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import Error, FloatNotAllowedError

DEEP = os.environ.get("TANDEM_DEEP") == "1"
FUZZ = settings(
    max_examples=2000 if DEEP else 200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
REGRESSIONS = Path(__file__).parents[1] / "vectors" / "fuzz_regressions.json"
TOKEN = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
PUB = secp_public(bytes(31) + b"\x07")
ETH_ADDR = eth.address_from_public_key(PUB)


def settles(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a tandem Error is a clean refusal, anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except Error:
        return None


# --- strategies ------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: bytes, max_ops: int = 4) -> bytes:
    """``base`` with a few byte flips, insertions, deletions, truncations or duplications."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup", "extreme"]))
        n = len(data)
        i = draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and n:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            del data[i : i + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[i:]
        elif op == "dup" and n:
            j = draw(st.integers(i, n))
            data[j:j] = data[i:j]
        elif op == "extreme" and n:
            data[i : i + 1] = draw(
                st.sampled_from([b"\x00", b"\xff", b"\xfd\xff\xff", b"\xfe\xff\xff\xff\xff"])
            )
    return bytes(data)


def json_values(floats: bool = True) -> st.SearchStrategy[Any]:
    scalars: st.SearchStrategy[Any] = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.integers(min_value=-(2**80), max_value=2**80)
        | st.text()
    )
    if floats:
        scalars = scalars | st.floats(allow_nan=True, allow_infinity=True)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=16,
    )


def has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(has_float(v) for v in value)
    if isinstance(value, dict):
        return any(has_float(v) for v in value.values())
    return False


@st.composite
def edited_json(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with a few edits at random paths: replace a value (wrong type, random
    JSON), drop a key, add a key, empty a list, or duplicate an element."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        parent: Any = None
        key: Any = None
        node = doc
        while isinstance(node, dict | list) and node and draw(st.booleans()):
            parent = node
            key = (
                draw(st.sampled_from(sorted(node)))
                if isinstance(node, dict)
                else draw(st.integers(0, len(node) - 1))
            )
            node = node[key]
        op = draw(st.sampled_from(["replace", "drop", "add", "clear", "dup", "type"]))
        if parent is None:
            if op in ("replace", "type"):
                doc = draw(json_values())
            continue
        if op == "replace":
            parent[key] = draw(json_values())
        elif op == "type":
            parent[key] = draw(
                st.sampled_from([None, True, 0, -1, 2**64, "", "x", [], {}, 1.5, "zz" * 40, "0" * 64])
            )
        elif op == "drop":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(json_values())
        elif op == "clear" and isinstance(parent[key], dict | list):
            parent[key].clear()
        elif op == "dup" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


# --- canonical JSON ----------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_loads_strict_random_bytes(data: bytes) -> None:
    settles(loads_strict, data)
    settles(loads_strict, data, forbid_nul=True)


@FUZZ
@given(st.data())
def test_loads_strict_mutated_json(data: st.DataObject) -> None:
    value = data.draw(json_values())
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    raw = data.draw(st.just(text) | mutated(text))
    settles(loads_strict, raw)
    settles(loads_strict, raw.decode("utf-8", "replace"))
    settles(loads_strict, raw, max_depth=3)


@FUZZ
@given(st.integers(1, 3000), st.sampled_from(["[", '{"a":', '[{"":']))
def test_loads_strict_deep_nesting(depth: int, opener: str) -> None:
    settles(loads_strict, opener * depth)


@FUZZ
@given(json_values())
def test_canonical_refuses_floats_and_round_trips(value: Any) -> None:
    try:
        out = canonical(value)
    except FloatNotAllowedError:
        assert has_float(value)
        return
    except Error:
        return
    assert not has_float(value)
    assert settles(loads_strict, out) in (None, value)


# --- Bitcoin -------------------------------------------------------------------------------------


@cache
def real_btc_tx() -> bytes:
    dest = btc.p2wpkh_address(secp_public(bytes(31) + b"\x09"), "testnet")
    tx = btc.build_p2wpkh_spend(
        from_pubkey=PUB,
        prevouts=[
            btc.Prevout("11" * 32, 0, 100_000, btc.p2wpkh_script(btc.hash160(PUB))),
            btc.Prevout("22" * 32, 3, 70_000, btc.p2wpkh_script(btc.hash160(PUB))),
        ],
        destination=dest,
        amount=50_000,
        fee_rate=5,
        network="testnet",
    )
    return tx.raw


@FUZZ
@given(st.binary(max_size=400))
def test_bitcoin_parse_random(raw: bytes) -> None:
    settles(btc.parse_transaction, raw)


@FUZZ
@given(st.data())
def test_bitcoin_parse_mutated(data: st.DataObject) -> None:
    raw = data.draw(mutated(real_btc_tx(), max_ops=3))
    tx = settles(btc.parse_transaction, raw)
    if tx is not None:
        settles(lambda: (tx.txid, btc.signed_p2wpkh_vsize(tx)))


BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7lQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L1tbBcrt"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
addressish = (
    st.text(max_size=90)
    | st.text(alphabet=BECH32, max_size=90).map(lambda s: "tb1" + s)
    | st.text(alphabet=BASE58, max_size=60)
)


@FUZZ
@given(addressish, st.sampled_from(["mainnet", "testnet", "regtest", "signet", "nonsense"]))
def test_bitcoin_addresses(text: str, network: str) -> None:
    settles(btc.decode_address, text, network)
    settles(btc.validate_address, text, network)


# --- Ethereum ------------------------------------------------------------------------------------


@cache
def real_eth_txs() -> tuple[bytes, bytes]:
    plain = eth.build_eip1559(
        chain_id=11155111,
        nonce=7,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=3 * 10**10,
        gas_limit=21000,
        to=ETH_ADDR,
        value=10**15,
    )
    token = eth.build_eip1559(
        chain_id=11155111,
        nonce=8,
        max_priority_fee_per_gas=10**9,
        max_fee_per_gas=3 * 10**10,
        gas_limit=65000,
        to=TOKEN,
        value=0,
        data=eth.erc20_transfer_calldata(ETH_ADDR, 12345),
    )
    return plain, token


@FUZZ
@given(st.binary(max_size=300))
def test_ethereum_random(raw: bytes) -> None:
    settles(eth.decode_transaction, raw)
    settles(eth.review, raw, allowed_tokens=[TOKEN])
    settles(rlp.decode, raw)
    settles(eth.decode_transaction, b"\x02" + raw)
    settles(eth.review, b"\x02" + raw, allowed_tokens=[TOKEN])


@FUZZ
@given(st.data())
def test_ethereum_mutated(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(real_eth_txs()))
    raw = data.draw(mutated(base, max_ops=3))
    settles(eth.decode_transaction, raw)
    settles(eth.review, raw, allowed_tokens=[TOKEN])
    settles(rlp.decode, raw[1:])
    settles(eth.signing_hash, raw)


@FUZZ
@given(st.recursive(st.binary(max_size=60), lambda inner: st.lists(inner, max_size=5), max_leaves=12))
def test_rlp_round_trip(item: Any) -> None:
    encoded = rlp.encode(item)
    assert rlp.decode(encoded) == item
    for cut in (1, len(encoded) // 2):
        settles(rlp.decode, encoded[:-cut] if cut < len(encoded) else b"")


@FUZZ
@given(
    st.text(max_size=50) | st.text(alphabet="0123456789abcdefABCDEFx", max_size=44).map(lambda s: "0x" + s)
)
def test_ethereum_addresses(text: str) -> None:
    settles(eth.validate_address, text)
    settles(eth.parse_address, text)


# --- Solana --------------------------------------------------------------------------------------


@cache
def real_offchain() -> tuple[bytes, ...]:
    signer = bytes(range(32))
    return (
        sol.serialize_offchain_message(b"hello proof", signers=[signer]),
        sol.serialize_offchain_message("entité ✓".encode(), signers=[signer, bytes(32)]),
    )


@FUZZ
@given(st.data())
def test_solana_offchain(data: st.DataObject) -> None:
    raw = data.draw(st.binary(max_size=200) | st.sampled_from(real_offchain()).flatmap(mutated))
    settles(sol.parse_offchain_message, raw)


@FUZZ
@given(st.text(max_size=60) | st.binary(max_size=40).map(b58encode))
def test_base58(text: str) -> None:
    out = settles(b58decode, text)
    if out is not None:
        assert b58encode(out) == text
    settles(sol.validate_address, text)
    settles(sol.validate_address, text, require_on_curve=True)


# --- message proofs and bundles ----------------------------------------------------------------


@cache
def good_bundle() -> dict[str, Any]:
    return proof_fixture.mixed_bundle()


def test_good_bundle_verifies() -> None:
    assert proofs.verify_bundle(good_bundle(), nonce=proof_fixture.NONCE).ok


@settings(FUZZ, max_examples=600 if DEEP else 60)
@given(st.data())
def test_verify_bundle_mutated(data: st.DataObject) -> None:
    """The auditor's pipeline: bytes -> parse_bundle (top level and challenge checked
    whole) -> verify_bundle (each proof, the checkpoint: failures collected)."""
    bundle = data.draw(edited_json(good_bundle()))
    parsed = settles(proofs.parse_bundle, json.dumps(bundle).encode("utf-8", "surrogatepass"))
    if parsed is None:
        return
    report = settles(
        proofs.verify_bundle,
        parsed,
        nonce=data.draw(st.sampled_from([proof_fixture.NONCE, "00" * 16])),
        entity=data.draw(st.sampled_from([None, proof_fixture.ENTITY])),
        service_public_key=data.draw(st.sampled_from([None, audit_fixture.SERVICE_PUBLIC, bytes(32)])),
    )
    if report is not None:
        assert isinstance(report.ok, bool)
    settles(proofs.bundle_bytes, parsed)


@FUZZ
@given(st.binary(max_size=200))
def test_parse_bundle_random(data: bytes) -> None:
    settles(proofs.parse_bundle, data)


SIGNATURES = (
    st.text(max_size=100)
    | st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode())
    | st.binary(max_size=80).map(lambda b: "0x" + b.hex())
    | st.binary(max_size=80).map(b58encode)
    | st.binary(min_size=64, max_size=65).map(lambda b: base64.b64encode(b).decode())
    | st.binary(min_size=65, max_size=65).map(lambda b: "0x" + b.hex())
    | st.binary(min_size=64, max_size=64).map(b58encode)
)


def _sig_bytes(fmt: str, text: str) -> bytes:
    if fmt == "eip191":
        return bytes.fromhex(text[2:])
    if fmt == "solana-offchain-v0":
        return b58decode(text)
    return base64.b64decode(text)


def _sig_text(fmt: str, raw: bytes) -> str:
    if fmt == "eip191":
        return "0x" + raw.hex()
    if fmt == "solana-offchain-v0":
        return b58encode(raw)
    return base64.b64encode(raw).decode()


@settings(FUZZ, max_examples=1000 if DEEP else 100)
@given(st.data())
def test_verify_message_mutated_real_signatures(data: st.DataObject) -> None:
    entry = data.draw(st.sampled_from(good_bundle()["proofs"]))
    original = _sig_bytes(entry["format"], entry["signature"])
    raw = data.draw(mutated(original, max_ops=2))
    payload = entry.get("payload_hex")
    if payload is not None and data.draw(st.booleans()):
        payload = data.draw(mutated(bytes.fromhex(payload), max_ops=2)).hex()
    if raw == original and payload == entry.get("payload_hex"):
        return
    proof = MessageProof(
        format=entry["format"], signature=_sig_text(entry["format"], raw), payload_hex=payload
    )
    try:
        get_chain(entry["chain"]).verify_message(
            entry["address"], entry["message"], proof, entry["network"], bytes.fromhex(entry["public_key"])
        )
    except Error:
        return
    # BIP-137 header bytes 31..34 / 35..38 name the same key as 27..30 for other address
    # types; only a header-byte change may still verify, never a change to r, s or payload.
    assert entry["format"] == "bip137", "a mutated signature verified"
    assert raw[1:] == original[1:], "a BIP-137 signature with changed r or s verified"
    assert payload == entry.get("payload_hex")


@FUZZ
@given(
    st.sampled_from(proof_fixture.CHAINS),
    st.sampled_from(["bip322-simple", "bip137", "eip191", "solana-offchain-v0", "", "x"]),
    SIGNATURES,
    st.none() | st.text(max_size=20) | st.binary(max_size=80).map(bytes.hex),
    st.text(max_size=40),
    st.booleans(),
)
def test_verify_message_random_signatures(  # noqa: PLR0917 - one argument per @given strategy
    chain_net: tuple[str, str], fmt: str, signature: str, payload: str | None, message: str, with_pub: bool
) -> None:
    chain_name, network = chain_net
    entry = next(p for p in good_bundle()["proofs"] if p["chain"] == chain_name)
    chain = get_chain(chain_name)
    proof = MessageProof(format=fmt, signature=signature, payload_hex=payload)
    pub = bytes.fromhex(entry["public_key"]) if with_pub else None
    try:
        chain.verify_message(entry["address"], message or entry["message"], proof, network, pub)
    except Error:
        return
    raise AssertionError("a random signature verified")


# --- audit export ------------------------------------------------------------------------------


@cache
def small_log() -> tuple[list[bytes], dict[str, Any]]:
    entries = audit_fixture.build(4)
    return audit_fixture.lines_of(entries), audit_fixture.checkpoint_for(entries)


def test_small_log_verifies() -> None:
    lines, checkpoint = small_log()
    audit.verify_export(lines, checkpoint, audit_fixture.SERVICE_PUBLIC, workers=1)


@settings(FUZZ, max_examples=600 if DEEP else 100)
@given(st.data())
def test_verify_export_mutated_lines(data: st.DataObject) -> None:
    lines, checkpoint = small_log()
    lines = list(lines)
    i = data.draw(st.integers(0, len(lines) - 1))
    how = data.draw(st.sampled_from(["bytes", "json", "drop", "swap"]))
    if how == "bytes":
        lines[i] = data.draw(mutated(lines[i], max_ops=2))
    elif how == "json":
        lines[i] = json.dumps(data.draw(edited_json(json.loads(lines[i])))).encode()
    elif how == "drop":
        del lines[i]
    else:
        j = data.draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    if data.draw(st.booleans()):
        checkpoint = data.draw(edited_json(checkpoint))
    settles(
        audit.verify_export,
        lines,
        checkpoint,
        audit_fixture.SERVICE_PUBLIC,
        envelope_verifier=audit_fixture.envelope_verifier,
        workers=1,
    )
    parsed = [settles(loads_strict, line) for line in lines]
    if all(isinstance(p, dict) for p in parsed):
        settles(audit.verify_chain, parsed)


# --- envelopes -----------------------------------------------------------------------------------


@cache
def real_envelope() -> dict[str, Any]:
    member = MemberSecrets.generate(name="fuzz", role=Role.MANAGER)
    return actions.sign_action(
        member, type="withdrawal.release", deployment="dep_x", body={"withdrawal": "wd_1"}, issued_at=1
    ).to_json()


@FUZZ
@given(st.data())
def test_parse_envelope(data: st.DataObject) -> None:
    doc = data.draw(json_values() | edited_json(real_envelope()))
    settles(actions.parse_envelope, doc)


def test_real_envelope_parses() -> None:
    assert actions.parse_envelope(real_envelope()).type == "withdrawal.release"


# --- crashers found, kept as regressions ------------------------------------------------------------

TARGETS: dict[str, Callable[[Any], Any]] = {
    "loads_strict": loads_strict,
    "canonical": canonical,
    "bitcoin.parse_transaction": btc.parse_transaction,
    "bitcoin.decode_address.testnet": lambda s: btc.decode_address(s, "testnet"),
    "ethereum.decode_transaction": eth.decode_transaction,
    "ethereum.review": lambda raw: eth.review(raw, allowed_tokens=[TOKEN]),
    "rlp.decode": rlp.decode,
    "solana.parse_offchain_message": sol.parse_offchain_message,
    "b58decode": b58decode,
    "actions.parse_envelope": actions.parse_envelope,
    "secp256k1.verify_digest_der": lambda der: secp256k1.verify_digest_der(
        secp_public(bytes([1]) * 32), der, bytes(32)
    ),
    "proofs.verify_bundle.unparsed": lambda b: proofs.verify_bundle(b, nonce=proof_fixture.NONCE),
    "proofs.verify_bundle": lambda b: proofs.verify_bundle(
        proofs.parse_bundle(json.dumps(b).encode()), nonce=proof_fixture.NONCE
    ),
}


def _regressions() -> list[Any]:
    if not REGRESSIONS.exists():
        return []
    cases = json.loads(REGRESSIONS.read_text())["cases"]
    out = []
    for case in cases:
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if case.get("xfail") else []
        out.append(pytest.param(case, id=case["id"], marks=marks))
    return out


def _decode_input(case: dict[str, Any]) -> Any:
    if "hex" in case:
        return bytes.fromhex(case["hex"])
    if "text" in case:
        return case["text"]
    return case["json"]


@pytest.mark.parametrize("case", _regressions())
def test_regressions(case: dict[str, Any]) -> None:
    settles(TARGETS[case["target"]], _decode_input(case))
