"""Solana chain module: base58, keys, RFC 8032, off-chain message layout and proofs."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from tandem.core.chains import get_chain
from tandem.core.chains import solana as sol
from tandem.core.chains.base import MessageProof
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.errors import (
    CannotVerifyError,
    CryptoError,
    InputError,
    InvalidAddressError,
    VerificationError,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"

SEED = bytes([8] * 32)
ADDRESS = "2KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE1"
OTHER_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["source"]
    return data


def sha256_base58(data: bytes) -> str:
    return b58encode(hashlib.sha256(data).digest())


# --- base58 ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("solana_base58.json")["cases"], ids=lambda c: c[1][:16])
def test_bitcoin_base58_vectors(case: list[str]) -> None:
    raw, text = bytes.fromhex(case[0]), case[1]
    assert b58encode(raw) == text
    assert b58decode(text) == raw


@pytest.mark.parametrize(
    "bad",
    ["0", "O", "I", "l", "3SEo3LWLoPntC ", " 3SEo", "3SEo\n", "3SE+", "ＡBC", "é", "1" * 1025],
)
def test_base58_refuses_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(InputError):
        b58decode(bad)


@given(st.binary(max_size=100))
def test_base58_round_trip(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


@given(st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", max_size=60))
def test_base58_text_round_trip(text: str) -> None:
    # Leading 1s are leading zero bytes, so every alphabet string has one decoding.
    assert b58encode(b58decode(text)) == text


# --- keys and addresses -----------------------------------------------------------------


def test_web3js_keypair_vectors() -> None:
    cases = load("solana_keypairs.json")["cases"]
    for case in cases:
        if "seed" in case:
            seed = bytes.fromhex(case["seed"])
        else:
            secret = base64.b64decode(case["secret_key_base64"])
            seed = secret[:32]
            assert sol.public_key_from_seed(seed) == secret[32:]
        public_key = sol.public_key_from_seed(seed)
        assert sol.address_from_public_key(public_key) == case["address"]
        assert get_chain("solana").address(public_key, "mainnet") == case["address"]
        assert sol.validate_address(case["address"], require_on_curve=True) == case["address"]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE",  # 31 bytes
        "2KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE11",  # 33 bytes
        "12KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE1",  # extra leading zero byte
        "2KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE0",
        "0x2KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE1",
        " 2KW2XRd9kwqet15Aha2oK3tYvd3nWbTFH1MBiRAv1BE1",
    ],
)
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAddressError):
        get_chain("solana").validate_address(bad, "devnet")


def test_on_curve_check_only_when_asked() -> None:
    # The system program's address is 32 zero bytes: a valid address, not a key.
    system_program = "11111111111111111111111111111111"
    chain = get_chain("solana")
    assert chain.validate_address(system_program, "mainnet") == system_program
    assert isinstance(chain, sol.Solana)
    with pytest.raises(InvalidAddressError, match="not an Ed25519 public key"):
        chain.validate_address(system_program, "mainnet", require_on_curve=True)
    with pytest.raises(CryptoError):
        chain.address(bytes(32), "mainnet")


def test_seed_must_be_32_bytes_and_is_never_echoed() -> None:
    for bad in (b"", SEED[:31], SEED + SEED):
        with pytest.raises(CryptoError, match="32-byte seed") as info:
            sol.public_key_from_seed(bad)
        assert SEED.hex()[:16] not in str(info.value)


def test_chain_registration_and_networks() -> None:
    chain = get_chain("solana")
    assert chain.curve == "ed25519"
    assert chain.networks == {"mainnet", "devnet", "testnet"}
    with pytest.raises(InputError, match="network"):
        chain.validate_address(ADDRESS, "localnet")


# --- Ed25519 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", load("solana_ed25519_rfc8032.json")["cases"], ids=lambda c: c["name"]
)
def test_rfc8032_vectors(case: dict[str, str]) -> None:
    seed = bytes.fromhex(case["secret_key"])
    public_key = bytes.fromhex(case["public_key"])
    message = bytes.fromhex(case["message"])
    signature = bytes.fromhex(case["signature"])
    assert sol.public_key_from_seed(seed) == public_key
    assert sol.sign_ed25519(seed, message) == signature
    sol.verify_ed25519(public_key, message, signature)
    with pytest.raises(VerificationError):
        sol.verify_ed25519(public_key, message + b"\x00", signature)


def _non_canonical(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:], "little")
    return signature[:32] + (s + sol.ED25519_L).to_bytes(32, "little")


def test_non_canonical_s_is_refused() -> None:
    case = load("solana_ed25519_rfc8032.json")["cases"][1]
    public_key = bytes.fromhex(case["public_key"])
    message = bytes.fromhex(case["message"])
    malleated = _non_canonical(bytes.fromhex(case["signature"]))
    with pytest.raises(VerificationError, match="non-canonical"):
        sol.verify_ed25519(public_key, message, malleated)
    # libsodium refuses it on its own as well; our check only names the reason.
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.signing.VerifyKey(public_key).verify(message, malleated)


# --- off-chain message layouts ----------------------------------------------------------


OFFCHAIN = load("solana_offchain.json")


@pytest.mark.parametrize("case", OFFCHAIN["legacy_layout"]["cases"], ids=lambda c: c["message"])
def test_agave_crate_legacy_layout_vectors(case: dict[str, Any]) -> None:
    serialized = sol.serialize_offchain_message_legacy(case["message"].encode("utf-8"))
    assert serialized.hex() == case["serialized"]
    assert serialized[17] == case["format"]
    assert sha256_base58(serialized) == case["sha256_base58"]


def test_agave_branch_proposal_layout_vector() -> None:
    case = OFFCHAIN["proposal_layout_agave"]["cases"][0]
    serialized = sol.serialize_offchain_message(
        case["message"].encode("utf-8"),
        signers=[bytes.fromhex(s) for s in case["signers"]],
        application_domain=bytes.fromhex(case["application_domain"]),
    )
    assert serialized[16 + 1 + 32] == case["format"]
    assert sha256_base58(serialized) == case["sha256_base58"]


def test_kit_proposal_layout_vector() -> None:
    group = OFFCHAIN["proposal_layout_kit"]
    domain = bytes.fromhex(group["application_domain"])
    signers = [bytes.fromhex(s) for s in group["signers"]]
    assert b58decode(group["application_domain_base58"]) == domain
    assert [b58decode(s) for s in group["signers_base58"]] == signers
    case = next(c for c in group["cases"] if c["valid"])
    serialized = bytes.fromhex(case["serialized"])
    message = case["message"].encode("utf-8")
    assert (
        sol.serialize_offchain_message(message, signers=signers, application_domain=domain)
        == serialized
    )
    parsed = sol.parse_offchain_message(serialized)
    assert parsed == sol.OffchainMessage(
        application_domain=domain,
        format=sol.MessageFormat(case["format"]),
        signers=tuple(signers),
        message=message,
    )


def test_newline_is_not_restricted_ascii_in_header_version_0() -> None:
    group = OFFCHAIN["proposal_layout_kit"]
    case = next(c for c in group["cases"] if not c["valid"])
    with pytest.raises(InputError, match="requires 1"):
        sol.parse_offchain_message(bytes.fromhex(case["serialized"]))
    assert sol.message_format_for(b"Hello\nworld") is sol.MessageFormat.LIMITED_UTF8


def test_proposal_layout_field_by_field() -> None:
    public_key = sol.public_key_from_seed(SEED)
    serialized = sol.serialize_offchain_message(b"hi", signers=[public_key])
    assert serialized[:16] == b"\xffsolana offchain"
    assert serialized[16] == 0  # header version
    assert serialized[17:49] == bytes(32)  # application domain
    assert serialized[49] == 0  # restricted ASCII
    assert serialized[50] == 1  # signer count
    assert serialized[51:83] == public_key
    assert serialized[83:85] == b"\x02\x00"  # little-endian length
    assert serialized[85:] == b"hi"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"a" * (1232 - 85), sol.MessageFormat.RESTRICTED_ASCII),
        (b"a" * (1232 - 85 + 1), sol.MessageFormat.EXTENDED_UTF8),
        ("é".encode() * 573 + b"a", sol.MessageFormat.LIMITED_UTF8),  # 1147 bytes
        ("é".encode() * 574, sol.MessageFormat.EXTENDED_UTF8),  # 1148 bytes
        (b"a" * (65535 - 85), sol.MessageFormat.EXTENDED_UTF8),
        (b"tab\there", sol.MessageFormat.LIMITED_UTF8),
        (b"\x7f", sol.MessageFormat.LIMITED_UTF8),
    ],
)
def test_format_follows_content_and_total_length(
    message: bytes, expected: sol.MessageFormat
) -> None:
    assert sol.message_format_for(message) is expected
    serialized = sol.serialize_offchain_message(message, signers=[bytes(32)])
    assert serialized[49] == expected
    assert sol.parse_offchain_message(serialized).message == message


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"", "empty"),
        (b"a" * (65535 - 85 + 1), "exceeds"),
        (b"\xff\xfe", "UTF-8"),
        (b"a" * 2000 + b"\xff", "UTF-8"),
    ],
)
def test_unserialisable_messages_are_refused(message: bytes, match: str) -> None:
    with pytest.raises(InputError, match=match):
        sol.serialize_offchain_message(message, signers=[bytes(32)])


def test_serialiser_refuses_bad_signers_and_domains() -> None:
    with pytest.raises(InputError, match="signers"):
        sol.serialize_offchain_message(b"x", signers=[])
    with pytest.raises(InputError, match="signers"):
        sol.serialize_offchain_message(b"x", signers=[bytes(32)] * 256)
    with pytest.raises(InputError, match="32-byte"):
        sol.serialize_offchain_message(b"x", signers=[bytes(31)])
    with pytest.raises(InputError, match="application domain"):
        sol.serialize_offchain_message(b"x", signers=[bytes(32)], application_domain=bytes(31))


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b[:-1], "length field"),
        (lambda b: b + b"!", "length field"),
        (lambda b: b"\x00" + b[1:], "signing domain"),
        (lambda b: b[:16] + b"\x01" + b[17:], "version"),
        (lambda b: b[:49] + b"\x02" + b[50:], "format"),
        (lambda b: b[:50] + b"\x00" + b[51:], "no signers"),
        (lambda b: b[:50] + b"\x09" + b[51:], "shorter than its preamble"),
        (lambda b: b[:20], "shorter than its preamble"),
    ],
)
def test_parser_is_strict(mutate: Any, match: str) -> None:
    good = sol.serialize_offchain_message(b"hello", signers=[bytes(32)])
    with pytest.raises(InputError, match=match):
        sol.parse_offchain_message(mutate(good))


# --- proofs through the Chain interface -------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Tandem proof of control: entity Example Fund, nonce 42",
        "Zürich — 東京 — ✓",
        "multi\nline",
        "a" * 5000,
    ],
)
def test_sign_and_verify_round_trip(message: str) -> None:
    chain = get_chain("solana")
    proof = chain.sign_message(SEED, ADDRESS, message, "mainnet")
    assert proof.format == "solana-offchain-v0"
    assert proof.payload_hex is not None
    payload = bytes.fromhex(proof.payload_hex)
    assert payload == sol.serialize_offchain_message(
        message.encode("utf-8"), signers=[b58decode(ADDRESS)]
    )
    signature = b58decode(proof.signature)
    assert len(signature) == 64
    chain.verify_message(ADDRESS, message, proof, "mainnet")
    chain.verify_message(ADDRESS, message, proof, "testnet", b58decode(ADDRESS))
    # Without the payload the verifier rebuilds it from the message and the address.
    chain.verify_message(ADDRESS, message, MessageProof(proof.format, proof.signature), "devnet")
    # An independent Ed25519 implementation (OpenSSL via cryptography) agrees.
    Ed25519PublicKey.from_public_bytes(b58decode(ADDRESS)).verify(signature, payload)


def test_non_ascii_message_uses_utf8_format() -> None:
    proof = get_chain("solana").sign_message(SEED, ADDRESS, "Тестовое сообщение", "mainnet")
    assert proof.payload_hex is not None
    payload = bytes.fromhex(proof.payload_hex)
    assert payload[49] == sol.MessageFormat.LIMITED_UTF8
    assert payload[85:] == "Тестовое сообщение".encode()


def test_application_domain_is_signed_and_read_back() -> None:
    chain = get_chain("solana")
    assert isinstance(chain, sol.Solana)
    domain = hashlib.sha256(b"tandem").digest()
    proof = chain.sign_message(SEED, ADDRESS, "statement", "mainnet", application_domain=domain)
    assert proof.payload_hex is not None
    assert bytes.fromhex(proof.payload_hex)[17:49] == domain
    chain.verify_message(ADDRESS, "statement", proof, "mainnet")
    # Dropping the payload means a zero domain is assumed, which was not what was signed.
    with pytest.raises(VerificationError):
        chain.verify_message(
            ADDRESS, "statement", MessageProof(proof.format, proof.signature), "mainnet"
        )


def test_tampered_payload_is_refused() -> None:
    chain = get_chain("solana")
    proof = chain.sign_message(SEED, ADDRESS, "pay 10", "mainnet")
    assert proof.payload_hex is not None
    other = sol.serialize_offchain_message(b"pay 99", signers=[b58decode(ADDRESS)]).hex()
    with pytest.raises(VerificationError, match="not the serialisation"):
        chain.verify_message(
            ADDRESS, "pay 10", MessageProof(proof.format, proof.signature, other), "mainnet"
        )
    with pytest.raises(VerificationError, match="does not verify"):
        chain.verify_message(
            ADDRESS, "pay 99", MessageProof(proof.format, proof.signature, other), "mainnet"
        )
    with pytest.raises(VerificationError, match="not an off-chain message"):
        chain.verify_message(
            ADDRESS, "pay 10", MessageProof(proof.format, proof.signature, "zz"), "mainnet"
        )
    legacy = sol.serialize_offchain_message_legacy(b"pay 10").hex()
    with pytest.raises(VerificationError):
        chain.verify_message(
            ADDRESS, "pay 10", MessageProof(proof.format, proof.signature, legacy), "mainnet"
        )


def test_wrong_signer_is_refused() -> None:
    chain = get_chain("solana")
    other_address = b58encode(sol.public_key_from_seed(OTHER_SEED))
    proof = chain.sign_message(OTHER_SEED, other_address, "statement", "mainnet")
    with pytest.raises(VerificationError):
        chain.verify_message(ADDRESS, "statement", proof, "mainnet")
    with pytest.raises(VerificationError):
        chain.verify_message(
            ADDRESS, "statement", MessageProof(proof.format, proof.signature), "mainnet"
        )
    with pytest.raises(VerificationError, match="public key"):
        chain.verify_message(
            ADDRESS, "statement", proof, "mainnet", sol.public_key_from_seed(OTHER_SEED)
        )


def test_non_canonical_s_is_refused_in_a_proof() -> None:
    chain = get_chain("solana")
    proof = chain.sign_message(SEED, ADDRESS, "statement", "mainnet")
    malleated = b58encode(_non_canonical(b58decode(proof.signature)))
    with pytest.raises(VerificationError, match="non-canonical"):
        chain.verify_message(
            ADDRESS,
            "statement",
            MessageProof(proof.format, malleated, proof.payload_hex),
            "mainnet",
        )
    payload = bytes.fromhex(proof.payload_hex or "")
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(b58decode(ADDRESS)).verify(b58decode(malleated), payload)


@pytest.mark.parametrize(
    "signature", ["", "0OIl", "1" * 64, b58encode(bytes(63)), b58encode(bytes(65))]
)
def test_malformed_signatures_are_refused(signature: str) -> None:
    with pytest.raises(VerificationError):
        get_chain("solana").verify_message(
            ADDRESS, "statement", MessageProof("solana-offchain-v0", signature), "mainnet"
        )


def test_other_formats_cannot_be_verified() -> None:
    with pytest.raises(CannotVerifyError):
        get_chain("solana").verify_message(
            ADDRESS, "statement", MessageProof("eip191", "0x00"), "mainnet"
        )


def test_sign_refuses_a_key_that_does_not_control_the_address() -> None:
    with pytest.raises(CryptoError, match="does not control") as info:
        get_chain("solana").sign_message(OTHER_SEED, ADDRESS, "statement", "mainnet")
    assert OTHER_SEED.hex() not in str(info.value)
    assert b58encode(OTHER_SEED) not in str(info.value)


def test_unencodable_message_is_refused() -> None:
    with pytest.raises(InputError, match="UTF-8"):
        get_chain("solana").sign_message(SEED, ADDRESS, "\ud800", "mainnet")
