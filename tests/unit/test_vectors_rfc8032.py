"""RFC 8032 Ed25519 known answers through member signing and ``verify_ed25519``, and
the malleability and small-order refusals Tandem relies on (THREATS 14)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from tandem.core.actions import sign_action
from tandem.core.identity import MemberSecrets, verify_ed25519
from tandem.core.roles import Role
from tandem.errors import BadSignatureError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "rfc8032.json").read_text())
CASES = VECTORS["cases"]
# The order of the Ed25519 base point (RFC 8032 section 5.1).
L = 2**252 + 27742317777372353535851937790883648493


def _member(seed: bytes) -> MemberSecrets:
    return MemberSecrets(
        name="vector",
        role=Role.MANAGER,
        sign_seed=seed,
        seal_private=os.urandom(32),
        totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    )


def test_vector_file_holds_the_four_rfc_cases() -> None:
    assert "RFC 8032" in VECTORS["source"]
    assert [c["name"] for c in CASES] == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024"]
    assert len(bytes.fromhex(CASES[3]["message"])) == 1023


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_nacl_signing_key_reproduces_vector(case: dict[str, Any]) -> None:
    key = nacl.signing.SigningKey(bytes.fromhex(case["secret_key"]))
    assert bytes(key.verify_key).hex() == case["public_key"]
    assert key.sign(bytes.fromhex(case["message"])).signature.hex() == case["signature"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_member_secrets_sign_reproduces_vector(case: dict[str, Any]) -> None:
    member = _member(bytes.fromhex(case["secret_key"]))
    assert member.sign_public.hex() == case["public_key"]
    assert member.sign(bytes.fromhex(case["message"])).hex() == case["signature"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_verify_ed25519_accepts_vector(case: dict[str, Any]) -> None:
    verify_ed25519(
        bytes.fromhex(case["public_key"]),
        bytes.fromhex(case["message"]),
        bytes.fromhex(case["signature"]),
        what="vector",
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_verify_ed25519_refuses_any_flipped_bit(case: dict[str, Any]) -> None:
    pk = bytes.fromhex(case["public_key"])
    msg = bytes.fromhex(case["message"])
    sig = bytes.fromhex(case["signature"])
    for position in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[position] ^= 0x01
        with pytest.raises(BadSignatureError) as err:
            verify_ed25519(pk, msg, bytes(bad), what="vector")
        assert err.value.code == "bad_signature"
    with pytest.raises(BadSignatureError):
        verify_ed25519(pk, msg + b"\x00", sig, what="vector")
    other = bytes.fromhex(CASES[(CASES.index(case) + 1) % len(CASES)]["public_key"])
    with pytest.raises(BadSignatureError):
        verify_ed25519(other, msg, sig, what="vector")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_non_canonical_s_is_refused(case: dict[str, Any]) -> None:
    """S + L satisfies the verification equation of a lax (mod L) verifier; RFC 8032
    section 5.1.7 requires 0 <= S < L, and libsodium enforces it."""
    pk = bytes.fromhex(case["public_key"])
    msg = bytes.fromhex(case["message"])
    sig = bytes.fromhex(case["signature"])
    s = int.from_bytes(sig[32:], "little")
    assert s < L
    malleated = sig[:32] + (s + L).to_bytes(32, "little")
    assert malleated != sig
    with pytest.raises(BadSignatureError):
        verify_ed25519(pk, msg, malleated, what="vector")


def test_small_order_public_key_and_identity_signature_refused() -> None:
    """With A and R of small order and S = 0, a cofactorless lax verifier accepts
    any message. libsodium refuses small-order keys and R."""
    identity = bytes([1]) + bytes(31)  # encoding of the neutral element
    sig = identity + bytes(32)
    for message in (b"", b"withdraw everything"):
        with pytest.raises(BadSignatureError):
            verify_ed25519(identity, message, sig, what="small order")


@pytest.mark.parametrize("bad_key", [b"", bytes(31), bytes(33), b"\xff" * 32])
def test_malformed_public_key_is_a_bad_signature_not_a_crash(bad_key: bytes) -> None:
    case = CASES[0]
    with pytest.raises(BadSignatureError):
        verify_ed25519(bad_key, bytes.fromhex(case["message"]), bytes.fromhex(case["signature"]), what="x")


@pytest.mark.parametrize("bad_sig", [b"", bytes(63), bytes(65)])
def test_malformed_signature_length_refused(bad_sig: bytes) -> None:
    case = CASES[0]
    with pytest.raises(BadSignatureError):
        verify_ed25519(bytes.fromhex(case["public_key"]), b"", bad_sig, what="x")


def test_action_signed_with_vector_key_verifies_and_malleated_copy_does_not() -> None:
    member = _member(bytes.fromhex(CASES[0]["secret_key"]))
    action = sign_action(
        member, type="session.open", deployment="dep_x", body={}, issued_at=1, nonce="0" * 32
    )
    action.verify(member.sign_public)
    s = int.from_bytes(action.signature[32:], "little")
    malleated = type(action)(
        **{**action.__dict__, "signature": action.signature[:32] + (s + L).to_bytes(32, "little")}
    )
    with pytest.raises(BadSignatureError):
        malleated.verify(member.sign_public)
