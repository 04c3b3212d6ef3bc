"""Bitcoin addresses against BIP-173/BIP-350/BIP-84 vectors and python-bitcoinlib."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bitcoin.core import x
from bitcoin.core.key import CPubKey
from bitcoin.wallet import CBitcoinAddress, P2PKHBitcoinAddress
from hypothesis import given
from hypothesis import strategies as st

from tandem.core.chains import bitcoin as btc
from tandem.core.chains.bech32 import (
    Encoding,
    bech32_decode,
    bech32_encode,
    decode_segwit_address,
    encode_segwit_address,
)
from tandem.errors import CryptoError, InputError, InvalidAddressError

VECTORS = Path(__file__).parents[2] / "vectors"
HRP_NETWORK = {"bc": "mainnet", "tb": "testnet"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["source"]
    return data


BIP173 = load("bitcoin_bip173.json")
BIP350 = load("bitcoin_bip350.json")
BIP84 = load("bitcoin_bip84.json")


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(s, Encoding.BECH32) for s in BIP173["valid_bech32"]]
    + [(s, Encoding.BECH32M) for s in BIP350["valid_bech32m"]],
)
def test_valid_bech32_strings_decode_and_reencode(text: str, encoding: Encoding) -> None:
    hrp, data, got = bech32_decode(text)
    assert got is encoding
    assert bech32_encode(hrp, data, encoding) == text.lower()


@pytest.mark.parametrize(
    "text",
    [v["string"] for v in BIP173["invalid_bech32"] + BIP350["invalid_bech32m"]],
)
def test_invalid_bech32_strings_are_refused(text: str) -> None:
    with pytest.raises(InvalidAddressError):
        bech32_decode(text)


@pytest.mark.parametrize(
    "vector", BIP350["valid_addresses"] + BIP173["valid_v0_addresses"], ids=lambda v: v["address"]
)
def test_valid_segwit_addresses_decode_to_their_script(vector: dict[str, str]) -> None:
    address = vector["address"]
    hrp = address.lower().rpartition("1")[0]
    version, program = decode_segwit_address(hrp, address)
    script = bytes([0x50 + version if version else 0, len(program)]) + program
    assert script.hex() == vector["script_pubkey"]
    assert encode_segwit_address(hrp, version, program) == address.lower()


@pytest.mark.parametrize(
    "vector",
    BIP173["invalid_addresses"] + BIP350["invalid_addresses"],
    ids=lambda v: v["reason"],
)
def test_invalid_segwit_addresses_are_refused_on_every_network(vector: dict[str, str]) -> None:
    for network in btc.NETWORKS:
        with pytest.raises(InvalidAddressError):
            btc.address_to_script(vector["address"], network)


# Addresses that are valid BIP-350 strings but pay no defined output type (or an
# off-curve taproot key): sending there burns the coins, so Tandem refuses them.
UNSPENDABLE = {
    "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
    "BC1SW50QGDZ25J",
    "bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs",
}


@pytest.mark.parametrize("vector", BIP350["valid_addresses"], ids=lambda v: v["address"])
def test_address_to_script_accepts_only_defined_output_types(vector: dict[str, str]) -> None:
    address = vector["address"]
    network = HRP_NETWORK[address.lower()[:2]]
    if address in UNSPENDABLE:
        with pytest.raises(InvalidAddressError, match="not a spendable output type"):
            btc.address_to_script(address, network)
    else:
        assert btc.address_to_script(address, network).hex() == vector["script_pubkey"]
        assert btc.validate_address(address, network) == address.lower()


def test_off_curve_taproot_key_is_refused() -> None:
    address = encode_segwit_address("bc", 1, (5).to_bytes(32, "big"))  # x = 5 is not on the curve
    with pytest.raises(InvalidAddressError, match="not on the curve"):
        btc.address_to_script(address, "mainnet")


@pytest.mark.parametrize("vector", BIP84["keys"], ids=lambda v: v["path"])
def test_bip84_first_keys(vector: dict[str, str]) -> None:
    pubkey = bytes.fromhex(vector["pubkey"])
    assert btc.p2wpkh_address(pubkey, "mainnet") == vector["address"]
    assert btc.BITCOIN.address(pubkey, "mainnet") == vector["address"]
    decoded = btc.decode_address(vector["address"], "mainnet")
    assert decoded.kind == "p2wpkh"
    assert decoded.script_pubkey == b"\x00\x14" + btc.hash160(pubkey)


@pytest.mark.parametrize(
    ("address", "network", "match"),
    [
        ("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "testnet", "for mainnet, not testnet"),
        ("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "regtest", "for mainnet, not regtest"),
        (
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
            "mainnet",
            "for testnet/signet, not mainnet",
        ),
        ("15CRxFdyRpGZLW9w8HnHvVduizdL5jKNbs", "testnet", "for mainnet, not testnet"),
        ("3B5fQsEXEaV8v6U3ejYc8XaKXAkyQj2MjV", "signet", "for mainnet, not signet"),
        ("mvbu1Gdy8SUjTenqerxUaZyYjmveZvt33q", "mainnet", "not mainnet"),
    ],
)
def test_wrong_network_is_refused(address: str, network: str, match: str) -> None:
    with pytest.raises(InvalidAddressError, match=match):
        btc.validate_address(address, network)


def test_regtest_uses_bcrt() -> None:
    pubkey = bytes.fromhex(BIP84["keys"][0]["pubkey"])
    address = btc.p2wpkh_address(pubkey, "regtest")
    assert address.startswith("bcrt1q")
    assert btc.address_to_script(address, "regtest") == b"\x00\x14" + btc.hash160(pubkey)
    with pytest.raises(InvalidAddressError, match="for regtest, not testnet"):
        btc.address_to_script(address, "testnet")


def test_clear_messages_for_common_mistakes() -> None:
    good = "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    with pytest.raises(InvalidAddressError, match="checksum is wrong"):
        btc.validate_address(good[:-1] + "v", "mainnet")
    with pytest.raises(InvalidAddressError, match="mixes upper and lower case"):
        btc.validate_address("bc1qCR8te4kr609gcawutmrza0j4xv80jy8z306fyu", "mainnet")
    with pytest.raises(InvalidAddressError, match="checksum is wrong"):
        btc.validate_address("15CRxFdyRpGZLW9w8HnHvVduizdL5jKNbt", "mainnet")
    with pytest.raises(InvalidAddressError, match="not base58"):
        btc.validate_address("15CRxFdyRpGZLW9w8HnHvVduizdL5jKNb0", "mainnet")
    with pytest.raises(InvalidAddressError, match="empty"):
        btc.validate_address("", "mainnet")
    with pytest.raises(InvalidAddressError):
        btc.validate_address(f" {good}", "mainnet")


def test_upper_case_bech32_is_normalised() -> None:
    upper = "BC1QCR8TE4KR609GCAWUTMRZA0J4XV80JY8Z306FYU"
    assert btc.BITCOIN.validate_address(upper, "mainnet") == upper.lower()


def test_unknown_network_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown bitcoin network 'liquid'"):
        btc.validate_address("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "liquid")


def test_uncompressed_or_invalid_keys_have_no_address() -> None:
    pubkey = bytes.fromhex(BIP84["keys"][0]["pubkey"])
    with pytest.raises(CryptoError):
        btc.p2wpkh_address(btc.secp256k1.uncompressed(pubkey), "mainnet")
    with pytest.raises(CryptoError):
        btc.p2pkh_address(b"\x02" + (5).to_bytes(32, "big"), "mainnet")


@pytest.mark.parametrize("vector", BIP84["keys"], ids=lambda v: v["path"])
def test_base58_addresses_agree_with_python_bitcoinlib(vector: dict[str, str]) -> None:
    pubkey = bytes.fromhex(vector["pubkey"])
    address = btc.p2pkh_address(pubkey, "mainnet")
    assert address == str(P2PKHBitcoinAddress.from_pubkey(CPubKey(pubkey)))
    assert btc.address_to_script(address, "mainnet") == bytes(CBitcoinAddress(address).to_scriptPubKey())


def test_p2sh_destination_agrees_with_python_bitcoinlib() -> None:
    address = "3B5fQsEXEaV8v6U3ejYc8XaKXAkyQj2MjV"
    decoded = btc.decode_address(address, "mainnet")
    assert decoded.kind == "p2sh"
    assert decoded.script_pubkey == bytes(CBitcoinAddress(address).to_scriptPubKey())
    assert btc.script_to_address(decoded.script_pubkey, "mainnet") == address


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu", "mainnet"),
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "testnet"),
        ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", "mainnet"),
        ("15CRxFdyRpGZLW9w8HnHvVduizdL5jKNbs", "mainnet"),
        ("3B5fQsEXEaV8v6U3ejYc8XaKXAkyQj2MjV", "mainnet"),
        ("mvbu1Gdy8SUjTenqerxUaZyYjmveZvt33q", "testnet"),
    ],
)
def test_script_to_address_inverts_address_to_script(address: str, network: str) -> None:
    assert btc.script_to_address(btc.address_to_script(address, network), network) == address


def test_script_to_address_has_no_answer_for_other_scripts() -> None:
    assert btc.script_to_address(b"\x6a\x04abcd", "mainnet") is None
    assert btc.script_to_address(x("6002751e"), "mainnet") is None


@given(
    version=st.sampled_from([0, 1]),
    program=st.binary(min_size=20, max_size=20) | st.binary(min_size=32, max_size=32),
    hrp=st.sampled_from(["bc", "tb", "bcrt"]),
)
def test_segwit_encoding_round_trips(version: int, program: bytes, hrp: str) -> None:
    if version == 1 and len(program) != 32:
        program = program.ljust(32, b"\x00")
    address = encode_segwit_address(hrp, version, program)
    assert decode_segwit_address(hrp, address) == (version, program)
    assert decode_segwit_address(hrp, address.upper()) == (version, program)


@given(payload=st.binary(min_size=1, max_size=40))
def test_base58check_round_trips(payload: bytes) -> None:
    assert btc.base58check_decode(btc.base58check_encode(payload)) == payload
