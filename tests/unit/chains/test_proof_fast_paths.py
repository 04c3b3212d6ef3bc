"""The shortcuts on the proof-signing and verification paths against the plain
definitions they replace: keccak-256 through pycryptodome's C core, EIP-55 with byte
masks, OpenSSL's RIPEMD-160, the BIP-322 tagged-hash midstate; and the per-key caches
of the signers, which must never let a key sign for an address it does not control."""

from __future__ import annotations

import hashlib
import os

import coincurve
import pytest
from Crypto.Hash import RIPEMD160, keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.cli.parallel import chunk_runner
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains import secp256k1
from tandem.core.chains.base import MessageProof
from tandem.errors import CryptoError, VerificationError


def _reference_checksum(address20: bytes) -> str:
    lower = address20.hex()
    digest = keccak.new(digest_bits=256, data=lower.encode("ascii")).hexdigest()
    return "0x" + "".join(
        c.upper() if c > "9" and int(h, 16) >= 8 else c for c, h in zip(lower, digest[:40], strict=True)
    )


def _key() -> tuple[bytes, bytes]:
    while True:
        private = os.urandom(32)
        if secp256k1.is_valid_private_key(private):
            return private, secp256k1.public_key(private)


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_keccak_matches_pycryptodome_public_api(data: bytes) -> None:
    assert eth.keccak256(data) == keccak.new(digest_bits=256, data=data).digest()


def test_keccak_uses_the_direct_call_where_available() -> None:
    empty = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert eth.keccak256 is not eth._keccak256_pycryptodome
    assert eth.keccak256(b"") == bytes.fromhex(empty)


@settings(max_examples=300)
@given(st.binary(min_size=20, max_size=20))
def test_eip55_masks_match_the_character_loop(address20: bytes) -> None:
    assert eth.to_checksum_address(address20) == _reference_checksum(address20)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_hash160_matches_pycryptodome(data: bytes) -> None:
    expected = RIPEMD160.new(hashlib.sha256(data).digest()).digest()
    assert btc.hash160(data) == expected
    assert btc._ripemd160_pycryptodome(data) == btc.ripemd160(data)


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_bip322_midstate_is_the_tagged_hash(message: str) -> None:
    data = message.encode("utf-8", "surrogatepass")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert btc.bip322_message_hash(message) == btc.tagged_hash(btc.BIP322_TAG, data)


def test_bitcoin_signing_cache_never_signs_for_another_key() -> None:
    (priv_a, pub_a), (priv_b, pub_b) = _key(), _key()
    address = btc.p2wpkh_address(pub_a, "mainnet")
    proof = btc.BITCOIN.sign_message(priv_a, address, "one", "mainnet", public_key=pub_a)
    btc.BITCOIN.verify_message(address, "one", proof, "mainnet", public_key=pub_a)
    # The cached (address, key) pair is A's; B's key, given or derived, is refused.
    with pytest.raises(CryptoError):
        btc.BITCOIN.sign_message(priv_b, address, "two", "mainnet", public_key=pub_b)
    with pytest.raises(CryptoError):
        btc.BITCOIN.sign_message(priv_b, address, "two", "mainnet")
    # B's private key handed in with A's public key: the self-check refuses the signature.
    with pytest.raises(CryptoError):
        btc.BITCOIN.sign_message(priv_b, address, "two", "mainnet", public_key=pub_a)


def test_bitcoin_given_key_must_be_the_witness_key() -> None:
    (priv_a, pub_a), (_priv_b, pub_b) = _key(), _key()
    address = btc.p2wpkh_address(pub_a, "mainnet")
    proof = btc.BITCOIN.sign_message(priv_a, address, "one", "mainnet")
    with pytest.raises(VerificationError):
        btc.BITCOIN.verify_message(address, "one", proof, "mainnet", public_key=pub_b)
    with pytest.raises(VerificationError):
        btc.BITCOIN.verify_message(address, "two", proof, "mainnet", public_key=pub_a)
    with pytest.raises(CryptoError):
        btc.BITCOIN.verify_message(address, "one", proof, "mainnet", public_key=b"\x02" + bytes(32))


def test_ethereum_signing_cache_never_signs_for_another_key() -> None:
    (priv_a, pub_a), (priv_b, pub_b) = _key(), _key()
    address = eth.address_from_public_key(pub_a)
    proof = eth.ETHEREUM.sign_message(priv_a, address, "one", "mainnet", public_key=pub_a)
    eth.ETHEREUM.verify_message(address, "one", proof, "mainnet", public_key=pub_a)
    with pytest.raises(CryptoError):
        eth.ETHEREUM.sign_message(priv_b, address, "two", "mainnet", public_key=pub_b)
    with pytest.raises(CryptoError):
        eth.ETHEREUM.sign_message(priv_b, address, "two", "mainnet")


def test_ethereum_recovered_key_other_than_given_fails() -> None:
    (_priv_a, pub_a), (priv_b, pub_b) = _key(), _key()
    address_b = eth.address_from_public_key(pub_b)
    proof = eth.ETHEREUM.sign_message(priv_b, address_b, "one", "mainnet")
    eth.ETHEREUM.verify_message(address_b, "one", proof, "mainnet", public_key=pub_b)
    eth.ETHEREUM.verify_message(
        address_b, "one", proof, "mainnet", public_key=coincurve.PublicKey(pub_b).format(compressed=False)
    )
    with pytest.raises(VerificationError):
        eth.ETHEREUM.verify_message(address_b, "two", proof, "mainnet", public_key=pub_b)
    with pytest.raises(VerificationError):
        eth.ETHEREUM.verify_message(address_b, "one", proof, "mainnet", public_key=pub_a)
    forged = MessageProof("eip191", proof.signature[:-2] + ("1c" if proof.signature[-2:] == "1b" else "1b"))
    with pytest.raises(VerificationError):
        eth.ETHEREUM.verify_message(address_b, "one", forged, "mainnet", public_key=pub_b)


def _square(chunk: list[int]) -> list[int]:
    return [x * x for x in chunk]


def test_runner_hands_chunks_through_the_fork_and_clears_them() -> None:
    from tandem.cli import parallel

    runner = chunk_runner(2, 5000)
    if runner is None:
        pytest.skip("no fork on this platform")
    chunks = [list(range(i, i + 10)) for i in range(0, 100, 10)]
    assert list(runner(_square, chunks)) == [_square(c) for c in chunks]
    assert parallel._JOB is None
    assert list(runner(_square, chunks[:3])) == [_square(c) for c in chunks[:3]]
