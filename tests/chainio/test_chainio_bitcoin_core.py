"""The Bitcoin Core RPC backend against the documented answer shapes.

No Bitcoin node installs from the package registries here. Answers follow Bitcoin
Core's RPC reference (``bitcoin-cli help <method>``; developer.bitcoin.org "RPC API
Reference"): ``scantxoutset`` (amounts in BTC as JSON decimals), ``getrawtransaction``
(hex, or the verbose object with ``confirmations``), ``getblockhash``,
``estimatesmartfee`` (``feerate`` in BTC/kvB, or ``errors``), ``sendrawtransaction``,
``getblockcount`` and ``getblockchaininfo``; errors as Core sends them: HTTP 500 with
``{"result": null, "error": {"code", "message"}, "id"}``. Served by httpx.MockTransport;
the transactions are real ones signed by ``core.chains.bitcoin``.
"""

from __future__ import annotations

import base64
import secrets
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.chainio.mock_nodes import (
    NETWORK,
    JsonRpcServer,
    RpcFault,
    Wallet,
    backend_for,
    funding_transaction,
)

from tandem.chainio.bitcoin import BitcoinCoreBackend
from tandem.core.chains import bitcoin as btc
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    ChainRejectedError,
    ChainUnreachableError,
)

URL = "bitcoincore+http://tandem:s3cret-rpc@127.0.0.1:18443"


class CoreNode:
    """Just enough of a regtest node's state to answer the documented RPCs."""

    def __init__(self, *, chain: str = "regtest", height: int = 300) -> None:
        self.chain = chain
        self.height = height
        self.block_hashes = {h: secrets.token_hex(32) for h in range(height + 1)}
        self.unspents: dict[str, list[dict[str, Any]]] = {}
        self.transactions: dict[str, tuple[bytes, int | None]] = {}  # txid -> (raw, height)
        self.fee: dict[str, Any] = {"feerate": Decimal("0.00010000"), "blocks": 6}
        self.send: Any = None
        self.server = JsonRpcServer(
            style="core",
            methods={
                "getblockchaininfo": lambda p: {
                    "chain": self.chain,
                    "blocks": self.height,
                    "headers": self.height,
                },
                "getblockcount": lambda p: self.height,
                "getblockhash": lambda p: self.block_hashes[p[0]],
                "scantxoutset": self.scantxoutset,
                "getrawtransaction": self.getrawtransaction,
                "estimatesmartfee": lambda p: self.fee,
                "sendrawtransaction": self.sendrawtransaction,
            },
        )

    def fund(self, address: str, sats: int, *, height: int = 250, amount: Any = None) -> str:
        raw, txid = funding_transaction(address, sats)
        self.transactions[txid] = (raw, height)
        tx = btc.parse_transaction(raw)
        script = btc.address_to_script(address, NETWORK)
        vout = next(i for i, o in enumerate(tx.outputs) if o.script_pubkey == script)
        self.unspents.setdefault(address, []).append(
            {
                "txid": txid,
                "vout": vout,
                "scriptPubKey": script.hex(),
                "desc": f"addr({address})#00000000",
                "amount": Decimal(sats) / 10**8 if amount is None else amount,
                "coinbase": False,
                "height": height,
            }
        )
        return txid

    def scantxoutset(self, params: list[Any]) -> dict[str, Any]:
        assert params[0] == "start"
        [descriptor] = params[1]
        address = descriptor.removeprefix("addr(").removesuffix(")")
        unspents = self.unspents.get(address, [])
        return {
            "success": True,
            "txouts": 1234,
            "height": self.height,
            "bestblock": self.block_hashes[self.height],
            "unspents": unspents,
            "total_amount": sum(
                (u["amount"] for u in unspents if isinstance(u["amount"], Decimal)), Decimal(0)
            ),
        }

    def getrawtransaction(self, params: list[Any]) -> Any:
        txid, verbose = params[0], params[1]
        if txid not in self.transactions:
            raise RpcFault(
                -5, "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."
            )
        raw, height = self.transactions[txid]
        if len(params) == 3 and params[2] != self.block_hashes.get(height or -1):
            raise RpcFault(-5, "No such transaction found in the provided block.")
        if not verbose:
            return raw.hex()
        answer: dict[str, Any] = {"txid": txid, "hash": txid, "hex": raw.hex(), "version": 2, "locktime": 0}
        if height is not None:
            answer |= {"blockhash": self.block_hashes[height], "confirmations": self.height - height + 1}
        return answer

    def sendrawtransaction(self, params: list[Any]) -> Any:
        if self.send is not None:
            return self.send(params)
        return btc.parse_transaction(bytes.fromhex(params[0])).txid


def core(node: CoreNode, url: str = URL) -> BitcoinCoreBackend:
    backend = backend_for("bitcoin", NETWORK, url, node.server)
    assert isinstance(backend, BitcoinCoreBackend)
    return backend


def test_utxos_come_from_scantxoutset_with_previous_transactions_fetched_by_block() -> None:
    node = CoreNode()
    ours = Wallet.new()
    first = node.fund(ours.address, 12_345, height=250)
    second = node.fund(ours.address, 1_000_000, height=299)
    backend = core(node)
    utxos = backend.utxos(ours.address)
    assert [(u.txid, u.amount, u.block_height) for u in utxos] == [
        (first, 12_345, 250),
        (second, 1_000_000, 299),
    ]
    assert all(btc.parse_transaction(u.raw_tx).txid == u.txid for u in utxos)
    # getrawtransaction was asked with the block hash, so the node needs no -txindex
    raw_calls = [p for name, p in node.server.calls if name == "getrawtransaction"]
    assert [p[2] for p in raw_calls] == [node.block_hashes[250], node.block_hashes[299]]
    assert node.server.methods_called()[0] == "getblockchaininfo"
    balance = backend.balance(ours.address)
    assert (balance.amount, balance.block_height) == (1_012_345, 300)


def test_rpc_credentials_go_in_the_authorization_header_only() -> None:
    seen: list[httpx.Request] = []
    node = CoreNode()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return node.server(request)

    backend = backend_for("bitcoin", NETWORK, URL, handler)
    backend.tip_height()
    expected = "Basic " + base64.b64encode(b"tandem:s3cret-rpc").decode()
    assert all(r.headers["authorization"] == expected for r in seen)
    assert all("s3cret" not in str(r.url) for r in seen)


def test_a_refused_login_is_unreachable_and_does_not_echo_the_password() -> None:
    backend = backend_for("bitcoin", NETWORK, URL, lambda r: httpx.Response(401, text=""))
    with pytest.raises(ChainUnreachableError, match="refused our credentials") as info:
        backend.tip_height()
    assert "s3cret" not in info.value.diagnostics()
    assert "tandem:" not in info.value.diagnostics()


def test_a_node_lying_about_an_amount_is_refused() -> None:
    node = CoreNode()
    ours = Wallet.new()
    node.fund(ours.address, 5_000, amount=Decimal("50.00000000"))
    with pytest.raises(ChainBadResponseError, match="holds 5000000000 sats; its transaction says 5000"):
        core(node).utxos(ours.address)


@pytest.mark.parametrize("amount", [Decimal("0.000000001"), "0.0001", True, Decimal("-0.0001")])
def test_an_amount_that_is_not_whole_satoshis_is_refused(amount: Any) -> None:
    node = CoreNode()
    ours = Wallet.new()
    node.fund(ours.address, 10_000, amount=amount)
    with pytest.raises(ChainBadResponseError):
        core(node).utxos(ours.address)


def test_a_node_of_another_chain_is_refused() -> None:
    node = CoreNode(chain="main")
    with pytest.raises(ChainMismatchError, match="serves chain 'main', not bitcoin regtest"):
        core(node).tip_height()
    assert node.server.methods_called() == ["getblockchaininfo"]


def test_transaction_status_from_verbose_getrawtransaction() -> None:
    node = CoreNode(height=300)
    ours = Wallet.new()
    mined = node.fund(ours.address, 1_000, height=290)
    backend = core(node)
    status = backend.transaction_status(mined)
    assert (status.state, status.block_height, status.confirmations) == ("confirmed", 290, 11)
    raw, txid = funding_transaction(ours.address, 1_000)
    node.transactions[txid] = (raw, None)  # in the mempool
    assert backend.transaction_status(txid).state == "pending"
    assert backend.transaction_status("ee" * 32).state == "unknown"


def test_fee_rate_from_estimatesmartfee_in_btc_per_kvb() -> None:
    node = CoreNode()
    backend = core(node)
    assert backend.suggest_fee_rate(6).sat_per_vb == 10  # 0.0001 BTC/kvB
    node.fee = {"feerate": Decimal("0.00001001"), "blocks": 2}
    rate = backend.suggest_fee_rate(2)
    assert (rate.sat_per_vb, rate.target_blocks) == (2, 2)  # 1.001 sat/vB rounds up
    node.fee = {"errors": ["Insufficient data or no feerate found"], "blocks": 0}
    with pytest.raises(ChainRejectedError, match="Insufficient data"):
        backend.suggest_fee_rate(6)


def test_broadcast_returns_the_checked_txid_and_maps_rpc_errors() -> None:
    node = CoreNode()
    ours = Wallet.new()
    node.fund(ours.address, 90_000)
    backend = core(node)
    [utxo] = backend.utxos(ours.address)
    unsigned = btc.build_p2wpkh_spend(
        from_pubkey=ours.public_key,
        prevouts=[utxo.prevout()],
        destination=Wallet.new().address,
        amount=20_000,
        fee_rate=backend.suggest_fee_rate().sat_per_vb,
        network=NETWORK,
    )
    raw, txid = btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, ours.private_key)
    assert backend.broadcast(raw) == txid

    def refuse(params: list[Any]) -> Any:
        raise RpcFault(-26, "min relay fee not met, 100 < 141")

    node.send = refuse
    with pytest.raises(
        ChainRejectedError, match=r"sendrawtransaction: node refused \(-26\): min relay fee"
    ) as info:
        backend.broadcast(raw)
    assert info.value.details == {"rpc_code": -26}

    node.send = lambda params: "00" * 32
    with pytest.raises(ChainBadResponseError, match="node answered txid"):
        backend.broadcast(raw)


def test_an_answer_for_another_request_id_is_refused() -> None:
    server = JsonRpcServer(
        methods={},
        raw_reply=lambda call: httpx.Response(
            200, json={"result": {"chain": "regtest"}, "error": None, "id": 99}
        ),
    )
    backend = backend_for("bitcoin", NETWORK, URL, server)
    with pytest.raises(ChainBadResponseError, match="another request id"):
        backend.tip_height()
