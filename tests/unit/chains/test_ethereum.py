"""Ethereum chain module: published vectors, strict RLP, transaction review and refusals."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.core.chains import ethereum as eth
from tandem.core.chains import get_chain, rlp, secp256k1
from tandem.core.chains.base import MessageProof
from tandem.errors import (
    CannotVerifyError,
    CryptoError,
    DisallowedContractCallError,
    InputError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidTransactionError,
    VerificationError,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors"

KEY = bytes.fromhex("b25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364")
KEY_ADDRESS = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
RECIPIENT = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
SEPOLIA = eth.CHAIN_IDS["sepolia"]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    assert data["source"]
    return data


def unsigned_tx(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "chain_id": SEPOLIA,
        "nonce": 3,
        "max_priority_fee_per_gas": 1_500_000_000,
        "max_fee_per_gas": 30_000_000_000,
        "gas_limit": 21_000,
        "to": RECIPIENT,
        "value": 10**17,
    }
    fields.update(overrides)
    return eth.build_eip1559(**fields)


def erc20_tx(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "to": TOKEN,
        "value": 0,
        "gas_limit": 65_000,
        "data": eth.erc20_transfer_calldata(RECIPIENT, 250_000_000),
    }
    fields.update(overrides)
    return unsigned_tx(**fields)


def raw_tx(fields: list[rlp.RlpEncodable]) -> bytes:
    return b"\x02" + rlp.encode(fields)


def base_fields(**overrides: Any) -> list[rlp.RlpEncodable]:
    values: dict[str, rlp.RlpEncodable] = {
        "chain_id": SEPOLIA,
        "nonce": 3,
        "priority": 1_500_000_000,
        "max_fee": 30_000_000_000,
        "gas": 21_000,
        "to": bytes.fromhex(RECIPIENT[2:]),
        "value": 10**17,
        "data": b"",
        "access": [],
    }
    values.update(overrides)
    return list(values.values())


# --- EIP-55 ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [a for group in load("ethereum_eip55.json")["groups"].values() for a in group],
)
def test_eip55_vectors_checksum_to_themselves(address: str) -> None:
    assert eth.to_checksum_address(bytes.fromhex(address[2:])) == address
    assert eth.validate_address(address) == address
    assert eth.validate_address(address.lower()) == address


def test_eip55_groups_are_all_present() -> None:
    groups = load("ethereum_eip55.json")["groups"]
    assert {"all_caps", "all_lower", "normal"} <= set(groups)


def flip_first_letter(address: str) -> str:
    i = next(i for i, ch in enumerate(address) if i >= 2 and ch.isalpha())
    return address[:i] + address[i].swapcase() + address[i + 1 :]


@pytest.mark.parametrize("address", load("ethereum_eip55.json")["groups"]["normal"])
def test_one_flipped_case_fails_the_checksum(address: str) -> None:
    with pytest.raises(InvalidAddressError, match="EIP-55"):
        eth.validate_address(flip_first_letter(address))


@pytest.mark.parametrize(
    "bad",
    [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",  # 39 digits
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00",  # 42 digits
        "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",  # no 0x
        "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeg",
        " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n",
        "0x５aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe",  # fullwidth digit
        "",
    ],
)
def test_malformed_addresses_are_refused(bad: str) -> None:
    with pytest.raises(InvalidAddressError):
        eth.validate_address(bad)


def test_zero_address_is_refused_as_destination() -> None:
    with pytest.raises(InvalidAddressError, match="zero address"):
        eth.validate_address("0x" + "0" * 40)
    with pytest.raises(InvalidAddressError, match="zero address"):
        get_chain("ethereum").validate_address("0x" + "0" * 40, "mainnet")


def test_address_from_compressed_and_uncompressed_keys_agree() -> None:
    compressed = secp256k1.public_key(KEY, compressed=True)
    uncompressed = secp256k1.public_key(KEY, compressed=False)
    assert eth.address_from_public_key(compressed) == KEY_ADDRESS
    assert eth.address_from_public_key(uncompressed) == KEY_ADDRESS


def test_address_from_an_invalid_key_is_refused() -> None:
    with pytest.raises(CryptoError):
        eth.address_from_public_key(b"\x02" + b"\xff" * 32)


def test_keccak256_is_keccak_not_sha3() -> None:
    # The empty-input digests of Keccak-256 and of FIPS 202 SHA3-256 differ.
    assert eth.keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )


# --- RLP ---------------------------------------------------------------------------------


def _from_json(item: Any) -> rlp.RlpEncodable:
    if isinstance(item, dict):
        value: int = item["int"]
        return value
    if isinstance(item, list):
        return [_from_json(sub) for sub in item]
    return bytes.fromhex(item)


def _decoded_form(item: Any) -> rlp.RlpItem:
    if isinstance(item, dict):
        return rlp.encode_uint(item["int"])
    if isinstance(item, list):
        return [_decoded_form(sub) for sub in item]
    return bytes.fromhex(item)


@pytest.mark.parametrize("case", load("ethereum_rlp.json")["cases"], ids=lambda c: c["name"])
def test_rlp_wiki_examples(case: dict[str, Any]) -> None:
    expected = bytes.fromhex(case["out"])
    assert rlp.encode(_from_json(case["in"])) == expected
    assert rlp.decode(expected) == _decoded_form(case["in"])


@pytest.mark.parametrize(
    ("encoded", "why"),
    [
        ("8100", "single byte below 0x80 wrapped"),
        ("817f", "single byte below 0x80 wrapped"),
        ("b80161", "long form for a short string"),
        ("b900380000", "leading zero in a length"),
        ("f800", "long form for a short list"),
        ("83646f", "truncated string"),
        ("83646f6700", "trailing byte"),
        ("c883636174", "list shorter than declared"),
        ("c2836361", "item runs past its list"),
        ("", "empty input"),
        ("b8", "truncated length"),
    ],
)
def test_rlp_refuses_non_canonical_input(encoded: str, why: str) -> None:
    with pytest.raises(InvalidTransactionError):
        rlp.decode(bytes.fromhex(encoded))


def test_rlp_refuses_deep_nesting() -> None:
    nested: rlp.RlpItem = []
    for _ in range(rlp.MAX_DEPTH + 1):
        nested = [nested]
    deep = rlp.encode(nested)
    with pytest.raises(InvalidTransactionError, match="nesting"):
        rlp.decode(deep)


def test_rlp_integers_refuse_leading_zeros() -> None:
    with pytest.raises(InvalidTransactionError, match="leading zero"):
        rlp.decode_uint(b"\x00\x01", field="nonce")
    with pytest.raises(InvalidTransactionError, match="longer than"):
        rlp.decode_uint(b"\x01" * 33, field="value")
    assert rlp.decode_uint(b"", field="nonce") == 0


def test_rlp_encoder_refuses_what_it_cannot_represent() -> None:
    for bad in (-1, True, "text"):
        with pytest.raises(InvalidTransactionError):
            rlp.encode(bad)


rlp_items: st.SearchStrategy[rlp.RlpItem] = st.recursive(
    st.binary(max_size=80),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@given(rlp_items)
def test_rlp_round_trip(item: rlp.RlpItem) -> None:
    assert rlp.decode(rlp.encode(item)) == item


@given(st.integers(min_value=0, max_value=eth.UINT256_MAX))
def test_rlp_uint_round_trip(value: int) -> None:
    assert rlp.decode_uint(rlp.encode_uint(value), field="x") == value


# --- building and decoding --------------------------------------------------------------


def test_build_layout_is_type_byte_then_nine_field_list() -> None:
    raw = unsigned_tx()
    assert raw[0] == 0x02
    fields = rlp.decode(raw[1:])
    assert isinstance(fields, list)
    assert len(fields) == 9
    assert fields[5] == bytes.fromhex(RECIPIENT[2:])
    assert fields[8] == []


def test_decode_round_trips_build() -> None:
    data = eth.erc20_transfer_calldata(RECIPIENT, 7)
    tx = eth.decode_transaction(erc20_tx(data=data))
    assert tx.chain_id == SEPOLIA
    assert tx.nonce == 3
    assert tx.to == TOKEN
    assert tx.value == 0
    assert tx.data == data
    assert tx.access_list == ()
    assert not tx.is_signed


def test_erc20_calldata_layout() -> None:
    data = eth.erc20_transfer_calldata(RECIPIENT, 1)
    assert data.hex() == (
        "a9059cbb"
        + "000000000000000000000000fb6916095ca1df60bb79ce92ce3ea74c37c5d359"
        + "0000000000000000000000000000000000000000000000000000000000000001"
    )
    assert eth.keccak256(b"transfer(address,uint256)")[:4] == eth.ERC20_TRANSFER_SELECTOR


@pytest.mark.parametrize("amount", [0, -1, 2**256])
def test_erc20_calldata_refuses_bad_amounts(amount: int) -> None:
    with pytest.raises(InvalidAmountError):
        eth.erc20_transfer_calldata(RECIPIENT, amount)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"chain_id": 1337}, InvalidTransactionError),
        ({"nonce": -1}, InvalidTransactionError),
        ({"nonce": 2**64}, InvalidTransactionError),
        ({"gas_limit": 20_999}, InvalidTransactionError),
        ({"max_priority_fee_per_gas": 31_000_000_000}, InvalidTransactionError),
        ({"value": -1}, InvalidAmountError),
        ({"to": RECIPIENT.lower().replace("f", "F", 1)}, InvalidAddressError),
        ({"to": "0x" + "0" * 40}, InvalidAddressError),
    ],
)
def test_build_refuses_nonsense(overrides: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        unsigned_tx(**overrides)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "non-empty"),
        (b"\x01" + rlp.encode(base_fields()), "not EIP-1559"),
        (b"\x02" + rlp.encode(base_fields())[:-1], "truncated|past the end"),
        (b"\x02" + rlp.encode(base_fields()) + b"\x00", "trailing"),
        (raw_tx(base_fields()[:8]), "8 fields"),
        (raw_tx(base_fields(nonce=b"\x00\x03")), "leading zero"),
        (raw_tx(base_fields(to=b"\x11" * 19)), "20 bytes"),
        (raw_tx(base_fields(nonce=[])), "expected a byte string"),
        (raw_tx(base_fields(access=b"")), "expected a list"),
        (raw_tx(base_fields(gas=b"\x01" * 9)), "longer than 8"),
    ],
)
def test_decode_is_strict(raw: bytes, match: str) -> None:
    with pytest.raises(InvalidTransactionError, match=match):
        eth.decode_transaction(raw)


# --- review ------------------------------------------------------------------------------


def test_review_native_transfer() -> None:
    view = eth.review(unsigned_tx(), allowed_tokens=[TOKEN])
    assert view == {
        "chain_id": SEPOLIA,
        "network": "sepolia",
        "nonce": 3,
        "to": RECIPIENT,
        "value": str(10**17),
        "gas_limit": 21_000,
        "max_fee_per_gas": "30000000000",
        "max_priority_fee_per_gas": "1500000000",
        "max_fee": str(21_000 * 30_000_000_000),
        "kind": "native",
    }
    json.dumps(view)


def test_review_erc20_transfer() -> None:
    view = eth.review(erc20_tx(), allowed_tokens=[TOKEN.lower()])
    assert view["kind"] == "erc20-transfer"
    assert view["token"] == TOKEN
    assert view["recipient"] == RECIPIENT
    assert view["token_amount"] == "250000000"
    assert view["value"] == "0"
    assert view["to"] == TOKEN


def test_review_refuses_approve_even_on_an_allowed_token() -> None:
    approve = bytes.fromhex("095ea7b3") + eth.erc20_transfer_calldata(RECIPIENT, 2**255)[4:]
    with pytest.raises(DisallowedContractCallError, match="0x095ea7b3"):
        eth.review(erc20_tx(data=approve), allowed_tokens=[TOKEN])


def test_review_refuses_transfer_to_a_token_not_allowed() -> None:
    with pytest.raises(DisallowedContractCallError, match="not an allowed token"):
        eth.review(erc20_tx(), allowed_tokens=[])


def test_review_refuses_any_calldata_to_a_plain_address() -> None:
    with pytest.raises(DisallowedContractCallError):
        eth.review(unsigned_tx(data=b"\x00"), allowed_tokens=[TOKEN])


def test_review_refuses_value_sent_to_a_token_contract() -> None:
    with pytest.raises(DisallowedContractCallError, match="token contract"):
        eth.review(erc20_tx(value=1), allowed_tokens=[TOKEN])
    with pytest.raises(DisallowedContractCallError, match="token contract"):
        eth.review(unsigned_tx(to=TOKEN), allowed_tokens=[TOKEN])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (lambda d: d + b"\x00", "68 bytes"),
        (lambda d: d[:-1], "68 bytes"),
        (lambda d: d[:4] + b"\x01" + d[5:], "high bytes"),
    ],
)
def test_review_refuses_malformed_transfer_calldata(data: Any, match: str) -> None:
    calldata = data(eth.erc20_transfer_calldata(RECIPIENT, 5))
    with pytest.raises(DisallowedContractCallError, match=match):
        eth.review(erc20_tx(data=calldata), allowed_tokens=[TOKEN])


def test_review_refuses_zero_recipient_and_zero_amounts() -> None:
    to_zero = eth.ERC20_TRANSFER_SELECTOR + bytes(32) + (5).to_bytes(32, "big")
    with pytest.raises(InvalidAddressError, match="zero address"):
        eth.review(erc20_tx(data=to_zero), allowed_tokens=[TOKEN])
    zero_amount = eth.erc20_transfer_calldata(RECIPIENT, 1)[:36] + bytes(32)
    with pytest.raises(InvalidAmountError):
        eth.review(erc20_tx(data=zero_amount), allowed_tokens=[TOKEN])
    with pytest.raises(InvalidAmountError):
        eth.review(unsigned_tx(value=0), allowed_tokens=[TOKEN])


def test_review_refuses_access_lists_and_contract_creation() -> None:
    entry = [bytes.fromhex(TOKEN[2:]), [bytes(32)]]
    with pytest.raises(DisallowedContractCallError, match="access list"):
        eth.review(raw_tx(base_fields(access=[entry])), allowed_tokens=[TOKEN])
    with pytest.raises(DisallowedContractCallError, match="contract creation"):
        eth.review(raw_tx(base_fields(to=b"", data=b"\x60\x00")), allowed_tokens=[TOKEN])


def test_review_refuses_unknown_chain_and_bad_fees() -> None:
    with pytest.raises(InvalidTransactionError, match="chain id"):
        eth.review(raw_tx(base_fields(chain_id=1337)), allowed_tokens=[])
    with pytest.raises(InvalidTransactionError, match="max_priority_fee"):
        eth.review(raw_tx(base_fields(priority=10**12)), allowed_tokens=[])
    with pytest.raises(InvalidTransactionError, match="gas_limit"):
        eth.review(raw_tx(base_fields(gas=100)), allowed_tokens=[])


def test_review_refuses_signed_transactions_and_bad_allow_lists() -> None:
    signed, _ = eth.sign_eip1559(unsigned_tx(), KEY)
    with pytest.raises(InvalidTransactionError, match="unsigned"):
        eth.review(signed, allowed_tokens=[])
    bad_checksum = flip_first_letter(TOKEN)
    with pytest.raises(InvalidAddressError, match="EIP-55"):
        eth.review(unsigned_tx(), allowed_tokens=[bad_checksum])


# --- signing -----------------------------------------------------------------------------


def test_eth_account_documented_eip1559_vector() -> None:
    case = load("ethereum_eip1559.json")["cases"][0]
    access: list[rlp.RlpEncodable] = [
        [bytes.fromhex(e["address"][2:]), [bytes.fromhex(k) for k in e["storage_keys"]]]
        for e in case["access_list"]
    ]
    unsigned = raw_tx(
        [
            case["chain_id"],
            case["nonce"],
            int(case["max_priority_fee_per_gas"]),
            int(case["max_fee_per_gas"]),
            case["gas_limit"],
            bytes.fromhex(case["to"][2:]),
            int(case["value"]),
            bytes.fromhex(case["data"]),
            access,
        ]
    )
    signed, tx_hash = eth.sign_eip1559(unsigned, bytes.fromhex(case["private_key"]))
    assert tx_hash == case["hash"]
    assert signed.hex().startswith(case["raw_transaction_prefix"])
    assert signed.hex().endswith(case["raw_transaction_suffix"])
    tx = eth.decode_transaction(signed)
    assert (tx.y_parity, tx.r, tx.s) == (case["v"], int(case["r"]), int(case["s"]))
    assert tx.access_list[0].address == case["access_list"][0]["address"]
    assert eth.transaction_hash(signed) == tx_hash


def test_sign_and_recover_round_trip() -> None:
    raw = erc20_tx()
    signed, tx_hash = eth.sign_eip1559(raw, KEY)
    assert eth.recover_sender(signed) == KEY_ADDRESS
    assert tx_hash == "0x" + eth.keccak256(signed).hex()
    decoded = eth.decode_transaction(signed)
    assert decoded.unsigned_bytes() == raw
    assert decoded.signed_bytes() == signed
    assert eth.signing_hash(raw) == eth.keccak256(raw)


def test_signing_is_deterministic() -> None:
    assert eth.sign_eip1559(unsigned_tx(), KEY) == eth.sign_eip1559(unsigned_tx(), KEY)


def test_sign_refuses_a_signed_input_and_bad_keys() -> None:
    signed, _ = eth.sign_eip1559(unsigned_tx(), KEY)
    with pytest.raises(InvalidTransactionError, match="unsigned"):
        eth.sign_eip1559(signed, KEY)
    for bad in (b"", bytes(32), secp256k1.ORDER.to_bytes(32, "big"), KEY + b"\x00"):
        with pytest.raises(CryptoError) as info:
            eth.sign_eip1559(unsigned_tx(), bad)
        assert KEY.hex() not in str(info.value)
        assert bad.hex()[:16] not in str(info.value) or not bad


def _with_signature(signed: bytes, *, s: int | None = None, y: int | None = None) -> bytes:
    tx = eth.decode_transaction(signed)
    fields = rlp.decode(signed[1:])
    assert isinstance(fields, list)
    if s is not None:
        fields[11] = rlp.encode_uint(s)
    if y is not None:
        fields[9] = rlp.encode_uint(y)
    assert tx.is_signed
    return b"\x02" + rlp.encode(fields)


def test_recover_refuses_high_s() -> None:
    signed, _ = eth.sign_eip1559(unsigned_tx(), KEY)
    tx = eth.decode_transaction(signed)
    assert tx.s is not None
    assert tx.y_parity is not None
    # (r, n - s) with the other parity is the same signature's malleated twin.
    twin = _with_signature(signed, s=secp256k1.ORDER - tx.s, y=1 - tx.y_parity)
    with pytest.raises(VerificationError, match="high"):
        eth.recover_sender(twin)


def test_tampered_transaction_recovers_someone_else() -> None:
    signed, _ = eth.sign_eip1559(unsigned_tx(), KEY)
    fields = rlp.decode(signed[1:])
    assert isinstance(fields, list)
    fields[6] = rlp.encode_uint(10**18)  # value
    tampered = b"\x02" + rlp.encode(fields)
    # Recovery over other bytes yields some other key, or none at all.
    with contextlib.suppress(VerificationError):
        assert eth.recover_sender(tampered) != KEY_ADDRESS


def test_recover_refuses_unsigned_and_bad_parity() -> None:
    with pytest.raises(InvalidTransactionError, match="not signed"):
        eth.recover_sender(unsigned_tx())
    signed, _ = eth.sign_eip1559(unsigned_tx(), KEY)
    with pytest.raises(InvalidTransactionError, match="y_parity"):
        eth.decode_transaction(_with_signature(signed, y=2))


# --- EIP-191 -----------------------------------------------------------------------------


def test_eth_account_documented_eip191_vector() -> None:
    case = load("ethereum_eip191.json")["cases"][0]
    message = case["text"].encode("utf-8")
    assert "0x" + eth.eip191_hash(message).hex() == case["message_hash"]
    signature = eth.sign_personal_message(bytes.fromhex(case["private_key"]), message)
    assert signature == case["signature"]
    raw = bytes.fromhex(signature[2:])
    assert int.from_bytes(raw[:32], "big") == int(case["r"])
    assert int.from_bytes(raw[32:64], "big") == int(case["s"])
    assert raw[64] == case["v"]


def test_chain_sign_and_verify_message() -> None:
    chain = get_chain("ethereum")
    proof = chain.sign_message(KEY, KEY_ADDRESS.lower(), "Tandem proof ✓", "mainnet")
    assert proof.format == "eip191"
    assert proof.payload_hex is None
    chain.verify_message(KEY_ADDRESS, "Tandem proof ✓", proof, "mainnet")
    chain.verify_message(KEY_ADDRESS.lower(), "Tandem proof ✓", proof, "holesky")
    chain.verify_message(KEY_ADDRESS, "Tandem proof ✓", proof, "mainnet", secp256k1.public_key(KEY))


def test_verify_refuses_other_message_and_other_address() -> None:
    chain = get_chain("ethereum")
    proof = chain.sign_message(KEY, KEY_ADDRESS, "statement A", "mainnet")
    with pytest.raises(VerificationError, match="not"):
        chain.verify_message(KEY_ADDRESS, "statement B", proof, "mainnet")
    with pytest.raises(VerificationError):
        chain.verify_message(RECIPIENT, "statement A", proof, "mainnet")
    other = secp256k1.public_key(b"\x01" * 32)
    with pytest.raises(VerificationError, match="public key"):
        chain.verify_message(KEY_ADDRESS, "statement A", proof, "mainnet", other)


def test_verify_refuses_high_s_and_bad_v() -> None:
    chain = get_chain("ethereum")
    proof = chain.sign_message(KEY, KEY_ADDRESS, "statement", "mainnet")
    raw = bytes.fromhex(proof.signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    twin = raw[:32] + (secp256k1.ORDER - s).to_bytes(32, "big") + bytes([55 - raw[64]])
    with pytest.raises(VerificationError, match="high"):
        chain.verify_message(
            KEY_ADDRESS, "statement", MessageProof("eip191", "0x" + twin.hex()), "mainnet"
        )
    for v in (0, 1, 26, 29, 37):
        bad = "0x" + (raw[:64] + bytes([v])).hex()
        with pytest.raises(VerificationError, match="27 or 28"):
            chain.verify_message(KEY_ADDRESS, "statement", MessageProof("eip191", bad), "mainnet")
    for malformed in ("", proof.signature[:-2], proof.signature[2:], proof.signature + "00"):
        with pytest.raises(VerificationError, match="130 hex"):
            chain.verify_message(
                KEY_ADDRESS, "statement", MessageProof("eip191", malformed), "mainnet"
            )


def test_verify_checks_the_address_checksum_first() -> None:
    chain = get_chain("ethereum")
    proof = chain.sign_message(KEY, KEY_ADDRESS, "statement", "mainnet")
    bad_checksum = flip_first_letter(KEY_ADDRESS)
    assert bad_checksum.lower() == KEY_ADDRESS.lower()
    with pytest.raises(InvalidAddressError, match="EIP-55"):
        chain.verify_message(bad_checksum, "statement", proof, "mainnet")


def test_verify_refuses_other_formats_as_unverifiable() -> None:
    chain = get_chain("ethereum")
    with pytest.raises(CannotVerifyError):
        chain.verify_message(KEY_ADDRESS, "x", MessageProof("bip137", "AAAA"), "mainnet")


def test_sign_message_refuses_a_key_that_does_not_control_the_address() -> None:
    chain = get_chain("ethereum")
    with pytest.raises(CryptoError, match="does not control") as info:
        chain.sign_message(KEY, RECIPIENT, "statement", "mainnet")
    assert KEY.hex() not in str(info.value)


def test_chain_registration_and_networks() -> None:
    chain = get_chain("ethereum")
    assert isinstance(chain, eth.Ethereum)
    assert chain.curve == "secp256k1"
    assert chain.networks == {"mainnet", "sepolia", "holesky"}
    assert dict(eth.CHAIN_IDS) == {"mainnet": 1, "sepolia": 11155111, "holesky": 17000}
    assert chain.address(secp256k1.public_key(KEY), "sepolia") == KEY_ADDRESS
    with pytest.raises(InputError, match="network"):
        chain.address(secp256k1.public_key(KEY), "ropsten")
