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

import base64
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
from tandem.chainio.solana import GENESIS_HASHES, TOKEN_PROGRAM
from tandem.core.chains import bitcoin as btc
from tandem.core.chains import secp256k1
from tandem.core.chains import solana as sol
from tandem.core.chains.base58 import b58decode, b58encode

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


# --- Solana ---------------------------------------------------------------------------


def signature_page(newest_first: list[dict[str, Any]], options: dict[str, Any]) -> list[dict[str, Any]]:
    """getSignaturesForAddress's paging as the documentation states it: newest first,
    starting below ``before`` and stopping at ``until`` (both excluded), ``limit`` long."""
    names = [e["signature"] for e in newest_first]
    if "before" in options and options["before"] not in names:
        raise RpcFault(-32602, "Invalid param: signature not found")  # a node cannot page from it
    start = names.index(options["before"]) + 1 if "before" in options else 0
    stop = names.index(options["until"]) if options.get("until") in names else len(names)
    return newest_first[start:stop][: options["limit"]]


def new_account() -> tuple[bytes, str]:
    seed = secrets.token_bytes(32)
    return seed, sol.address_from_public_key(sol.public_key_from_seed(seed))


class SolanaNode:
    def __init__(self, cluster: str = "devnet") -> None:
        self.genesis = GENESIS_HASHES[cluster]
        self.slot = 341_197_933
        self.balances: dict[str, int] = {}
        self.token_accounts: dict[str, list[dict[str, Any]]] = {}
        self.transactions: dict[str, dict[str, Any]] = {}
        self.parsed_transactions: dict[str, dict[str, Any]] = {}  # jsonParsed encoding
        self.accounts: dict[str, dict[str, Any]] = {}  # getAccountInfo values (base64)
        self.lamports_per_signature = 5000
        self.blockhash = "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N"
        self.statuses: dict[str, dict[str, Any]] = {}
        self.signatures_of: dict[str, list[dict[str, Any]]] = {}
        self.sent: list[bytes] = []
        self.send_answer: Any = None
        self.server = JsonRpcServer(
            methods={
                "getGenesisHash": lambda p: self.genesis,
                "getSlot": lambda p: self.slot,
                "getBalance": lambda p: self.context(self.balances.get(p[0], 0)),
                "getTokenAccountsByOwner": self.get_token_accounts,
                "getSignaturesForAddress": lambda p: signature_page(self.signatures_of.get(p[0], []), p[1]),
                "getTransaction": self.get_transaction,
                "getAccountInfo": lambda p: self.context(self.accounts.get(p[0])),
                "getTokenAccountBalance": self.get_token_account_balance,
                "getFeeForMessage": lambda p: self.context(self.fee_for_message(base64.b64decode(p[0]))),
                "getSignatureStatuses": lambda p: self.context([self.statuses.get(s) for s in p[0]]),
                "getLatestBlockhash": lambda p: self.context(
                    {
                        "blockhash": self.blockhash,
                        "lastValidBlockHeight": 3090,
                    }
                ),
                "sendTransaction": self.send_transaction,
            }
        )

    def context(self, value: Any) -> dict[str, Any]:
        return {"context": {"apiVersion": "2.0.15", "slot": self.slot}, "value": value}

    def add_token_account(self, owner: str, mint: str, amount: str, *, program: str = TOKEN_PROGRAM) -> str:
        pubkey = new_account()[1]
        self.token_accounts.setdefault(owner, []).append(
            {
                "pubkey": pubkey,
                "account": {
                    "data": {
                        "program": "spl-token",
                        "parsed": {
                            "info": {
                                "isNative": False,
                                "mint": mint,
                                "owner": owner,
                                "state": "initialized",
                                "tokenAmount": {
                                    "amount": amount,
                                    "decimals": 6,
                                    "uiAmount": Decimal(amount) / 10**6,
                                    "uiAmountString": str(Decimal(amount) / 10**6),
                                },
                            },
                            "type": "account",
                        },
                        "space": 165,
                    },
                    "executable": False,
                    "lamports": 2_039_280,
                    "owner": program,
                    "rentEpoch": 18_446_744_073_709_551_615,
                    "space": 165,
                },
            }
        )
        return pubkey

    def get_token_accounts(self, params: list[Any]) -> dict[str, Any]:
        owner, selector, options = params
        assert options["encoding"] == "jsonParsed"
        accounts = self.token_accounts.get(owner, [])
        if "mint" in selector:
            chosen = [
                a for a in accounts if a["account"]["data"]["parsed"]["info"]["mint"] == selector["mint"]
            ]
        else:
            chosen = [a for a in accounts if a["account"]["owner"] == selector["programId"]]
        return self.context(chosen)

    def send_transaction(self, params: list[Any]) -> Any:
        raw = base64.b64decode(params[0])
        assert params[1]["encoding"] == "base64"
        self.sent.append(raw)
        if self.send_answer is not None:
            return self.send_answer(raw)
        return b58encode(raw[1:65])

    def confirm(
        self, signature: str, *, slot: int, fee: int = 5000, err: Any = None, confirmations: Any = 10
    ) -> None:
        self.transactions[signature] = {
            "blockTime": 1_790_000_000,
            "meta": {"err": err, "fee": fee, "innerInstructions": [], "postBalances": [], "preBalances": [],
                     "status": {"Ok": None} if err is None else {"Err": err}},
            "slot": slot,
            "transaction": {"message": {"accountKeys": [], "instructions": []}, "signatures": [signature]},
        }  # fmt: skip
        self.statuses[signature] = {
            "slot": slot, "confirmations": confirmations, "err": err, "status": {"Ok": None},
            "confirmationStatus": "finalized" if confirmations is None else "confirmed",
        }  # fmt: skip

    def get_transaction(self, params: list[Any]) -> Any:
        if params[1]["encoding"] == "jsonParsed":
            return self.parsed_transactions.get(params[0])
        return self.transactions.get(params[0])

    def get_token_account_balance(self, params: list[Any]) -> dict[str, Any]:
        for accounts in self.token_accounts.values():
            for a in accounts:
                if a["pubkey"] == params[0]:
                    return self.context(a["account"]["data"]["parsed"]["info"]["tokenAmount"])
        raise RpcFault(-32602, "Invalid param: could not find account")

    def fee_for_message(self, message: bytes) -> int:
        return self.lamports_per_signature * message[0]  # the header's signature count

    def set_account(self, address: str, owner: str, data: bytes, lamports: int = 1_447_680) -> None:
        """An account as getAccountInfo answers it in base64 encoding."""
        self.accounts[address] = {
            "data": [base64.b64encode(data).decode("ascii"), "base64"],
            "executable": False,
            "lamports": lamports,
            "owner": owner,
            "rentEpoch": 18_446_744_073_709_551_615,
            "space": len(data),
        }

    def set_nonce_account(self, address: str, authority: str, nonce: str) -> None:
        data = (
            (1).to_bytes(4, "little") + (1).to_bytes(4, "little")  # Versions::Current, Initialized
            + b58decode(authority) + b58decode(nonce) + self.lamports_per_signature.to_bytes(8, "little")
        )  # fmt: skip
        self.set_account(address, sol_system(), data)

    def set_mint(self, mint: str, decimals: int) -> None:
        data = (0).to_bytes(4, "little") + bytes(32) + (10**15).to_bytes(8, "little") + bytes([decimals, 1])
        self.set_account(mint, TOKEN_PROGRAM, data + (0).to_bytes(4, "little") + bytes(32))

    def record_parsed(
        self,
        *,
        payer: str,
        instructions: list[dict[str, Any]],
        inner: list[dict[str, Any]] | None = None,
        token_balances: list[tuple[str, str, str, str]] = (),  # type: ignore[assignment]
        slot: int | None = None,
        err: Any = None,
        touches: tuple[str, ...] = (),
    ) -> str:
        """A successful (or failed) transaction in getTransaction's jsonParsed shape, listed
        by getSignaturesForAddress for every address in ``touches``. ``token_balances`` are
        (token account, owner, mint, amount) post balances."""
        signature = b58encode(secrets.token_bytes(64))
        slot = self.slot if slot is None else slot
        keys = [payer, *sorted(({a for a, _o, _m, _x in token_balances} | set(touches)) - {payer})]
        post = [
            {"accountIndex": keys.index(account), "mint": mint, "owner": owner, "programId": TOKEN_PROGRAM,
             "uiTokenAmount": {"amount": amount, "decimals": 6, "uiAmount": Decimal(amount) / 10**6,
                               "uiAmountString": str(Decimal(amount) / 10**6)}}
            for account, owner, mint, amount in token_balances
        ]  # fmt: skip
        self.parsed_transactions[signature] = {
            "blockTime": 1_790_000_000,
            "meta": {"computeUnitsConsumed": 450, "err": err, "fee": 5000,
                     "innerInstructions": [{"index": 0, "instructions": inner}] if inner else [],
                     "logMessages": [], "postBalances": [0] * len(keys), "postTokenBalances": post,
                     "preBalances": [0] * len(keys), "preTokenBalances": [], "rewards": [],
                     "status": {"Ok": None} if err is None else {"Err": err}},
            "slot": slot,
            "transaction": {
                "message": {
                    "accountKeys": [{"pubkey": k, "signer": i == 0, "source": "transaction", "writable": True}
                                    for i, k in enumerate(keys)],
                    "instructions": instructions,
                    "recentBlockhash": self.blockhash,
                },
                "signatures": [signature],
            },
            "version": "legacy",
        }  # fmt: skip
        for address in touches:
            listed = self.signatures_of.setdefault(address, [])
            listed.insert(0, {"blockTime": 1_790_000_000, "confirmationStatus": "finalized", "err": err,
                              "memo": None, "signature": signature, "slot": slot})  # fmt: skip
        return signature


def sol_system() -> str:
    return "11111111111111111111111111111111"


def system_transfer_ix(source: str, destination: str, lamports: int) -> dict[str, Any]:
    """A System transfer as jsonParsed shows it."""
    return {"parsed": {"info": {"destination": destination, "lamports": lamports, "source": source},
                       "type": "transfer"},
            "program": "system", "programId": sol_system(), "stackHeight": None}  # fmt: skip


def token_transfer_ix(
    source: str, destination: str, amount: int, *, mint: str | None = None, authority: str = ""
) -> dict[str, Any]:
    """An SPL Token transfer (``transferChecked`` when the mint is given) as jsonParsed shows it."""
    info: dict[str, Any] = {"authority": authority or source, "destination": destination, "source": source}
    if mint is None:
        kind, info["amount"] = "transfer", str(amount)
    else:
        kind, info["mint"] = "transferChecked", mint
        info["tokenAmount"] = {"amount": str(amount), "decimals": 6, "uiAmount": Decimal(amount) / 10**6,
                               "uiAmountString": str(Decimal(amount) / 10**6)}  # fmt: skip
    return {"parsed": {"info": info, "type": kind}, "program": "spl-token", "programId": TOKEN_PROGRAM,
            "stackHeight": None}  # fmt: skip
