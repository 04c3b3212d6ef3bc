"""The Esplora backend against the documented REST shapes (no Bitcoin node installs here).

Answers follow Blockstream's Esplora ``API.md`` (github.com/Blockstream/esplora, "HTTP
API"): ``GET /address/:address/utxo``, ``/tx/:txid/hex``, ``/tx/:txid/status``,
``/fee-estimates``, ``/blocks/tip/height``, ``/block-height/0`` and ``POST /tx``, served
by ``httpx.MockTransport`` (see ``mock_nodes.py``). The transactions are real signed
ones built by ``core.chains.bitcoin``, so the txid checks hash real bytes.
"""

from __future__ import annotations

import httpx
import pytest
from tests.chainio.mock_nodes import MAINNET_GENESIS, NETWORK, EsploraServer, Wallet, backend_for

from tandem.chainio import BitcoinBackend, ChainConfig
from tandem.chainio.bitcoin import EsploraBackend
from tandem.core.chains import bitcoin as btc
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    ChainNotConfiguredError,
    ChainRejectedError,
    ChainUnreachableError,
    InvalidTransactionError,
)


def esplora(server: EsploraServer) -> EsploraBackend:
    backend = backend_for("bitcoin", NETWORK, "esplora+https://esplora.example/api", server)
    assert isinstance(backend, EsploraBackend)
    return backend


def test_chain_access_is_off_until_an_endpoint_is_configured() -> None:
    config = ChainConfig.from_env({})
    assert not config.enabled
    with pytest.raises(ChainNotConfiguredError, match="TANDEM_CHAIN_BITCOIN_MAINNET") as info:
        config.backend("bitcoin", "mainnet")
    assert info.value.code == "chain_not_configured"


def test_utxos_come_with_their_previous_transactions_checked() -> None:
    server = EsploraServer()
    ours = Wallet.new()
    first = server.fund(ours.address, 40_000, height=150)
    second = server.fund(ours.address, 2_500, height=None)  # still in the mempool
    backend = esplora(server)
    assert isinstance(backend, BitcoinBackend)

    utxos = backend.utxos(ours.address)
    assert [(u.txid, u.amount, u.block_height) for u in utxos] == [
        (first, 40_000, 150),
        (second, 2_500, None),
    ]
    for utxo in utxos:
        tx = btc.parse_transaction(utxo.raw_tx)
        assert tx.txid == utxo.txid
        assert tx.outputs[utxo.vout].amount == utxo.amount
        assert utxo.script_pubkey == btc.address_to_script(ours.address, NETWORK)
        assert "raw_tx" not in repr(utxo)
    assert backend.balance(ours.address).amount == 42_500
    assert backend.balance(ours.address).block_height == 200
    assert "GET /block-height/0" in server.requests  # the chain is checked first
    assert server.requests[0] == "GET /block-height/0"


def test_checked_utxos_feed_tandems_own_spend_builder_and_reviewer() -> None:
    server = EsploraServer()
    ours = Wallet.new()
    server.fund(ours.address, 100_000)
    utxos = esplora(server).utxos(ours.address)
    unsigned = btc.build_p2wpkh_spend(
        from_pubkey=ours.public_key,
        prevouts=[u.prevout() for u in utxos],
        destination=Wallet.new().address,
        amount=60_000,
        fee_rate=esplora(server).suggest_fee_rate(6).sat_per_vb,
        network=NETWORK,
    )
    view = btc.decode_for_review(unsigned.raw, [u.prevout() for u in utxos], NETWORK)
    assert view["inputs"][0]["amount"] == "100000"
    assert int(view["fee"]) == unsigned.fee


def test_a_node_lying_about_a_utxo_amount_is_refused() -> None:
    server = EsploraServer()
    ours = Wallet.new()
    txid = server.fund(ours.address, 10_000, claimed=10_000_000)
    with pytest.raises(
        ChainBadResponseError, match="holds 10000000 sats; its transaction says 10000"
    ) as info:
        esplora(server).utxos(ours.address)
    assert info.value.code == "chain_bad_response"
    assert txid in info.value.message


def test_a_raw_transaction_that_does_not_hash_to_its_txid_is_refused() -> None:
    server = EsploraServer()
    ours = Wallet.new()
    txid = server.fund(ours.address, 10_000)
    other_raw, other_txid = server.transactions[server.fund(Wallet.new().address, 10_000)], None
    server.served_hex[txid] = other_raw.hex()
    del other_txid
    with pytest.raises(ChainBadResponseError, match=f"served for {txid} hashes to"):
        esplora(server).utxos(ours.address)
    with pytest.raises(ChainBadResponseError, match="hashes to"):
        esplora(server).raw_transaction(txid)


def test_an_output_that_pays_someone_else_is_refused() -> None:
    server = EsploraServer()
    ours, theirs = Wallet.new(), Wallet.new()
    txid = server.fund(theirs.address, 10_000)
    server.utxos[ours.address] = server.utxos.pop(theirs.address)
    with pytest.raises(ChainBadResponseError, match=f"{txid}:.* does not pay {ours.address}"):
        esplora(server).utxos(ours.address)


def test_an_outpoint_listed_twice_is_refused() -> None:
    server = EsploraServer()
    ours = Wallet.new()
    server.fund(ours.address, 10_000)
    server.utxos[ours.address].append(dict(server.utxos[ours.address][0]))
    with pytest.raises(ChainBadResponseError, match="listed twice"):
        esplora(server).utxos(ours.address)


@pytest.mark.parametrize("value", [10000.0, 1.5e4, "10000", True, -1, 21_000_000 * 10**8 + 1])
def test_a_utxo_value_that_is_not_a_whole_number_of_sats_is_refused(value: object) -> None:
    server = EsploraServer()
    ours = Wallet.new()
    server.fund(ours.address, 10_000)
    server.utxos[ours.address][0]["value"] = value
    with pytest.raises(ChainBadResponseError):
        esplora(server).utxos(ours.address)


def test_a_server_for_another_network_is_refused() -> None:
    server = EsploraServer(genesis=MAINNET_GENESIS)
    with pytest.raises(ChainMismatchError, match="not bitcoin regtest") as info:
        esplora(server).tip_height()
    assert info.value.code == "chain_mismatch"
    assert server.requests == ["GET /block-height/0"]


def test_transaction_status_counts_confirmations_from_the_tip() -> None:
    server = EsploraServer(tip=200)
    ours = Wallet.new()
    confirmed = server.fund(ours.address, 1_000, height=150)
    pending = server.fund(ours.address, 1_000, height=None)
    backend = esplora(server)
    status = backend.transaction_status(confirmed)
    assert (status.state, status.block_height, status.confirmations) == ("confirmed", 150, 51)
    assert backend.transaction_status(pending).state == "pending"
    assert backend.transaction_status("ab" * 32).state == "unknown"
    server.tip = 149
    with pytest.raises(ChainBadResponseError, match="above the tip"):
        backend.transaction_status(confirmed)


def test_fee_estimates_round_up_to_whole_sat_per_vbyte() -> None:
    server = EsploraServer()
    backend = esplora(server)
    assert backend.suggest_fee_rate(6).sat_per_vb == 69  # 68.285 rounded up
    nearest = backend.suggest_fee_rate(4)  # no estimate for 4: the faster 3-block one
    assert (nearest.sat_per_vb, nearest.target_blocks) == (88, 3)
    assert backend.suggest_fee_rate(1008).sat_per_vb == 2
    server.fee_estimates = {"144": 0.5}
    assert backend.suggest_fee_rate(1).sat_per_vb == 1  # nothing faster: the slowest offered, at least 1


@pytest.mark.parametrize("estimates", [{}, {"6": "12"}, {"6": -1}, {"six": 5}, {"6": 1e9}, [1, 2]])
def test_fee_estimates_in_another_shape_are_refused(estimates: object) -> None:
    server = EsploraServer(fee_estimates=estimates)
    with pytest.raises(ChainBadResponseError):
        esplora(server).suggest_fee_rate(6)


def test_broadcast_posts_the_hex_and_checks_the_answered_txid() -> None:
    server = EsploraServer()
    raw, txid = btc.sign_p2wpkh_spend(*_spend())
    assert esplora(server).broadcast(raw) == txid
    assert server.broadcasts == [raw.hex()]

    server.broadcast_answer = lambda body: httpx.Response(200, text="cd" * 32)
    with pytest.raises(ChainBadResponseError, match=f"the transaction's is {txid}"):
        esplora(server).broadcast(raw)


def test_a_refused_broadcast_is_chain_rejected_with_the_node_words() -> None:
    server = EsploraServer()
    server.broadcast_answer = lambda body: httpx.Response(
        400, text='sendrawtransaction RPC error: {"code":-26,"message":"min relay fee not met"}\n\x1b[31m'
    )
    raw, _ = btc.sign_p2wpkh_spend(*_spend())
    with pytest.raises(ChainRejectedError, match="min relay fee not met") as info:
        esplora(server).broadcast(raw)
    assert info.value.code == "chain_rejected"
    assert "\x1b" not in info.value.message


def test_garbage_is_refused_before_anything_is_posted() -> None:
    server = EsploraServer()
    with pytest.raises(InvalidTransactionError):
        esplora(server).broadcast(b"\x02\x00\x00\x00garbage")
    assert server.broadcasts == []


def test_a_failing_server_is_chain_unreachable() -> None:
    backend = backend_for(
        "bitcoin", NETWORK, "esplora+https://esplora.example/api", lambda r: httpx.Response(503, text="busy")
    )
    with pytest.raises(ChainUnreachableError, match=r"https://esplora.example failed \(HTTP 503\)") as info:
        backend.tip_height()
    assert info.value.code == "chain_unreachable"


def _spend() -> tuple[bytes, tuple[btc.Prevout, ...], bytes]:
    wallet = Wallet.new()
    server = EsploraServer()
    server.fund(wallet.address, 80_000)
    utxos = esplora(server).utxos(wallet.address)
    unsigned = btc.build_p2wpkh_spend(
        from_pubkey=wallet.public_key,
        prevouts=[u.prevout() for u in utxos],
        destination=Wallet.new().address,
        amount=30_000,
        fee_rate=3,
        network=NETWORK,
    )
    return unsigned.raw, unsigned.prevouts, wallet.private_key
