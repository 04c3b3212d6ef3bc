"""BIP-174 PSBTs: the BIP's own test vectors, what Tandem writes for a withdrawal, and
(when installed, from the ``dev`` extra) an independent implementation, embit."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.chains import bitcoin as btc
from tandem.core.chains import psbt, secp256k1
from tandem.errors import InvalidTransactionError, UnprovenInputError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "vectors" / "bitcoin_bip174.json").read_text()
)
KEY = hashlib.sha256(b"tandem psbt test key").digest()
PUB = secp256k1.public_key(KEY)
OWN = btc.p2wpkh_script(btc.hash160(PUB))
DEST = btc.p2wpkh_address(secp256k1.public_key(hashlib.sha256(b"dest").digest()), "testnet")


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["case"])
def test_bip174_invalid_vectors_are_refused(case: dict[str, str]) -> None:
    assert base64.b64decode(case["base64"]) == bytes.fromhex(case["hex"])
    with pytest.raises(InvalidTransactionError):
        psbt.parse_psbt(bytes.fromhex(case["hex"]))
    with pytest.raises(InvalidTransactionError):
        psbt.decode_psbt_text(case["base64"])


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["case"])
def test_bip174_valid_vectors_parse_and_serialise_to_their_own_bytes(case: dict[str, str]) -> None:
    parsed = psbt.decode_psbt_text(case["base64"])
    assert parsed.serialize().hex() == case["hex"]
    assert parsed.to_base64() == case["base64"]
    assert len(parsed.inputs) == len(parsed.tx.inputs)
    assert len(parsed.outputs) == len(parsed.tx.outputs)


def test_bip174_creator_vector() -> None:
    creator = VECTORS["creator"]
    tx = psbt.UnsignedTx(
        2,
        tuple(btc.TxInput(txid, vout, b"", 0xFFFFFFFF) for txid, vout in creator["inputs"]),
        tuple(btc.TxOutput(amount, bytes.fromhex(script)) for script, amount in creator["outputs"]),
        0,
    )
    made = psbt.Psbt(((b"\x00", tx.serialize()),), ((), ()), ((), ()))
    assert made.serialize().hex() == creator["psbt_hex"]
    assert made.to_base64() == creator["psbt_base64"]


def test_bip174_updater_vector_and_what_tandem_accepts_as_inputs() -> None:
    updated = psbt.parse_psbt(bytes.fromhex(VECTORS["updated_psbt_hex"]))
    prev_segwit, prev_p2sh = (bytes.fromhex(h) for h in VECTORS["updater_previous_transactions"])
    # Input 0 carries its whole previous transaction; it is the one the BIP lists.
    assert updated.input_value(0, psbt.IN_NON_WITNESS_UTXO) == prev_p2sh
    # Input 1 (P2SH-P2WSH) only has a witness UTXO: its amount is the updater's word.
    assert updated.input_value(1, psbt.IN_NON_WITNESS_UTXO) is None
    spent = btc.parse_transaction(prev_segwit).outputs[1]
    assert updated.input_value(1, psbt.IN_WITNESS_UTXO) == spent.serialize()
    with pytest.raises(UnprovenInputError, match="input 1 has no previous transaction"):
        psbt.proven_inputs(updated)


def test_every_stage_of_the_bip174_walk_through_round_trips() -> None:
    stages = [VECTORS["updated_psbt_hex"], *VECTORS["unknown_types"].values()]
    stages += [v for k, v in VECTORS["signed_and_combined"].items() if k != "extracted_tx_hex"]
    for hex_ in stages:
        assert psbt.parse_psbt(bytes.fromhex(hex_)).serialize().hex() == hex_


# --- what Tandem writes ------------------------------------------------------------------------


def deposit(*amounts: int, witness: bool = True) -> btc.Transaction:
    stacks = ((b"\x30" * 72, PUB),) if witness else ()
    src = btc.TxInput(hashlib.sha256(repr(amounts).encode()).hexdigest(), 1)
    return btc.Transaction(2, (src,), tuple(btc.TxOutput(a, OWN) for a in amounts), 0, stacks)


def withdrawal(*funding: tuple[btc.Transaction, int]) -> tuple[btc.UnsignedBitcoinTx, list[bytes]]:
    prevouts = [btc.prevout_from_tx(tx.serialize(), tx.txid, vout) for tx, vout in funding]
    unsigned = btc.build_p2wpkh_spend(
        from_pubkey=PUB, prevouts=prevouts, destination=DEST, amount=60_000, fee_rate=3, network="testnet"
    )
    return unsigned, [tx.serialize() for tx, _ in funding]


def test_a_withdrawal_psbt_carries_each_previous_transaction() -> None:
    a, b = deposit(50_000, 40_000), deposit(30_000, witness=False)
    unsigned, prev = withdrawal((a, 1), (b, 0))
    made = psbt.psbt_for_unsigned(unsigned.raw, prev)
    again = psbt.parse_psbt(made.serialize())
    assert again == made
    assert again.tx.serialize() == unsigned.raw
    # Written without witness (one spelling), amounts consistent with the previous tx.
    assert again.input_value(0, psbt.IN_NON_WITNESS_UTXO) == a.serialize(include_witness=False)
    assert again.input_value(0, psbt.IN_WITNESS_UTXO) == btc.TxOutput(40_000, OWN).serialize()
    proven = psbt.proven_inputs(again)
    assert [(p.txid, p.vout) for p in proven] == [(a.txid, 1), (b.txid, 0)]
    with pytest.raises(InvalidTransactionError, match="1 previous transactions for 2 inputs"):
        psbt.psbt_for_unsigned(unsigned.raw, prev[:1])
    with pytest.raises(UnprovenInputError, match="hashes to"):
        psbt.psbt_for_unsigned(unsigned.raw, [prev[1], prev[0]])


def test_a_psbt_whose_previous_transaction_is_not_the_input_s_is_refused() -> None:
    a = deposit(90_000, 40_000)
    unsigned, prev = withdrawal((a, 0))
    made = psbt.psbt_for_unsigned(unsigned.raw, prev)
    other = deposit(90_001, 40_000).serialize()
    swapped = psbt.Psbt(made.global_map, (((b"\x00", other),),), made.outputs)
    with pytest.raises(UnprovenInputError, match="hashes to"):
        psbt.parse_psbt(swapped.serialize())


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_after_the_magic_never_crash(tail: bytes) -> None:
    with contextlib.suppress(InvalidTransactionError):
        psbt.parse_psbt(psbt.MAGIC + tail)


def test_every_truncation_of_a_withdrawal_psbt_is_refused() -> None:
    unsigned, prev = withdrawal((deposit(90_000), 0))
    raw = psbt.psbt_for_unsigned(unsigned.raw, prev).serialize()
    for cut in range(len(raw)):
        with pytest.raises(InvalidTransactionError):
            psbt.parse_psbt(raw[:cut])


# --- an independent implementation -------------------------------------------------------------


def test_embit_reads_the_same_transaction_amounts_and_fee() -> None:
    embit_psbt = pytest.importorskip("embit.psbt")
    a, b = deposit(50_000, 40_000), deposit(30_000)
    unsigned, prev = withdrawal((a, 1), (b, 0))
    raw = psbt.psbt_for_unsigned(unsigned.raw, prev).serialize()
    theirs = embit_psbt.PSBT.parse(raw)
    assert theirs.serialize() == raw
    assert theirs.tx.serialize() == unsigned.raw
    amounts = [inp.utxo.value for inp in theirs.inputs]
    assert amounts == [40_000, 30_000]
    assert [inp.non_witness_utxo.txid().hex() for inp in theirs.inputs] == [a.txid, b.txid]
    assert theirs.fee() == unsigned.fee
    # The BIP's valid vectors that embit reads (it refuses transactions with no inputs).
    for case in VECTORS["valid"]:
        if psbt.parse_psbt(bytes.fromhex(case["hex"])).tx.inputs:
            assert embit_psbt.PSBT.parse(bytes.fromhex(case["hex"])).serialize().hex() == case["hex"]
