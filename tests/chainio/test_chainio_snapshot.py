"""Offline UTXO snapshots for cold storage, read with no network at all.

The shapes are those the tools print: an Esplora ``GET /address/:address/utxo`` answer
(Blockstream esplora ``API.md``), Bitcoin Core ``scantxoutset`` output (RPC reference),
and a plain CSV ``txid,vout,value,address[,raw_tx]``. The previous transactions are
real ones signed by ``core.chains.bitcoin``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from tests.chainio.mock_nodes import NETWORK, Wallet, funding_transaction

from tandem.chainio import BitcoinBackend, ChainConfig
from tandem.chainio.snapshot import SnapshotBackend, from_csv, from_esplora_json, from_scantxoutset_json
from tandem.core.chains import bitcoin as btc
from tandem.errors import ChainBadResponseError, ChainConfigError, ChainUnsupportedError


def funded(address: str, sats: int) -> tuple[str, int, bytes]:
    raw, txid = funding_transaction(address, sats)
    script = btc.address_to_script(address, NETWORK)
    vout = next(i for i, o in enumerate(btc.parse_transaction(raw).outputs) if o.script_pubkey == script)
    return txid, vout, raw


def csv_text(rows: list[tuple[str, int, int, str, bytes | None]], *, with_raw: bool = True) -> str:
    header = "txid,vout,value,address" + (",raw_tx" if with_raw else "")
    lines = [header]
    for txid, vout, value, address, raw in rows:
        line = f"{txid},{vout},{value},{address}"
        if with_raw:
            line += "," + (raw.hex() if raw else "")
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_csv_snapshot_with_raw_transactions_gives_checked_utxos() -> None:
    cold = Wallet.new()
    a, b = funded(cold.address, 70_000), funded(cold.address, 30_000)
    snapshot = from_csv(
        csv_text([(a[0], a[1], 70_000, cold.address, a[2]), (b[0], b[1], 30_000, cold.address, b[2])]),
        network=NETWORK,
    )
    backend = SnapshotBackend.of(snapshot)
    assert isinstance(backend, BitcoinBackend)
    utxos = backend.utxos(cold.address)
    assert [(u.txid, u.amount) for u in utxos] == [(a[0], 70_000), (b[0], 30_000)]
    assert backend.balance(cold.address).amount == 100_000
    assert backend.raw_transaction(a[0]) == a[2]


def test_a_snapshot_row_that_misstates_its_amount_is_refused() -> None:
    cold = Wallet.new()
    txid, vout, raw = funded(cold.address, 70_000)
    snapshot = from_csv(csv_text([(txid, vout, 7_000_000, cold.address, raw)]), network=NETWORK)
    with pytest.raises(ChainBadResponseError, match="holds 7000000 sats; its transaction says 70000"):
        snapshot.utxos()


def test_a_row_without_its_previous_transaction_is_listed_but_never_a_utxo() -> None:
    cold = Wallet.new()
    txid, vout, _ = funded(cold.address, 70_000)
    snapshot = from_csv(csv_text([(txid, vout, 70_000, cold.address, None)], with_raw=False), network=NETWORK)
    assert [(e.txid, e.amount) for e in snapshot.entries] == [(txid, 70_000)]
    with pytest.raises(ChainBadResponseError, match="without its previous transaction"):
        snapshot.utxos(cold.address)


@pytest.mark.parametrize(
    "text",
    [
        "txid,vout,amount,address\n",  # wrong header
        "txid,vout,value,address\n{txid},0,1.5,{address}\n",  # a float
        "txid,vout,value,address\n{txid},0,1e5,{address}\n",
        "txid,vout,value,address\n{txid},-1,100,{address}\n",
        "txid,vout,value,address\n{txid},0,100\n",  # a missing field
        "txid,vout,value,address\nnot-a-txid,0,100,{address}\n",
        "txid,vout,value,address\n{txid},0,100,bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4\n",  # mainnet
        "txid,vout,value,address\n{txid},0,100,{address}\n{txid},0,100,{address}\n",  # twice
        "",
    ],
)
def test_malformed_csv_is_refused(text: str) -> None:
    cold = Wallet.new()
    with pytest.raises(ChainBadResponseError):
        from_csv(text.format(txid="ab" * 32, address=cold.address), network=NETWORK)


def test_a_raw_transaction_for_another_txid_is_refused_when_read() -> None:
    cold = Wallet.new()
    txid, vout, _ = funded(cold.address, 1_000)
    _, _, other_raw = funded(cold.address, 1_000)
    with pytest.raises(ChainBadResponseError, match="hashes to"):
        from_csv(csv_text([(txid, vout, 1_000, cold.address, other_raw)]), network=NETWORK)


def test_esplora_utxo_json_wrapped_with_its_transactions() -> None:
    cold = Wallet.new()
    txid, vout, raw = funded(cold.address, 55_000)
    esplora_answer = [
        {
            "txid": txid,
            "vout": vout,
            "status": {
                "confirmed": True,
                "block_height": 812_345,
                "block_hash": "00" * 32,
                "block_time": 1_700_000_000,
            },
            "value": 55_000,
        }
    ]
    doc = {"address": cold.address, "utxos": esplora_answer, "transactions": {txid: raw.hex()}}
    [utxo] = from_esplora_json(json.dumps(doc), network=NETWORK).utxos(cold.address)
    assert (utxo.amount, utxo.block_height) == (55_000, 812_345)

    bare = from_esplora_json(
        json.dumps(esplora_answer), network=NETWORK, address=cold.address, transactions={txid: raw.hex()}
    )
    assert bare.utxos()[0].amount == 55_000
    esplora_answer[0]["value"] = 55_000.0
    with pytest.raises(ChainBadResponseError, match="expected an integer"):
        from_esplora_json(json.dumps(esplora_answer), network=NETWORK, address=cold.address)
    esplora_answer[0] |= {"value": 55_000, "surprise": 1}
    with pytest.raises(ChainBadResponseError, match="unknown fields"):
        from_esplora_json(json.dumps(esplora_answer), network=NETWORK, address=cold.address)


def test_scantxoutset_output_with_btc_amounts() -> None:
    cold = Wallet.new()
    txid, vout, raw = funded(cold.address, 12_345_678)
    script = btc.address_to_script(cold.address, NETWORK)
    scan = (
        '{"success": true, "txouts": 9, "height": 900, "bestblock": "' + "11" * 32 + '", "unspents": ['
        f'{{"txid": "{txid}", "vout": {vout}, "scriptPubKey": "{script.hex()}", '
        f'"desc": "addr({cold.address})#abcdefgh", "amount": 0.12345678, "coinbase": false, "height": 850}}'
        '], "total_amount": 0.12345678}'
    )
    snapshot = from_scantxoutset_json(scan, network=NETWORK, transactions={txid: raw.hex()})
    assert snapshot.height == 900
    [utxo] = snapshot.utxos(cold.address)
    assert (utxo.amount, utxo.block_height, utxo.address) == (12_345_678, 850, cold.address)
    assert SnapshotBackend.of(snapshot).tip_height() == 900
    with pytest.raises(ChainBadResponseError, match="not a whole, non-negative number of satoshis"):
        from_scantxoutset_json(scan.replace("0.12345678,", "0.123456789,", 1), network=NETWORK)
    assert Decimal("0.12345678") * 10**8 == 12_345_678


def test_a_snapshot_file_is_a_read_only_backend_chosen_by_configuration(tmp_path: Path) -> None:
    cold = Wallet.new()
    txid, vout, raw = funded(cold.address, 9_000)
    path = tmp_path / "cold utxos.csv"
    path.write_text(csv_text([(txid, vout, 9_000, cold.address, raw)]), encoding="utf-8")
    config = ChainConfig.from_env({"TANDEM_CHAIN_BITCOIN_REGTEST": f"snapshot+{path.as_uri()}"})
    backend = config.backend("bitcoin", NETWORK)
    assert isinstance(backend, SnapshotBackend)
    assert backend.balance(cold.address).amount == 9_000
    for offline in (
        lambda: backend.broadcast(raw),
        backend.suggest_fee_rate,
        lambda: backend.transaction_status(txid),
        backend.tip_height,
    ):
        with pytest.raises(ChainUnsupportedError, match="offline UTXO snapshot") as info:
            offline()
        assert info.value.code == "chain_unsupported"

    missing = ChainConfig.from_env(
        {"TANDEM_CHAIN_BITCOIN_REGTEST": f"snapshot+{(tmp_path / 'none.csv').as_uri()}"}
    )
    with pytest.raises(ChainConfigError, match="cannot read the snapshot file"):
        missing.backend("bitcoin", NETWORK)
