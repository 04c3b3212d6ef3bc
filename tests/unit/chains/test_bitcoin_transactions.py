"""P2WPKH spends: BIP-143 vector, python-bitcoinlib cross-checks, strict parsing, refusals."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bitcoin.core import CTransaction, b2lx
from bitcoin.core.key import CPubKey
from bitcoin.core.script import SIGHASH_ALL, SIGVERSION_WITNESS_V0, CScript, SignatureHash
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.chains import bitcoin as btc
from tandem.core.chains import secp256k1
from tandem.errors import (
    CannotVerifyError,
    CryptoError,
    InputError,
    InsufficientFundsError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidTransactionError,
    UnprovenInputError,
    VerificationError,
)

VECTORS = Path(__file__).parents[2] / "vectors"
BIP143: dict[str, Any] = json.loads((VECTORS / "bitcoin_bip143.json").read_text())

KEY = hashlib.sha256(b"tandem bitcoin test key").digest()
PUB = secp256k1.public_key(KEY)
OWN_ADDRESS = btc.p2wpkh_address(PUB, "testnet")
OWN_SCRIPT = b"\x00\x14" + btc.hash160(PUB)
DEST = "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7"  # BIP-173 P2WSH
TXIDS = [hashlib.sha256(bytes([i])).hexdigest() for i in range(8)]


def build(**overrides: Any) -> btc.UnsignedBitcoinTx:
    """``utxos`` as (txid, vout, amount) of outputs paid to OWN_SCRIPT; the amounts here are
    taken as proven (the intent layer reads them from the previous transactions)."""
    utxos = overrides.pop("utxos", [(TXIDS[0], 1, 150_000), (TXIDS[1], 0, 60_000)])
    args: dict[str, Any] = {
        "from_pubkey": PUB,
        "destination": DEST,
        "amount": 120_000,
        "fee_rate": 10,
        "network": "testnet",
    }
    args.update(overrides)
    if "prevouts" not in args:
        args["prevouts"] = [btc.Prevout(t, v, a, OWN_SCRIPT) for t, v, a in utxos]
    return btc.build_p2wpkh_spend(**args)


def der(r: int, s: int) -> bytes:
    def integer(v: int) -> bytes:
        body = v.to_bytes((v.bit_length() + 8) // 8, "big")
        return b"\x02" + bytes([len(body)]) + body

    body = integer(r) + integer(s)
    return b"\x30" + bytes([len(body)]) + body


def with_witness(raw: bytes, index: int, stack: tuple[bytes, ...]) -> bytes:
    tx = btc.parse_transaction(raw)
    witnesses = list(tx.witnesses)
    witnesses[index] = stack
    return replace(tx, witnesses=tuple(witnesses)).serialize()


# --- BIP-143 ------------------------------------------------------------------------------


def bip143_prevout() -> btc.Prevout:
    tx = btc.parse_transaction(bytes.fromhex(BIP143["unsigned_tx"]))
    txin = tx.inputs[BIP143["input_index"]]
    return btc.Prevout(
        txin.txid,
        txin.vout,
        BIP143["prevout_amount_sats"],
        bytes.fromhex(BIP143["prevout_script_pubkey"]),
    )


def test_bip143_native_p2wpkh_sighash_and_signature() -> None:
    raw = bytes.fromhex(BIP143["unsigned_tx"])
    tx = btc.parse_transaction(raw)
    assert tx.serialize() == raw
    outpoints = b"".join(i.outpoint for i in tx.inputs)
    assert btc.sha256d(outpoints).hex() == BIP143["hash_prevouts"]
    assert btc.sha256d(b"".join(o.serialize() for o in tx.outputs)).hex() == BIP143["hash_outputs"]
    assert btc.sha256d(bytes.fromhex(BIP143["sighash_preimage"])).hex() == BIP143["sighash"]

    sighash = btc.bip143_sighash(raw, BIP143["input_index"], bip143_prevout())
    assert sighash.hex() == BIP143["sighash"]
    private_key = bytes.fromhex(BIP143["private_key"])
    assert secp256k1.public_key(private_key).hex() == BIP143["public_key"]
    # RFC 6979 makes the signature a known answer, not merely a valid one.
    assert secp256k1.sign_digest_der(private_key, sighash).hex() == BIP143["signature_der"]


def test_bip143_signed_transaction_parses_and_verifies() -> None:
    signed = bytes.fromhex(BIP143["signed_tx"])
    tx = btc.parse_transaction(signed)
    assert tx.serialize() == signed
    stack = tx.witnesses[BIP143["input_index"]]
    assert stack == (
        bytes.fromhex(BIP143["signature_der"]) + b"\x01",
        bytes.fromhex(BIP143["public_key"]),
    )
    btc.verify_p2wpkh_input(signed, BIP143["input_index"], bip143_prevout())
    assert tx.txid == b2lx(CTransaction.deserialize(signed).GetTxid())


def test_only_sighash_all_is_computed() -> None:
    with pytest.raises(InvalidTransactionError, match="SIGHASH_ALL"):
        btc.bip143_sighash(bytes.fromhex(BIP143["unsigned_tx"]), 1, bip143_prevout(), 3)


def test_sighash_refuses_a_prevout_of_another_input() -> None:
    with pytest.raises(InvalidTransactionError, match="not the output input 0 spends"):
        btc.bip143_sighash(bytes.fromhex(BIP143["unsigned_tx"]), 0, bip143_prevout())


# --- building -----------------------------------------------------------------------------


def test_build_shape_fee_and_change() -> None:
    unsigned = build()
    tx = btc.parse_transaction(unsigned.raw)
    assert (tx.version, tx.locktime) == (2, 0)
    assert [(i.txid, i.vout, i.sequence, i.script_sig) for i in tx.inputs] == [
        (TXIDS[0], 1, 0xFFFFFFFD, b""),
        (TXIDS[1], 0, 0xFFFFFFFD, b""),
    ]
    # 2 inputs, P2WSH payment + P2WPKH change: 4+1+2*41+1+43+31+4 = 166 stripped bytes;
    # weight 4*166 + 2 (marker, flag) + 2*108 (witnesses) = 882 -> 221 vbytes.
    assert len(tx.serialize(include_witness=False)) == 166
    assert unsigned.vsize == 221
    assert unsigned.fee == 2210
    assert unsigned.change == 210_000 - 120_000 - 2210
    assert tx.outputs == (
        btc.TxOutput(120_000, btc.address_to_script(DEST, "testnet")),
        btc.TxOutput(unsigned.change, OWN_SCRIPT),
    )
    assert unsigned.prevouts == (
        btc.Prevout(TXIDS[0], 1, 150_000, OWN_SCRIPT),
        btc.Prevout(TXIDS[1], 0, 60_000, OWN_SCRIPT),
    )


def test_signed_size_never_exceeds_the_estimate_the_fee_paid_for() -> None:
    unsigned = build()
    signed, _ = btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, KEY)
    actual = btc.parse_transaction(signed).vsize
    assert unsigned.vsize - len(unsigned.prevouts) <= actual <= unsigned.vsize


def test_change_below_dust_goes_to_the_fee() -> None:
    # Without change: 4+1+41+1+43+4 = 94 stripped bytes, weight 376+2+108 = 486 -> 122 vB.
    # With change it would be 153 vB = 1530 sats, leaving 100 sats: dust.
    unsigned = build(utxos=[(TXIDS[2], 0, 101_630)], amount=100_000)
    tx = btc.parse_transaction(unsigned.raw)
    assert len(tx.outputs) == 1
    assert unsigned.change == 0
    assert unsigned.fee == 1_630
    assert unsigned.fee >= unsigned.vsize * 10


def test_change_at_exactly_the_dust_limit_is_kept() -> None:
    unsigned = build(utxos=[(TXIDS[2], 0, 100_000 + 1_530 + 294)], amount=100_000)
    assert (unsigned.change, unsigned.fee) == (294, 1_530)


def test_insufficient_funds() -> None:
    with pytest.raises(InsufficientFundsError, match=r"hold 100500 sats.*needs 101220 sats"):
        build(utxos=[(TXIDS[2], 0, 100_500)], amount=100_000)


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"amount": 329}, InvalidAmountError, "below the 330-sat dust limit"),
        (
            {"amount": 545, "destination": "mvbu1Gdy8SUjTenqerxUaZyYjmveZvt33q"},
            InvalidAmountError,
            "546",
        ),
        ({"amount": 293, "destination": OWN_ADDRESS}, InvalidAmountError, "294"),
        ({"amount": 0}, InvalidAmountError, "whole number"),
        ({"amount": True}, InvalidAmountError, "whole number"),
        ({"amount": btc.MAX_MONEY + 1}, InvalidAmountError, "whole number"),
        ({"fee_rate": 0}, InputError, "outside"),
        ({"fee_rate": 10_001}, InputError, "outside"),
        ({"fee_rate": 2.5}, InputError, "whole number"),
        ({"utxos": []}, InvalidTransactionError, "at least one UTXO"),
        (
            {"utxos": [(TXIDS[0], 1, 150_000), (TXIDS[0], 1, 150_000)]},
            InvalidTransactionError,
            "listed twice",
        ),
        (
            {"utxos": [(TXIDS[0].upper(), 1, 9), (TXIDS[0], 1, 9)]},
            InvalidTransactionError,
            "listed twice",
        ),
        ({"utxos": [(TXIDS[0], 1, 0)]}, InvalidTransactionError, "no sats"),
        ({"utxos": [("ab" * 31, 1, 10)]}, InvalidTransactionError, "64 hexadecimal"),
        ({"utxos": [(TXIDS[0], -1, 10)]}, InvalidTransactionError, "vout"),
        (
            {"destination": "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"},
            InvalidAddressError,
            "mainnet",
        ),
        ({"from_pubkey": secp256k1.uncompressed(PUB)}, CryptoError, "compressed"),
    ],
)
def test_build_refusals(overrides: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build(**overrides)


def test_more_inputs_than_a_node_would_relay_are_refused() -> None:
    utxos = [(hashlib.sha256(i.to_bytes(2, "big")).hexdigest(), 0, 10_000) for i in range(1_500)]
    with pytest.raises(InvalidTransactionError, match=r"1500 inputs .* relay limit"):
        build(utxos=utxos, amount=1_000_000, fee_rate=1)


def test_outputs_paid_to_another_script_are_not_spent() -> None:
    foreign = btc.Prevout(TXIDS[3], 0, 500_000, b"\x00\x14" + bytes(20))
    with pytest.raises(InvalidTransactionError, match=r"input 1 .* not paid to the wallet"):
        build(prevouts=[btc.Prevout(TXIDS[0], 1, 150_000, OWN_SCRIPT), foreign])


# --- amounts proven by the previous transaction -------------------------------------------


def funding(*amounts: int, witness: bool = False) -> btc.Transaction:
    stacks = ((b"\x30" * 72, PUB),) if witness else ()
    return btc.Transaction(
        2, (btc.TxInput(TXIDS[7], 5),), tuple(btc.TxOutput(a, OWN_SCRIPT) for a in amounts), 0, stacks
    )


def test_prevout_comes_from_the_previous_transaction() -> None:
    tx = funding(70_000, 150_000, witness=True)
    # The txid hashes the legacy serialisation; the witness form proves the same output.
    assert tx.txid == b2lx(CTransaction.deserialize(tx.serialize()).GetTxid())
    for raw in (tx.serialize(), tx.serialize(include_witness=False)):
        assert btc.prevout_from_tx(raw, tx.txid, 1) == btc.Prevout(tx.txid, 1, 150_000, OWN_SCRIPT)
    assert btc.strip_witness(tx.serialize()) == tx.serialize(include_witness=False)


def test_a_previous_transaction_with_another_amount_is_another_txid() -> None:
    real = funding(70_000, 150_000)
    lie = funding(70_000, 1_000)
    with pytest.raises(UnprovenInputError, match=f"hashes to {lie.txid}"):
        btc.prevout_from_tx(lie.serialize(), real.txid, 1)
    with pytest.raises(UnprovenInputError, match="has 2 outputs, no output 2"):
        btc.prevout_from_tx(real.serialize(), real.txid, 2)
    with pytest.raises(InvalidTransactionError):
        btc.prevout_from_tx(real.serialize()[:-1], real.txid, 0)


# --- review -------------------------------------------------------------------------------


def test_decode_for_review() -> None:
    unsigned = build()
    view = btc.decode_for_review(unsigned.raw, unsigned.prevouts, "testnet", change_address=OWN_ADDRESS)
    assert json.loads(json.dumps(view)) == view
    assert view["txid"] == unsigned.txid
    assert view["inputs"] == [
        {"txid": TXIDS[0], "vout": 1, "amount": "150000", "sequence": 0xFFFFFFFD},
        {"txid": TXIDS[1], "vout": 0, "amount": "60000", "sequence": 0xFFFFFFFD},
    ]
    assert [(o["address"], o["amount"], o["is_change"]) for o in view["outputs"]] == [
        (DEST, "120000", False),
        (OWN_ADDRESS, str(unsigned.change), True),
    ]
    assert (view["fee"], view["vsize"], view["version"], view["locktime"]) == ("2210", 221, 2, 0)


def test_review_refuses_prevouts_that_do_not_match() -> None:
    unsigned = build()
    swapped = (unsigned.prevouts[1], unsigned.prevouts[0])
    with pytest.raises(InvalidTransactionError, match="prevout 0 is not the output"):
        btc.decode_for_review(unsigned.raw, swapped, "testnet")
    with pytest.raises(InvalidTransactionError, match="1 prevouts given for 2 inputs"):
        btc.decode_for_review(unsigned.raw, unsigned.prevouts[:1], "testnet")
    short = tuple(replace(p, amount=1_000) for p in unsigned.prevouts)
    with pytest.raises(InvalidTransactionError, match="more than the inputs hold"):
        btc.decode_for_review(unsigned.raw, short, "testnet")


# --- signing, cross-checked with python-bitcoinlib ----------------------------------------


def test_signed_inputs_verify_with_python_bitcoinlib() -> None:
    unsigned = build(
        utxos=[(TXIDS[i], i, 40_000 + i) for i in range(5)], destination=OWN_ADDRESS, amount=70_000
    )
    signed, txid = btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, KEY)
    assert txid == unsigned.txid  # segwit signatures leave the txid alone

    theirs = CTransaction.deserialize(signed)
    assert b2lx(theirs.GetTxid()) == txid
    assert theirs.serialize() == signed
    script_code = CScript(b"\x76\xa9\x14" + btc.hash160(PUB) + b"\x88\xac")
    for i, prevout in enumerate(unsigned.prevouts):
        sig, pub = theirs.wit.vtxinwit[i].scriptWitness.stack
        assert pub == PUB
        assert sig[-1] == SIGHASH_ALL
        sighash = SignatureHash(
            script_code,
            theirs,
            i,
            SIGHASH_ALL,
            amount=prevout.amount,
            sigversion=SIGVERSION_WITNESS_V0,
        )
        assert sighash == btc.bip143_sighash(unsigned.raw, i, prevout)
        assert CPubKey(pub).verify(sighash, sig[:-1])
        btc.verify_p2wpkh_input(signed, i, prevout)


def test_signing_refuses_inputs_of_another_key() -> None:
    unsigned = build()
    other = (
        unsigned.prevouts[0],
        replace(unsigned.prevouts[1], script_pubkey=b"\x00\x14" + bytes(20)),
    )
    with pytest.raises(InvalidTransactionError, match="input 1 is not paid to this key"):
        btc.sign_p2wpkh_spend(unsigned.raw, other, KEY)
    with pytest.raises(InvalidTransactionError, match="not paid to this key"):
        btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, hashlib.sha256(b"other").digest())


def test_signing_refuses_an_already_signed_transaction() -> None:
    unsigned = build()
    signed, _ = btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, KEY)
    with pytest.raises(InvalidTransactionError, match="already"):
        btc.sign_p2wpkh_spend(signed, unsigned.prevouts, KEY)


def test_signing_errors_never_show_the_key() -> None:
    unsigned = build()
    with pytest.raises(InvalidTransactionError) as caught:
        btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts[:1], KEY)
    assert KEY.hex() not in str(caught.value)


# --- verification refusals ----------------------------------------------------------------


def signed_pair() -> tuple[bytes, btc.UnsignedBitcoinTx]:
    unsigned = build()
    signed, _ = btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, KEY)
    return signed, unsigned


def test_tampered_output_is_refused() -> None:
    signed, unsigned = signed_pair()
    tx = btc.parse_transaction(signed)
    paid_more = btc.TxOutput(tx.outputs[0].amount + 1, tx.outputs[0].script_pubkey)
    tampered = replace(tx, outputs=(paid_more, *tx.outputs[1:])).serialize()
    with pytest.raises(VerificationError, match="does not verify"):
        btc.verify_p2wpkh_input(tampered, 0, unsigned.prevouts[0])


def test_wrong_prevout_amount_is_refused() -> None:
    signed, unsigned = signed_pair()
    lie = replace(unsigned.prevouts[0], amount=unsigned.prevouts[0].amount - 1)
    with pytest.raises(VerificationError):
        btc.verify_p2wpkh_input(signed, 0, lie)


def test_high_s_signature_is_refused() -> None:
    signed, unsigned = signed_pair()
    sig, pub = btc.parse_transaction(signed).witnesses[0]
    r, s = secp256k1.decode_der(sig[:-1])
    high = der(r, secp256k1.ORDER - s) + b"\x01"
    with pytest.raises(VerificationError, match="high"):
        btc.verify_p2wpkh_input(with_witness(signed, 0, (high, pub)), 0, unsigned.prevouts[0])


@pytest.mark.parametrize(
    ("stack_of", "error", "match"),
    [
        (lambda sig, pub: (), VerificationError, "exactly a signature"),
        (lambda sig, pub: (sig, pub, b""), VerificationError, "exactly a signature"),
        (lambda sig, pub: (sig[:-1] + b"\x03", pub), CannotVerifyError, "SIGHASH_ALL"),
        (lambda sig, pub: (sig, secp256k1.uncompressed(pub)), VerificationError, "compressed"),
        (lambda sig, pub: (sig, bytes([pub[0] ^ 1]) + pub[1:]), VerificationError, "commits to"),
        (
            lambda sig, pub: (bytes.fromhex("300602040102030401"), pub),
            VerificationError,
            "malformed DER",
        ),
        (lambda sig, pub: (sig[:-2] + sig[-1:], pub), VerificationError, "DER"),
    ],
)
def test_malformed_witnesses_are_refused(stack_of: Any, error: type[Exception], match: str) -> None:
    signed, unsigned = signed_pair()
    sig, pub = btc.parse_transaction(signed).witnesses[0]
    tampered = btc.parse_transaction(signed)
    stacks = (stack_of(sig, pub), *tampered.witnesses[1:])
    raw = replace(tampered, witnesses=stacks).serialize()
    with pytest.raises(error, match=match):
        btc.verify_p2wpkh_input(raw, 0, unsigned.prevouts[0])


# --- strict parsing -----------------------------------------------------------------------


def test_every_truncation_is_refused() -> None:
    signed, _ = signed_pair()
    for raw in (signed, build().raw):
        for cut in range(len(raw)):
            with pytest.raises(InvalidTransactionError):
                btc.parse_transaction(raw[:cut])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(InvalidTransactionError, match="1 trailing bytes"):
        btc.parse_transaction(build().raw + b"\x00")


def test_non_minimal_varint_is_refused() -> None:
    raw = build().raw
    assert raw[4] == 2  # input count
    with pytest.raises(InvalidTransactionError, match="non-minimal"):
        btc.parse_transaction(raw[:4] + b"\xfd\x02\x00" + raw[5:])


def test_absurd_counts_are_refused() -> None:
    raw = build().raw
    with pytest.raises(InvalidTransactionError, match="more than its"):
        btc.parse_transaction(raw[:4] + b"\xff" + (2**64 - 1).to_bytes(8, "little") + raw[5:])


def test_segwit_encoding_oddities_are_refused() -> None:
    signed, _ = signed_pair()
    assert signed[4:6] == b"\x00\x01"
    with pytest.raises(InvalidTransactionError, match="flag"):
        btc.parse_transaction(signed[:5] + b"\x02" + signed[6:])
    unsigned = build().raw
    n_inputs = 2
    empty_witnesses = unsigned[:4] + b"\x00\x01" + unsigned[4:-4] + b"\x00" * n_inputs + unsigned[-4:]
    with pytest.raises(InvalidTransactionError, match="without any witness"):
        btc.parse_transaction(empty_witnesses)


def test_amount_above_supply_is_refused() -> None:
    tx = btc.parse_transaction(build().raw)
    raw = tx.serialize()
    first_amount = tx.outputs[0].amount.to_bytes(8, "little")
    at = raw.index(first_amount)
    with pytest.raises(InvalidTransactionError, match="output amount"):
        btc.parse_transaction(raw[:at] + (btc.MAX_MONEY + 1).to_bytes(8, "little") + raw[at + 8 :])


def test_transaction_without_outputs_is_refused() -> None:
    tx = btc.parse_transaction(build().raw)
    stripped = tx.serialize()
    outputs_start = 4 + 1 + 2 * 41
    raw = stripped[:outputs_start] + b"\x00" + stripped[-4:]
    with pytest.raises(InvalidTransactionError, match="at least one input and output"):
        btc.parse_transaction(raw)


# --- round trips --------------------------------------------------------------------------

txids = st.binary(min_size=32, max_size=32).map(bytes.hex)
u32 = st.integers(0, 0xFFFFFFFF)
scripts = st.binary(max_size=300)
tx_inputs = st.builds(btc.TxInput, txids, u32, scripts, u32)
tx_outputs = st.builds(btc.TxOutput, st.integers(0, btc.MAX_MONEY // 8), scripts)


@st.composite
def transactions(draw: st.DrawFn) -> btc.Transaction:
    inputs = tuple(draw(st.lists(tx_inputs, min_size=1, max_size=4)))
    outputs = tuple(draw(st.lists(tx_outputs, min_size=1, max_size=4)))
    stacks = st.lists(st.binary(max_size=80), max_size=3).map(tuple)
    witnesses = draw(st.just(()) | st.tuples(*[stacks] * len(inputs)))
    return btc.Transaction(draw(u32), inputs, outputs, draw(u32), witnesses)


@given(transactions())
def test_any_transaction_round_trips(tx: btc.Transaction) -> None:
    raw = tx.serialize()
    assert btc.parse_transaction(raw) == tx
    assert btc.parse_transaction(raw).serialize() == raw
    assert btc.parse_transaction(tx.serialize(include_witness=False)) == replace(tx, witnesses=())


@settings(max_examples=60, deadline=None)
@given(
    amounts=st.lists(st.integers(1_000, 50_000_000), min_size=1, max_size=6),
    share=st.floats(0.05, 1.0),
    fee_rate=st.integers(1, 200),
)
def test_build_parse_serialise_round_trip(amounts: list[int], share: float, fee_rate: int) -> None:
    utxos = [(TXIDS[i], i, a) for i, a in enumerate(amounts)]
    amount = max(330, int(sum(amounts) * share))
    try:
        unsigned = build(utxos=utxos, amount=amount, fee_rate=fee_rate)
    except InsufficientFundsError:
        return
    tx = btc.parse_transaction(unsigned.raw)
    assert tx.serialize() == unsigned.raw
    assert sum(amounts) == sum(o.amount for o in tx.outputs) + unsigned.fee
    assert unsigned.fee >= unsigned.vsize * fee_rate
    assert unsigned.change == 0 or unsigned.change >= 294
    assert unsigned.change > 0 or unsigned.fee - unsigned.vsize * fee_rate < 294 + 31 * fee_rate
    view = btc.decode_for_review(unsigned.raw, unsigned.prevouts, "testnet", OWN_ADDRESS)
    assert view["fee"] == str(unsigned.fee)
