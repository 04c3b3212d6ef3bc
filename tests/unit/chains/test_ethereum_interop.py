"""Ethereum module checked against an independent implementation (eth-account)."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from hexbytes import HexBytes
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.chains import ethereum as eth
from tandem.core.chains import get_chain, secp256k1

KEYS = [
    bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"),
    bytes.fromhex("b25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364"),
    (secp256k1.ORDER - 1).to_bytes(32, "big"),
    (1).to_bytes(32, "big"),
]
TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
RECIPIENT = "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"


def fields_native(chain: str = "mainnet") -> dict[str, Any]:
    return {
        "chain_id": eth.CHAIN_IDS[chain],
        "nonce": 0,
        "max_priority_fee_per_gas": 2 * 10**9,
        "max_fee_per_gas": 40 * 10**9,
        "gas_limit": 21_000,
        "to": RECIPIENT,
        "value": 123_456_789_000_000_000,
        "data": b"",
    }


def fields_erc20(chain: str = "holesky") -> dict[str, Any]:
    return {
        "chain_id": eth.CHAIN_IDS[chain],
        "nonce": 2**32 + 5,
        "max_priority_fee_per_gas": 1,
        "max_fee_per_gas": 10**12,
        "gas_limit": 90_000,
        "to": TOKEN,
        "value": 0,
        "data": eth.erc20_transfer_calldata(RECIPIENT, 2**200 + 1),
    }


def as_eth_account_dict(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": fields["chain_id"],
        "nonce": fields["nonce"],
        "maxPriorityFeePerGas": fields["max_priority_fee_per_gas"],
        "maxFeePerGas": fields["max_fee_per_gas"],
        "gas": fields["gas_limit"],
        "to": fields["to"],
        "value": fields["value"],
        "data": fields["data"],
        "accessList": [],
    }


CASES = [
    pytest.param(fields_native(), id="native-mainnet"),
    pytest.param(fields_native("sepolia"), id="native-sepolia"),
    pytest.param(fields_erc20(), id="erc20-holesky"),
]


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
@pytest.mark.parametrize("fields", CASES)
def test_eth_account_recovers_our_signer(fields: dict[str, Any], key: bytes) -> None:
    signed, _ = eth.sign_eip1559(eth.build_eip1559(**fields), key)
    assert Account.recover_transaction(signed) == eth.address_from_private_key(key)
    assert Account.from_key(key).address == eth.address_from_private_key(key)


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
@pytest.mark.parametrize("fields", CASES)
def test_eth_account_produces_identical_bytes(fields: dict[str, Any], key: bytes) -> None:
    # Both sides use RFC 6979 nonces, so the same fields and key give the same bytes.
    ours, our_hash = eth.sign_eip1559(eth.build_eip1559(**fields), key)
    theirs = Account.sign_transaction(as_eth_account_dict(fields), key)
    assert ours == bytes(theirs.raw_transaction)
    assert our_hash == "0x" + bytes(theirs.hash).hex()


@pytest.mark.parametrize("fields", CASES)
def test_eth_account_decodes_the_same_fields(fields: dict[str, Any]) -> None:
    raw = eth.build_eip1559(**fields)
    signed, _ = eth.sign_eip1559(raw, KEYS[0])
    theirs = TypedTransaction.from_bytes(HexBytes(signed))
    assert bytes(theirs.hash()) == eth.signing_hash(raw)
    decoded = theirs.as_dict()
    ours = eth.decode_transaction(signed)
    assert decoded["type"] == 2
    assert decoded["chainId"] == ours.chain_id == fields["chain_id"]
    assert decoded["nonce"] == ours.nonce == fields["nonce"]
    assert decoded["maxPriorityFeePerGas"] == ours.max_priority_fee_per_gas
    assert decoded["maxFeePerGas"] == ours.max_fee_per_gas
    assert decoded["gas"] == ours.gas_limit
    assert ours.to is not None
    assert bytes(decoded["to"]) == bytes.fromhex(ours.to[2:])
    assert decoded["value"] == ours.value
    assert bytes(decoded["data"]) == ours.data
    assert tuple(decoded["accessList"]) == ours.access_list == ()
    assert (decoded["v"], decoded["r"], decoded["s"]) == (ours.y_parity, ours.r, ours.s)


def test_we_recover_transactions_eth_account_signs() -> None:
    for key in KEYS:
        theirs = Account.sign_transaction(as_eth_account_dict(fields_erc20()), key)
        assert eth.recover_sender(bytes(theirs.raw_transaction)) == Account.from_key(key).address


@pytest.mark.parametrize(
    "message",
    [
        "Tandem proof of control: entity Example Fund, nonce 42",
        "Zürich — 東京 — ✓ — 🧾",
        "",
        "line one\nline two\r\n\ttabbed",
        "x" * 1000,
    ],
)
@pytest.mark.parametrize("key", KEYS[:2], ids=range(2))
def test_eth_account_recovers_our_eip191_signatures(message: str, key: bytes) -> None:
    chain = get_chain("ethereum")
    address = eth.address_from_private_key(key)
    proof = chain.sign_message(key, address, message, "mainnet")
    assert Account.recover_message(encode_defunct(text=message), signature=proof.signature) == (
        address
    )
    theirs = Account.sign_message(encode_defunct(text=message), key)
    assert proof.signature == "0x" + bytes(theirs.signature).hex()
    chain.verify_message(address, message, proof, "mainnet")


@settings(max_examples=25, deadline=None)
@given(st.text(max_size=200))
def test_eip191_agrees_with_eth_account_on_any_text(message: str) -> None:
    try:
        data = message.encode("utf-8")
    except UnicodeEncodeError:
        return
    ours = eth.sign_personal_message(KEYS[0], data)
    theirs = Account.sign_message(encode_defunct(primitive=data), KEYS[0])
    assert ours == "0x" + bytes(theirs.signature).hex()
    assert eth.recover_personal_signer(data, ours) == Account.from_key(KEYS[0]).address


@settings(max_examples=25, deadline=None)
@given(
    nonce=st.integers(min_value=0, max_value=2**64 - 1),
    priority=st.integers(min_value=0, max_value=10**15),
    extra=st.integers(min_value=0, max_value=10**15),
    gas=st.integers(min_value=21_000, max_value=30_000_000),
    value=st.integers(min_value=0, max_value=2**256 - 1),
)
def test_random_transactions_match_eth_account(
    nonce: int, priority: int, extra: int, gas: int, value: int
) -> None:
    fields = fields_native("sepolia") | {
        "nonce": nonce,
        "max_priority_fee_per_gas": priority,
        "max_fee_per_gas": priority + extra,
        "gas_limit": gas,
        "value": value,
    }
    ours, _ = eth.sign_eip1559(eth.build_eip1559(**fields), KEYS[1])
    theirs = Account.sign_transaction(as_eth_account_dict(fields), KEYS[1])
    assert ours == bytes(theirs.raw_transaction)
