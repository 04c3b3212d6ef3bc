"""Servers for httpx.MockTransport that answer in the shapes the APIs document.

No Bitcoin node or Solana validator installs from the package registries here, so the
Esplora, Bitcoin Core and Solana clients are tested against these. Each answer copies
the documented shape field for field:

* Esplora: Blockstream's ``API.md`` (github.com/Blockstream/esplora, "HTTP API"), the
  same API mempool.space documents at mempool.space/docs/api/rest.
* Bitcoin Core: the RPC reference (``bitcoin-cli help <method>``, developer.bitcoin.org
  "RPC API Reference"): ``scantxoutset``, ``getrawtransaction``, ``estimatesmartfee``,
  ``sendrawtransaction``, ``getblockcount``, ``getblockhash``, ``getblockchaininfo``.
* Solana: the JSON-RPC HTTP methods reference (solana.com/docs/rpc/http).

The transactions served are real ones: built and signed by ``core.chains.bitcoin``,
so every txid check the clients make is a real double-SHA256.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from tandem.chainio import ChainConfig
from tandem.chainio.base import ChainBackend
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import secp256k1

REGTEST_GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
MAINNET_GENESIS = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
NETWORK = "regtest"


@dataclass(frozen=True)
class Wallet:
    private_key: bytes = field(repr=False)
    public_key: bytes
    address: str

    @classmethod
    def new(cls, network: str = NETWORK) -> Wallet:
        key = secrets.token_bytes(32)
        public = secp256k1.public_key(key)
        return cls(key, public, btc.p2wpkh_address(public, network))


def funding_transaction(to_address: str, amount: int, *, network: str = NETWORK) -> tuple[bytes, str]:
    """A signed P2WPKH spend (real signatures) paying ``amount`` sats to ``to_address``."""
    payer = Wallet.new(network)
    prev_txid = secrets.token_hex(32)
    unsigned = btc.build_p2wpkh_spend(
        from_pubkey=payer.public_key,
        prevouts=[btc.Prevout(prev_txid, 0, amount + 50_000, btc.address_to_script(payer.address, network))],
        destination=to_address,
        amount=amount,
        fee_rate=2,
        network=network,
    )
    return btc.sign_p2wpkh_spend(unsigned.raw, unsigned.prevouts, payer.private_key)


def backend_for(
    chain: str, network: str, spec: str, handler: Callable[[httpx.Request], httpx.Response]
) -> Any:
    config = ChainConfig.from_mapping({f"{chain}.{network}": spec})
    backend: ChainBackend = config.backend(chain, network, transport=httpx.MockTransport(handler))
    return backend


# --- Esplora ------------------------------------------------------------------------------


@dataclass
class EsploraServer:
    genesis: str = REGTEST_GENESIS
    tip: int = 200
    utxos: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    transactions: dict[str, bytes] = field(default_factory=dict)  # txid -> raw
    served_hex: dict[str, str] = field(default_factory=dict)  # overrides of /tx/:txid/hex
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    fee_estimates: Any = field(
        default_factory=lambda: {
            "1": 87.882,
            "2": 87.882,
            "3": 87.882,
            "6": 68.285,
            "144": 1.027,
            "1008": 1.027,
        }
    )
    broadcast_answer: Callable[[str], httpx.Response] | None = None
    requests: list[str] = field(default_factory=list)
    broadcasts: list[str] = field(default_factory=list)

    def fund(self, address: str, amount: int, *, height: int | None = 150, claimed: int | None = None) -> str:
        raw, txid = funding_transaction(address, amount)
        self.transactions[txid] = raw
        vout = next(
            i
            for i, o in enumerate(btc.parse_transaction(raw).outputs)
            if o.script_pubkey == btc.address_to_script(address, NETWORK)
        )
        status: dict[str, Any] = {"confirmed": False}
        if height is not None:
            status = {
                "confirmed": True,
                "block_height": height,
                "block_hash": secrets.token_hex(32),
                "block_time": 1_790_000_000,
            }
        self.utxos.setdefault(address, []).append(
            {"txid": txid, "vout": vout, "status": status, "value": amount if claimed is None else claimed}
        )
        self.statuses[txid] = status
        return txid

    def __call__(self, request: httpx.Request) -> httpx.Response:
        # The backend is configured at https://esplora.example/api, as public servers are.
        path = request.url.path.removeprefix("/api")
        self.requests.append(f"{request.method} {path}")
        parts = path.strip("/").split("/")
        if request.method == "POST" and parts == ["tx"]:
            body = request.content.decode("ascii")
            self.broadcasts.append(body)
            if self.broadcast_answer is not None:
                return self.broadcast_answer(body)
            return httpx.Response(200, text=btc.parse_transaction(bytes.fromhex(body)).txid)
        if parts == ["block-height", "0"]:
            return httpx.Response(200, text=self.genesis)
        if parts == ["blocks", "tip", "height"]:
            return httpx.Response(200, text=str(self.tip))
        if parts == ["fee-estimates"]:
            return httpx.Response(200, json=self.fee_estimates)
        if len(parts) == 3 and parts[0] == "address" and parts[2] == "utxo":
            return httpx.Response(200, json=self.utxos.get(parts[1], []))
        if len(parts) == 3 and parts[0] == "tx" and parts[2] == "hex":
            if parts[1] in self.served_hex:
                return httpx.Response(200, text=self.served_hex[parts[1]])
            if parts[1] in self.transactions:
                return httpx.Response(200, text=self.transactions[parts[1]].hex())
            return httpx.Response(404, text="Transaction not found")
        if len(parts) == 3 and parts[0] == "tx" and parts[2] == "status":
            if parts[1] in self.statuses:
                return httpx.Response(200, json=self.statuses[parts[1]])
            return httpx.Response(404, text="Transaction not found")
        return httpx.Response(404, text="Not found")


# --- JSON-RPC (Bitcoin Core, Solana) --------------------------------------------------------

_DECIMAL_MARK = re.compile(r'"@decimal:([-0-9.Ee+]+)"')


def json_response(status: int, body: Any) -> httpx.Response:
    """JSON with Decimal values written as plain number literals, as Bitcoin Core writes
    amounts (``0.00012345``) and Solana writes ``uiAmount``."""

    def mark(value: Any) -> str:
        if isinstance(value, Decimal):
            return f"@decimal:{format(value, 'f')}"
        raise TypeError(type(value).__name__)

    text = _DECIMAL_MARK.sub(r"\1", json.dumps(body, default=mark))
    return httpx.Response(status, content=text.encode(), headers={"content-type": "application/json"})


class RpcFault(Exception):  # noqa: N818 - a JSON-RPC error object, not a Python failure
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class JsonRpcServer:
    """Dispatches to ``methods[name](params)``; a raised RpcFault becomes an error object.

    ``style="core"`` answers as Bitcoin Core does (``result``, ``error`` and ``id``
    always present; an error with HTTP 500); ``style="2.0"`` as Solana does.
    """

    methods: dict[str, Callable[[list[Any]], Any]]
    style: str = "2.0"
    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    raw_reply: Callable[[dict[str, Any]], httpx.Response] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        call = json.loads(request.content)
        self.calls.append((call["method"], call["params"]))
        if self.raw_reply is not None:
            return self.raw_reply(call)
        handler = self.methods.get(call["method"])
        try:
            if handler is None:
                raise RpcFault(-32601, "Method not found")
            result = handler(call["params"])
        except RpcFault as fault:
            error = {"code": fault.code, "message": fault.message}
            if self.style == "core":
                return json_response(500, {"result": None, "error": error, "id": call["id"]})
            return json_response(200, {"jsonrpc": "2.0", "error": error, "id": call["id"]})
        if self.style == "core":
            return json_response(200, {"result": result, "error": None, "id": call["id"]})
        return json_response(200, {"jsonrpc": "2.0", "result": result, "id": call["id"]})

    def methods_called(self) -> list[str]:
        return [name for name, _ in self.calls]
