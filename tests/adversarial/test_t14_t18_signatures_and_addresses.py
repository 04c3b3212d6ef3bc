"""THREATS 14 (signature malleability) and 18 (invalid addresses refused before anything
is proposed): each refusal has its stable code, changes no state, decrypts no key, and
(for requests) leaves an audit entry."""

from __future__ import annotations

import json
from typing import Any

import coincurve
import nacl.signing
import pytest
from sqlalchemy import text
from tests.conftest import World
from tests.helpers.withdrawals import btc_intent, eth_intent, setup

from tandem.core import split
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains import secp256k1, solana
from tandem.errors import RemoteError, VerificationError

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
DIGEST = bytes(range(32))


# --- 14: ECDSA determinism and low-S, Ed25519 canonical S --------------------------------


def test_rfc6979_same_key_and_digest_give_the_same_signature() -> None:
    assert secp256k1.sign_digest_der(KEY, DIGEST) == secp256k1.sign_digest_der(KEY, DIGEST)
    assert secp256k1.sign_digest_recoverable(KEY, DIGEST) == secp256k1.sign_digest_recoverable(KEY, DIGEST)


def test_our_ecdsa_signatures_are_low_s() -> None:
    for i in range(64):
        _r, s, _v = secp256k1.sign_digest_recoverable(KEY, bytes([i]) * 32)
        assert 0 < s <= secp256k1.HALF_ORDER


def _high_s_der(der: bytes) -> bytes:
    r, s = secp256k1.decode_der(der)
    s = secp256k1.ORDER - s

    def integer(v: int) -> bytes:
        raw = v.to_bytes((v.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(raw)]) + raw

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def test_high_s_ecdsa_from_outside_is_refused() -> None:
    der = secp256k1.sign_digest_der(KEY, DIGEST)
    pub = secp256k1.public_key(KEY)
    secp256k1.verify_digest_der(pub, der, DIGEST)
    with pytest.raises(VerificationError, match="high"):
        secp256k1.verify_digest_der(pub, _high_s_der(der), DIGEST)


def test_high_s_eip191_signature_is_refused() -> None:
    address = eth.address_from_private_key(KEY)
    sig = bytes.fromhex(eth.sign_personal_message(KEY, b"proof")[2:])
    s = int.from_bytes(sig[32:64], "big")
    flipped = sig[:32] + (secp256k1.ORDER - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    assert eth.recover_personal_signer(b"proof", "0x" + sig.hex()) == address
    with pytest.raises(VerificationError):
        eth.recover_personal_signer(b"proof", "0x" + flipped.hex())


def test_ed25519_non_canonical_s_is_refused() -> None:
    seed = bytes(32)
    signer = nacl.signing.SigningKey(seed)
    message = b"tandem"
    sig = bytes(signer.sign(message).signature)
    s = int.from_bytes(sig[32:], "little") + solana.ED25519_L
    forged = sig[:32] + s.to_bytes(32, "little")
    assert solana.verify_ed25519(bytes(signer.verify_key), message, sig) is None
    with pytest.raises(VerificationError):
        solana.verify_ed25519(bytes(signer.verify_key), message, forged)


def test_libsecp256k1_itself_refuses_high_s() -> None:
    """Belt and braces: even without our explicit check the verifier would refuse."""
    der = secp256k1.sign_digest_der(KEY, DIGEST)
    assert not coincurve.PublicKey(secp256k1.public_key(KEY)).verify(_high_s_der(der), DIGEST, hasher=None)


# --- 18: invalid addresses refused before anything is proposed ---------------------------


BAD_ADDRESSES: list[tuple[str, str, str]] = [
    # (chain, network, address) — each is wrong in one way
    ("bitcoin", "testnet", "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsy"),  # bad bech32 checksum
    ("bitcoin", "testnet", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),  # mainnet address on testnet
    ("bitcoin", "testnet", "tb1qW508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"),  # mixed case
    ("ethereum", "sepolia", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),  # EIP-55 case error
    ("ethereum", "sepolia", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA"),  # too short
    ("ethereum", "sepolia", "0x0000000000000000000000000000000000000000"),  # zero address
]


@pytest.mark.parametrize(("chain", "network", "address"), BAD_ADDRESSES)
def test_chain_modules_refuse_invalid_addresses(chain: str, network: str, address: str) -> None:
    from tandem.core.chains import get_chain
    from tandem.errors import InvalidAddressError

    with pytest.raises(InvalidAddressError):
        get_chain(chain).validate_address(address, network)


def _counts(world: World) -> dict[str, int]:
    with world.svc.db.read() as session:
        conn = session.connection()
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
            for t in ("withdrawal", "proposal", "addressbookrow", "operationshare")
        }


@pytest.fixture
def decryptions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = split.decrypt_private_key

    def counting(*args: Any, **kwargs: Any) -> bytearray:
        seen.append(kwargs.get("key_id", "?"))
        return real(*args, **kwargs)

    monkeypatch.setattr(split, "decrypt_private_key", counting)
    return seen


@pytest.mark.parametrize(("chain", "network", "address"), BAD_ADDRESSES)
def test_invalid_destination_refused_before_a_withdrawal_exists(
    world: World, decryptions: list[str], chain: str, network: str, address: str
) -> None:
    s = setup(world)
    intent = btc_intent(s, destination=address) if chain == "bitcoin" else eth_intent(s, destination=address)
    before = _counts(world)
    with pytest.raises((RemoteError, Exception)) as err:
        world.client.withdrawals.create(world["alice"], intent)
    code = getattr(err.value, "remote_code", getattr(err.value, "code", None))
    assert code in {"invalid_address", "destination_not_allowed"}, err.value
    after = _counts(world)
    # The operation key request may exist (it is made before the intent is sent), but no
    # withdrawal, proposal or address-book change does, and no key was decrypted.
    assert after["withdrawal"] == before["withdrawal"]
    assert after["proposal"] == before["proposal"]
    assert after["addressbookrow"] == before["addressbookrow"]
    assert decryptions == []


@pytest.mark.parametrize(("chain", "network", "address"), BAD_ADDRESSES)
def test_invalid_address_book_entry_refused_and_audited(
    world: World, chain: str, network: str, address: str
) -> None:
    before = _counts(world)
    with pytest.raises(RemoteError) as err:
        world.client.policy.propose_address(
            world["alice"], chain=chain, network=network, address=address, label="x"
        )
    assert err.value.remote_code in {"invalid_address", "invalid_input"}
    assert _counts(world) == before
    lines, _ = world.client.audit.export(world["olga"])
    refusals = [json.loads(line) for line in lines if '"outcome":"refused"' in line]
    assert refusals
    assert refusals[-1]["code"] == err.value.remote_code


def test_valid_addresses_still_accepted() -> None:
    assert btc.validate_address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "testnet")
    assert eth.validate_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
