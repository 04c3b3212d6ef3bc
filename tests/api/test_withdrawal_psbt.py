"""BIP-174 at the edges: `tandem withdraw psbt` writes the checked unsigned transaction
with every previous transaction, and a manager may give an intent's inputs as a PSBT."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from scripts.harness import funding_tx
from tests.api.test_withdrawal_cli import cli, run
from tests.conftest import World
from tests.helpers.withdrawals import btc_intent, setup
from typer.testing import CliRunner

from tandem.core.chains import bitcoin as btc
from tandem.core.chains import psbt

__all__ = ["cli"]  # the fixture, shared with the other CLI tests


def test_withdraw_psbt_writes_the_checked_transaction_with_its_previous_transactions(
    world: World, cli: CliRunner, tmp_path: Path
) -> None:
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    out = tmp_path / "tx.psbt"
    printed = run(cli, "withdraw", "psbt", created["id"], "--out", str(out), "-k", str(tmp_path / "bob.ks"))
    assert created["fingerprint"] in printed
    made = psbt.parse_psbt(out.read_bytes())
    assert made.tx.serialize() == bytes.fromhex(created["unsigned_tx"])
    utxos = created["intent"]["bitcoin"]["utxos"]
    for i, u in enumerate(utxos):
        assert made.input_value(i, psbt.IN_NON_WITNESS_UTXO) == bytes.fromhex(u["prev_tx"])
        prev = created["prevouts"][i]
        spent = btc.TxOutput(int(prev["amount"]), bytes.fromhex(prev["script_pubkey"]))
        assert made.input_value(i, psbt.IN_WITNESS_UTXO) == spent.serialize()
    as_text = run(cli, "withdraw", "psbt", created["id"], "-k", str(tmp_path / "bob.ks")).strip()
    assert base64.b64decode(as_text) == out.read_bytes()


def test_an_intent_may_give_its_inputs_as_a_psbt(world: World, cli: CliRunner, tmp_path: Path) -> None:
    s = setup(world)
    deposit = funding_tx(s.btc_from, [70_000, 80_000], witness=True)
    # What a watch-only wallet hands over: the inputs and their previous transactions.
    tx = psbt.UnsignedTx(2, (btc.TxInput(deposit.txid, 1), btc.TxInput(deposit.txid, 0)), (), 0)
    sheet = psbt.Psbt(
        ((b"\x00", tx.serialize()),),
        (((b"\x00", deposit.serialize()),), ((b"\x00", deposit.serialize()),)),
        (),
    )
    intent = btc_intent(s)
    intent["bitcoin"] = {"psbt": sheet.to_base64(), "fee_rate": 5}
    intent_file = tmp_path / "intent.json"
    intent_file.write_text(json.dumps(intent))
    run(cli, "withdraw", "create", str(intent_file), "-k", str(tmp_path / "alice.ks"))
    (w,) = world.client.withdrawals.list(world["olga"])
    utxos = w["intent"]["bitcoin"]["utxos"]
    assert [(u["txid"], u["vout"]) for u in utxos] == [(deposit.txid, 1), (deposit.txid, 0)]
    assert utxos[0]["prev_tx"] == deposit.serialize(include_witness=False).hex()
    view = world.client.withdrawals.get(world["bob"], w["id"])
    assert [p["amount"] for p in view["prevouts"]] == ["80000", "70000"]
