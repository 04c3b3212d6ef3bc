"""tandem.core.withdrawal: intents, digests, the transaction check, the state machine."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest

from tandem.core import withdrawal as w
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains.secp256k1 import public_key
from tandem.core.policy import AddressBookEntry
from tandem.errors import (
    AlreadyReleasedError,
    DisallowedContractCallError,
    ExpiredError,
    FloatNotAllowedError,
    InputError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidStateError,
    InvalidTransactionError,
    UnknownFieldError,
    UnprovenInputError,
    VerificationError,
)

KEY = bytes.fromhex("11" * 32)
PUB = public_key(KEY)
FROM_BTC = btc.p2wpkh_address(PUB, "testnet")
FROM_ETH = eth.address_from_public_key(PUB)
DEST_BTC = btc.p2wpkh_address(public_key(bytes.fromhex("22" * 32)), "testnet")
DEST_ETH = eth.address_from_private_key(bytes.fromhex("22" * 32))
TOKEN = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
OWN_SCRIPT = btc.address_to_script(FROM_BTC, "testnet")
# The deposit the intent spends: output 1 pays the wallet 80 000 sats.
FUND = btc.Transaction(
    2,
    (btc.TxInput("cd" * 32, 0),),
    (btc.TxOutput(5_000, btc.address_to_script(DEST_BTC, "testnet")), btc.TxOutput(80_000, OWN_SCRIPT)),
    0,
)
FUND_HEX = FUND.serialize().hex()


def fund_utxo(**over: Any) -> dict[str, Any]:
    return {"txid": FUND.txid, "vout": 1, "prev_tx": FUND_HEX, **over}


def btc_doc(**over: Any) -> dict[str, Any]:
    doc = {
        "wallet": "ks_1",
        "from": FROM_BTC,
        "chain": "bitcoin",
        "network": "testnet",
        "asset": "BTC",
        "amount": "50000",
        "destination": DEST_BTC,
        "bitcoin": {"utxos": [fund_utxo()], "fee_rate": 3},
    }
    doc.update(over)
    return doc


def eth_doc(**over: Any) -> dict[str, Any]:
    doc = {
        "wallet": "ks_1",
        "from": FROM_ETH,
        "chain": "ethereum",
        "network": "sepolia",
        "asset": "ETH",
        "amount": "1000",
        "destination": DEST_ETH,
        "ethereum": {
            "chain_id": 11155111,
            "nonce": 0,
            "max_fee_per_gas": "20",
            "max_priority_fee_per_gas": "1",
            "gas_limit": 21000,
        },
    }
    doc.update(over)
    return doc


# --- intents ------------------------------------------------------------------------------


def test_intent_normalises_to_one_spelling() -> None:
    loose = btc_doc(
        destination=DEST_BTC.upper(),
        bitcoin={"utxos": [fund_utxo(txid=FUND.txid.upper(), prev_tx=FUND_HEX.upper())], "fee_rate": 3},
    )
    assert w.normalize_intent(loose) == btc_doc()
    with pytest.raises(InputError, match="normal form"):
        w.require_normal_intent(loose)
    assert w.require_normal_intent(btc_doc()).amount == 50_000
    lower = eth_doc(
        destination=DEST_ETH.lower(),
        asset=TOKEN.lower(),
        ethereum={**eth_doc()["ethereum"], "gas_limit": 60000},
    )
    assert w.normalize_intent(lower)["destination"] == DEST_ETH
    assert w.normalize_intent(lower)["asset"] == TOKEN


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (btc_doc(extra=1), UnknownFieldError),
        (btc_doc(amount=50000), InvalidAmountError),
        (btc_doc(amount="0"), InputError),
        (btc_doc(amount="05"), InvalidAmountError),
        (btc_doc(asset="ETH"), InputError),
        (btc_doc(destination=FROM_BTC), InputError),
        (btc_doc(destination="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"), InvalidAddressError),
        (btc_doc(ethereum=eth_doc()["ethereum"]), InputError),
        (btc_doc(bitcoin={"utxos": [], "fee_rate": 3}), InputError),
        (btc_doc(bitcoin={"utxos": [fund_utxo()] * 2, "fee_rate": 3}), InputError),
        # The old form: an amount on the manager's word.
        (
            btc_doc(bitcoin={"utxos": [{"txid": "ab" * 32, "vout": 1, "amount": "1"}], "fee_rate": 3}),
            UnknownFieldError,
        ),
        (btc_doc(bitcoin={"utxos": [fund_utxo(amount="80000")], "fee_rate": 3}), UnknownFieldError),
        (btc_doc(bitcoin={"utxos": [fund_utxo(txid="ab" * 32)], "fee_rate": 3}), UnprovenInputError),
        (btc_doc(bitcoin={"utxos": [fund_utxo(vout=2)], "fee_rate": 3}), UnprovenInputError),
        (btc_doc(bitcoin={"utxos": [fund_utxo(vout=0)], "fee_rate": 3}), InvalidTransactionError),
        (btc_doc(bitcoin={"utxos": [fund_utxo(prev_tx="zz")], "fee_rate": 3}), InputError),
        (btc_doc(bitcoin={"utxos": [fund_utxo(prev_tx=FUND_HEX[:-2])], "fee_rate": 3}), InputError),
        (btc_doc(bitcoin={"utxos": [fund_utxo()], "psbt": "cHNidP8=", "fee_rate": 3}), InputError),
        (btc_doc(bitcoin={"fee_rate": 3}), InputError),
        (eth_doc(ethereum={**eth_doc()["ethereum"], "chain_id": 1}), InputError),
        (eth_doc(destination=DEST_ETH[:5] + DEST_ETH[5:].swapcase()), InvalidAddressError),
        (eth_doc(asset="USDC"), InputError),
        (eth_doc(ethereum={**eth_doc()["ethereum"], "max_priority_fee_per_gas": "21"}), InputError),
        (eth_doc(chain="solana"), InputError),
    ],
)
def test_bad_intents_refused(doc: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        w.parse_intent(doc)


def test_floats_never_reach_an_intent() -> None:
    from tandem.core.canonical import loads_strict

    with pytest.raises(FloatNotAllowedError):
        loads_strict(b'{"amount": 0.5}')


def test_intent_hash_covers_every_field_and_fingerprint_is_four_groups() -> None:
    base = w.intent_hash(btc_doc())
    assert base != w.intent_hash(btc_doc(amount="50001"))
    assert base != w.intent_hash(btc_doc(destination=DEST_BTC.replace(DEST_BTC[-1], "q")))
    fp = w.fingerprint(base)
    assert fp == f"{base[0:4]}-{base[4:8]}-{base[8:12]}-{base[12:16]}"


# --- transactions ----------------------------------------------------------------------------


def test_bitcoin_build_check_sign_round_trip() -> None:
    intent = w.parse_intent(btc_doc())
    built = w.build_transaction(intent, PUB, allowed_tokens=[])
    view = w.check_transaction(intent, public_key=PUB, unsigned=built.unsigned, prevouts=built.prevouts)
    assert view["to"] == DEST_BTC
    assert view["amount"] == "50000"
    assert int(view["change"]) == built.change > 0
    assert int(view["fee"]) == built.fee
    signed, txid = w.sign_transaction("bitcoin", built.unsigned, built.prevouts, KEY)
    assert (
        w.check_signed_transaction(
            "bitcoin", signed, unsigned=built.unsigned, prevouts=built.prevouts, from_address=FROM_BTC
        )
        == txid
    )
    # RFC 6979: the same key and transaction give the same signature.
    assert w.sign_transaction("bitcoin", built.unsigned, built.prevouts, KEY)[0] == signed


def test_ethereum_native_and_token_round_trip() -> None:
    native = w.parse_intent(eth_doc())
    built = w.build_transaction(native, PUB, allowed_tokens=[])
    view = w.check_transaction(native, public_key=PUB, unsigned=built.unsigned, prevouts=[])
    assert (view["to"], view["amount"], view["chain_id"], view["token"]) == (DEST_ETH, "1000", 11155111, None)
    signed, txid = w.sign_transaction("ethereum", built.unsigned, [], KEY)
    assert (
        w.check_signed_transaction(
            "ethereum", signed, unsigned=built.unsigned, prevouts=[], from_address=FROM_ETH
        )
        == txid
    )

    token = w.parse_intent(eth_doc(asset=TOKEN, ethereum={**eth_doc()["ethereum"], "gas_limit": 65000}))
    with pytest.raises(DisallowedContractCallError, match="no address-book entry"):
        w.build_transaction(token, PUB, allowed_tokens=[])
    built = w.build_transaction(token, PUB, allowed_tokens=[TOKEN.lower()])
    view = w.check_transaction(token, public_key=PUB, unsigned=built.unsigned, prevouts=[])
    assert (view["to"], view["amount"], view["token"], view["value"]) == (DEST_ETH, "1000", TOKEN, "0")


def test_a_transaction_that_differs_from_the_intent_is_refused() -> None:
    intent = w.parse_intent(btc_doc())
    other = w.parse_intent(btc_doc(destination=btc.p2wpkh_address(public_key(b"\x33" * 32), "testnet")))
    swapped = w.build_transaction(other, PUB, allowed_tokens=[])
    with pytest.raises(VerificationError, match="destination is"):
        w.check_transaction(intent, public_key=PUB, unsigned=swapped.unsigned, prevouts=swapped.prevouts)
    fee = w.build_transaction(
        w.parse_intent(btc_doc(bitcoin={**btc_doc()["bitcoin"], "fee_rate": 50})), PUB, allowed_tokens=[]
    )
    with pytest.raises(VerificationError, match="bytes differ"):
        w.check_transaction(intent, public_key=PUB, unsigned=fee.unsigned, prevouts=fee.prevouts)
    with pytest.raises(VerificationError, match="not the key"):
        w.check_transaction(
            intent, public_key=public_key(b"\x44" * 32), unsigned=swapped.unsigned, prevouts=swapped.prevouts
        )


def test_any_contract_call_but_the_token_transfer_is_refused() -> None:
    intent = w.parse_intent(eth_doc(asset=TOKEN, ethereum={**eth_doc()["ethereum"], "gas_limit": 65000}))
    approve = bytes.fromhex("095ea7b3") + bytes(12) + bytes.fromhex(DEST_ETH[2:]) + (1000).to_bytes(32, "big")
    raw = eth.build_eip1559(
        chain_id=11155111,
        nonce=0,
        max_priority_fee_per_gas=1,
        max_fee_per_gas=20,
        gas_limit=65000,
        to=TOKEN,
        value=0,
        data=approve,
    )
    with pytest.raises(DisallowedContractCallError, match="only ERC-20 transfer"):
        w.check_transaction(intent, public_key=PUB, unsigned=raw, prevouts=[])
    native = w.parse_intent(eth_doc())
    other_contract = eth.build_eip1559(
        chain_id=11155111,
        nonce=0,
        max_priority_fee_per_gas=1,
        max_fee_per_gas=20,
        gas_limit=65000,
        to=DEST_ETH,
        value=1000,
        data=b"\x12\x34\x56\x78",
    )
    with pytest.raises(DisallowedContractCallError):
        w.check_transaction(native, public_key=PUB, unsigned=other_contract, prevouts=[])


def test_prevouts_shown_beside_the_bytes_must_be_the_previous_transactions() -> None:
    """A server that serves the right bytes with a lie about an input's amount (and a
    digest over the lie) is caught by the client: amounts come from the prev tx only."""
    intent = w.parse_intent(btc_doc())
    built = w.build_transaction(intent, PUB, allowed_tokens=[])
    lie = copy.deepcopy(list(built.prevouts))
    lie[0]["amount"] = "8000000"
    with pytest.raises(VerificationError, match="its previous transaction holds 80000 sats"):
        w.check_transaction(intent, public_key=PUB, unsigned=built.unsigned, prevouts=lie)
    with pytest.raises(VerificationError, match="0 prevouts shown for 1 inputs"):
        w.check_transaction(intent, public_key=PUB, unsigned=built.unsigned, prevouts=[])


def test_inputs_given_as_a_psbt_normalise_to_proven_utxos() -> None:
    from tandem.core.chains import psbt

    intent = w.parse_intent(btc_doc())
    built = w.build_transaction(intent, PUB, allowed_tokens=[])
    made = psbt.psbt_for_unsigned(built.unsigned, [FUND.serialize()])
    as_psbt = btc_doc(bitcoin={"psbt": made.to_base64(), "fee_rate": 3})
    assert w.normalize_intent(as_psbt) == btc_doc()

    # Without the previous transaction the amount is only the PSBT's word: refused.
    bare = psbt.Psbt(made.global_map, tuple(p[1:] for p in made.inputs), made.outputs)
    with pytest.raises(UnprovenInputError, match="NON_WITNESS_UTXO"):
        w.parse_intent(btc_doc(bitcoin={"psbt": bare.to_base64(), "fee_rate": 3}))
    # A witness UTXO that disagrees with the previous transaction: refused.
    lie = btc.TxOutput(8_000_000, OWN_SCRIPT).serialize()
    lying = psbt.Psbt(made.global_map, ((made.inputs[0][0], (b"\x01", lie)),), made.outputs)
    with pytest.raises(UnprovenInputError, match="witness UTXO differs"):
        w.parse_intent(btc_doc(bitcoin={"psbt": lying.to_base64(), "fee_rate": 3}))
    # Outputs, if the PSBT has any, must be the intent's payment and change.
    other = btc_doc(bitcoin={"psbt": made.to_base64(), "fee_rate": 3}, amount="40000")
    with pytest.raises(InputError, match="outputs other than"):
        w.parse_intent(other)


def test_tx_digest_binds_key_bytes_and_prevouts() -> None:
    built = w.build_transaction(w.parse_intent(btc_doc()), PUB, allowed_tokens=[])
    args = {
        "chain": "bitcoin",
        "network": "testnet",
        "public_key": PUB.hex(),
        "unsigned_tx": built.unsigned.hex(),
        "prevouts": list(built.prevouts),
    }
    base = w.tx_digest(**args)
    prevouts = copy.deepcopy(list(built.prevouts))
    prevouts[0]["amount"] = "80001"
    assert w.tx_digest(**{**args, "prevouts": prevouts}) != base
    assert w.tx_digest(**{**args, "public_key": public_key(b"\x44" * 32).hex()}) != base
    assert w.tx_digest(**{**args, "unsigned_tx": built.unsigned.hex()[:-2] + "01"}) != base


# --- state machine ------------------------------------------------------------------------------


def test_state_machine() -> None:
    t = w.transition
    assert t("pending", "approve", expires_at=10, now=0) == "pending"
    assert t("pending", "quorum", expires_at=10, now=0) == "approved"
    assert t("approved", "release", expires_at=10, now=0) == "released"
    with pytest.raises(AlreadyReleasedError):
        t("released", "release", expires_at=10, now=0)
    with pytest.raises(InvalidStateError):
        t("pending", "release", expires_at=10, now=0)
    with pytest.raises(InvalidStateError):
        t("cancelled", "approve", expires_at=10, now=0)
    with pytest.raises(ExpiredError):
        t("approved", "release", expires_at=10, now=10)
    assert t("approved", "tamper", expires_at=10, now=20) == "tampered"
    assert w.effective_status("pending", 10, 10) == "expired"
    assert w.effective_status("released", 10, 99) == "released"


def test_address_book_delay_and_removal() -> None:
    e = AddressBookEntry(chain="bitcoin", network="testnet", address=DEST_BTC, label="vault")
    adds = [w.BookAddition("ab_1", e, 100)]
    assert w.address_book_at(adds, {}, 99) == []
    assert w.address_book_at(adds, {}, 100) == [e]
    assert w.address_book_at(adds, {"ab_1": 200}, 150) == [e]
    assert w.address_book_at(adds, {"ab_1": 200}, 200) == []


def test_allowed_tokens_come_from_ethereum_entries_naming_a_contract() -> None:
    book = [
        AddressBookEntry(chain="ethereum", network="sepolia", address=DEST_ETH, label="a", asset=TOKEN),
        AddressBookEntry(chain="ethereum", network="sepolia", address=DEST_ETH, label="b", asset="ETH"),
        AddressBookEntry(
            chain="ethereum",
            network="mainnet",
            address=DEST_ETH,
            label="c",
            asset="0x" + os.urandom(20).hex(),
        ),
    ]
    assert w.allowed_tokens(book, "sepolia") == [TOKEN]


def test_state_machine_after_release() -> None:
    """A release's end is recorded once; the request's expiry no longer matters then."""
    t = w.transition
    assert t("released", "broadcast", expires_at=10, now=99) == "broadcast"
    assert t("broadcast", "confirm", expires_at=10, now=99) == "confirmed"
    assert t("released", "confirm", expires_at=10, now=99) == "confirmed"
    assert t("released", "abandon", expires_at=10, now=99) == "abandoned"
    assert t("broadcast", "abandon", expires_at=10, now=99) == "abandoned"
    for status in ("approved", "confirmed", "abandoned"):
        with pytest.raises(InvalidStateError):
            t(status, "abandon", expires_at=100, now=0)
    for status in ("broadcast", "confirmed", "abandoned"):
        with pytest.raises(AlreadyReleasedError):
            t(status, "release", expires_at=100, now=0)
    assert w.effective_status("released", 10, 99, release_expires_at=100) == "released"
    assert w.effective_status("released", 10, 100, release_expires_at=100) == "lapsed"
    assert w.effective_status("broadcast", 10, 100, release_expires_at=100) == "broadcast"
    assert w.holds_nonce("released", 10, 99)
    assert w.holds_nonce("confirmed", 10, 99)
    assert not w.holds_nonce("pending", 10, 99)  # expired
    assert not w.holds_nonce("abandoned", 100, 0)
    assert not w.holds_nonce("rejected", 100, 0)


def test_one_registry_answers_for_every_chain() -> None:
    """The chain registry is the one list of chains: each has its withdrawal transactions
    (``chain.tx``), an intent parser and its networks, and nothing else names a chain."""
    from tandem.core.chains import CHAINS
    from tandem.core.withdrawal import intent as wintent

    assert set(wintent._CHAIN_PARAMS) == set(CHAINS)
    assert dict(w.NETWORKS) == {name: c.networks for name, c in CHAINS.items()}
    for name, chain in CHAINS.items():
        assert w.chain_tx(name) is chain.tx
        assert chain.tx.token(chain.native_asset) is None
    with pytest.raises(
        InputError, match="Tandem builds withdrawals on bitcoin, ethereum, solana, not 'dogecoin'"
    ):
        w.chain_tx("dogecoin")


def test_statuses_are_their_strings() -> None:
    """A status is a StrEnum member: stored, compared and encoded as its string."""
    assert w.PENDING == "pending"
    assert w.transition("pending", "quorum", expires_at=10, now=1) == "approved"
    assert {str(s) for s in w.WithdrawalStatus} >= {"pending", "approved", "released", "lapsed"}
    assert w.effective_status("approved", 10, 10) == "expired"
