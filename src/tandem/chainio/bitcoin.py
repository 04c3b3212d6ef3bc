"""Bitcoin over an Esplora-compatible REST API and over Bitcoin Core's JSON-RPC.

Both backends return each UTXO *with its previous transaction*: the raw bytes are
fetched, parsed by ``core.chains.bitcoin`` and must hash to the txid, and the output
they hold at ``vout`` must pay the address and the amount the node claimed
(:func:`checked_utxo`). So the amount Tandem signs over is the one the previous
transaction commits to, not a number a node typed (the segwit v0 fee attack, THREATS 24).
Before its first question each backend checks which chain the node serves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tandem.chainio import parse
from tandem.chainio.base import Balance, BitcoinFeeRate, TxStatus, Utxo
from tandem.chainio.transport import HttpEndpoint, JsonRpcClient, JsonRpcError
from tandem.core.chains import bitcoin as btc
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    ChainRejectedError,
    InputError,
    InvalidTransactionError,
)

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.endpoint import ChainEndpoint

# Hash of block 0 per network: what an Esplora server is asked to prove which chain it serves.
GENESIS_HASHES: Mapping[str, frozenset[str]] = {
    "mainnet": frozenset({"000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"}),
    "testnet": frozenset(
        {
            "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",  # testnet3
            "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043",  # testnet4
        }
    ),
    "signet": frozenset({"00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6"}),
    "regtest": frozenset({"0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"}),
}
# getblockchaininfo "chain" per network.
CORE_CHAIN_NAMES: Mapping[str, frozenset[str]] = {
    "mainnet": frozenset({"main"}),
    "testnet": frozenset({"test", "testnet4"}),
    "signet": frozenset({"signet"}),
    "regtest": frozenset({"regtest"}),
}
_RPC_NO_SUCH_TX = -5


def checked_transaction(raw: bytes, txid: str, what: str) -> btc.Transaction:
    """Parse a previous transaction and check that it is the one ``txid`` names."""
    try:
        tx = btc.parse_transaction(raw)
    except InvalidTransactionError as exc:
        raise ChainBadResponseError(f"{what}: transaction {txid} does not parse: {exc.message}") from None
    if tx.txid != txid:
        raise ChainBadResponseError(f"{what}: the raw transaction served for {txid} hashes to {tx.txid}")
    return tx


def checked_utxo(
    *,
    txid: str,
    vout: int,
    raw_tx: bytes,
    address: str,
    network: str,
    claimed_amount: int | None,
    block_height: int | None,
    what: str,
) -> Utxo:
    """A :class:`Utxo` whose amount and script come from its previous transaction.

    Refuses a raw transaction that does not hash to ``txid``, has no output ``vout``,
    pays another script than ``address``'s, or holds another amount than claimed.
    """
    tx = checked_transaction(raw_tx, txid, what)
    if vout >= len(tx.outputs):
        raise ChainBadResponseError(f"{what}: transaction {txid} has no output {vout}")
    output = tx.outputs[vout]
    script = btc.address_to_script(address, network)
    if output.script_pubkey != script:
        raise ChainBadResponseError(f"{what}: output {txid}:{vout} does not pay {address}")
    if claimed_amount is not None and claimed_amount != output.amount:
        raise ChainBadResponseError(
            f"{what}: node says {txid}:{vout} holds {claimed_amount} sats; "
            f"its transaction says {output.amount}"
        )
    return Utxo(txid, vout, output.amount, address, script, raw_tx, block_height)


_Height = TypeVar("_Height", bound=int | None)


def _checked_utxos(
    found: Iterable[tuple[str, int, int, _Height]],
    fetch_raw: Callable[[str, _Height], bytes],
    *,
    address: str,
    network: str,
    what: str,
) -> tuple[Utxo, ...]:
    """The UTXOs a backend lists as (txid, vout, claimed amount, block height), each
    checked against its previous transaction, fetched once per txid; refuses an outpoint
    listed twice."""
    raw_by_txid: dict[str, bytes] = {}
    out: list[Utxo] = []
    for txid, vout, amount, height in found:
        if txid not in raw_by_txid:
            raw_by_txid[txid] = fetch_raw(txid, height)
        out.append(
            checked_utxo(
                txid=txid,
                vout=vout,
                raw_tx=raw_by_txid[txid],
                address=address,
                network=network,
                claimed_amount=amount,
                block_height=height,
                what=what,
            )
        )
    return _check_unique(out, what)


def _check_unique(utxos: Sequence[Utxo], what: str) -> tuple[Utxo, ...]:
    seen: set[str] = set()
    for utxo in utxos:
        if utxo.outpoint in seen:
            raise ChainBadResponseError(f"{what}: outpoint {utxo.outpoint} is listed twice")
        seen.add(utxo.outpoint)
    return tuple(utxos)


def _fee_rate(sat_per_vb: Decimal, target: int, what: str) -> BitcoinFeeRate:
    if sat_per_vb <= 0:
        parse.bad(what, "fee estimate is not positive")
    rate = max(1, math.ceil(sat_per_vb))
    if rate > btc.MAX_FEE_RATE:
        parse.bad(what, f"fee estimate {rate} sat/vB is above {btc.MAX_FEE_RATE} sat/vB")
    return BitcoinFeeRate(rate, target)


def _local_txid(raw: bytes) -> str:
    if not isinstance(raw, bytes) or not raw:
        raise InvalidTransactionError("a raw transaction is non-empty bytes")
    return btc.parse_transaction(raw).txid


def _target(target_blocks: int) -> int:
    if (
        isinstance(target_blocks, bool)
        or not isinstance(target_blocks, int)
        or not 1 <= target_blocks <= 1008
    ):
        raise InputError("fee target must be a whole number of blocks in [1, 1008]")
    return target_blocks


class _BitcoinBase:
    chain: ClassVar[str] = "bitcoin"
    network: str

    def utxos(self, address: str) -> tuple[Utxo, ...]:
        raise NotImplementedError

    def tip_height(self) -> int:
        raise NotImplementedError

    def balance(self, address: str) -> Balance:
        """The sum of the address's UTXOs, each checked against its previous transaction."""
        normalised = btc.validate_address(address, self.network)
        height = self.tip_height()
        total = sum(u.amount for u in self.utxos(normalised))
        return Balance("bitcoin", self.network, normalised, total, height)


# --- Esplora --------------------------------------------------------------------------


class EsploraBackend(_BitcoinBase):
    """The REST API of Blockstream's Esplora (electrs), also served by mempool.space."""

    kind: ClassVar[str] = "esplora"

    def __init__(self, endpoint: ChainEndpoint, transport: httpx.BaseTransport | None = None) -> None:
        self.network = endpoint.network
        self.http = HttpEndpoint(endpoint.url, timeout=endpoint.timeout, transport=transport)
        self._chain_checked = False

    def close(self) -> None:
        self.http.close()

    def _get_optional(self, path: str, what: str) -> bytes | None:
        """The body of a GET, or None where the server answers 404 (not found)."""
        if not self._chain_checked:
            self.check_chain()
        status, body = self.http.request("GET", path, what)
        if status == 404:
            return None
        self.http.check_status(status, body, what)
        return body

    def _get(self, path: str, what: str) -> bytes:
        body = self._get_optional(path, what)
        if body is None:
            raise ChainBadResponseError(f"{what}: {self.http.display} has no such resource (HTTP 404)")
        return body

    def check_chain(self) -> None:
        what = "GET /block-height/0"
        status, body = self.http.request("GET", "/block-height/0", what)
        self.http.check_status(status, body, what)
        genesis = parse.txid(body.decode("ascii", "replace").strip(), what)
        if genesis not in GENESIS_HASHES[self.network]:
            raise ChainMismatchError(
                f"{what}: {self.http.display} serves a chain whose genesis block is {genesis}, "
                f"not bitcoin {self.network}"
            )
        self._chain_checked = True

    def tip_height(self) -> int:
        what = "GET /blocks/tip/height"
        body = self._get("/blocks/tip/height", what)
        return parse.text_integer(body, what)

    def raw_transaction(self, txid: str) -> bytes:
        wanted = parse.txid(txid, "txid")
        what = f"GET /tx/{wanted}/hex"
        body = self._get(f"/tx/{wanted}/hex", what)
        raw = parse.hex_bytes(body.decode("ascii", "replace"), what)
        checked_transaction(raw, wanted, what)
        return raw

    def utxos(self, address: str) -> tuple[Utxo, ...]:
        normalised = btc.validate_address(address, self.network)
        what = "GET /address/:address/utxo"
        body = self._get(f"/address/{normalised}/utxo", what)
        entries = parse.arr(parse.loads(body, what), what)

        def found() -> Iterator[tuple[str, int, int, int | None]]:
            for item in entries:
                entry = parse.obj(item, what)
                txid = parse.txid(parse.field(entry, "txid", what), what)
                vout = parse.integer(parse.field(entry, "vout", what), what, maximum=0xFFFFFFFF)
                value = parse.integer(parse.field(entry, "value", what), what, maximum=btc.MAX_MONEY)
                status = parse.obj(parse.field(entry, "status", what), what)
                height = None
                if parse.boolean(parse.field(status, "confirmed", what), what):
                    height = parse.integer(parse.field(status, "block_height", what), what)
                yield txid, vout, value, height

        return _checked_utxos(
            found(),
            lambda txid, _height: self.raw_transaction(txid),
            address=normalised,
            network=self.network,
            what=what,
        )

    def transaction_status(self, txid: str) -> TxStatus:
        wanted = parse.txid(txid, "txid")
        what = f"GET /tx/{wanted}/status"
        body = self._get_optional(f"/tx/{wanted}/status", what)
        if body is None:
            return TxStatus(wanted, "unknown")
        status = parse.obj(parse.loads(body, what), what)
        if not parse.boolean(parse.field(status, "confirmed", what), what):
            return TxStatus(wanted, "pending")
        height = parse.integer(parse.field(status, "block_height", what), what)
        tip = self.tip_height()
        if tip < height:
            parse.bad(what, f"transaction is in block {height}, above the tip {tip}")
        return TxStatus(wanted, "confirmed", height, tip - height + 1)

    def suggest_fee_rate(self, target_blocks: int = 6) -> BitcoinFeeRate:
        """The estimate for ``target_blocks``, or for the nearest faster target offered."""
        target = _target(target_blocks)
        what = "GET /fee-estimates"
        body = self._get("/fee-estimates", what)
        estimates: dict[int, Decimal] = {}
        for key, value in parse.obj(parse.loads(body, what), what).items():
            blocks = parse.text_integer(key.encode("ascii", "replace"), what)
            estimates[blocks] = parse.decimal_number(value, what)
        if not estimates:
            parse.bad(what, "the server offers no fee estimate")
        faster = [b for b in estimates if b <= target]
        chosen = max(faster) if faster else min(estimates)
        return _fee_rate(estimates[chosen], chosen, what)

    def broadcast(self, raw: bytes) -> str:
        expected = _local_txid(raw)
        what = "POST /tx"
        if not self._chain_checked:
            self.check_chain()
        status, body = self.http.request(
            "POST", "/tx", what, content=raw.hex().encode("ascii"), headers={"content-type": "text/plain"}
        )
        self.http.check_status(status, body, what)
        answer = parse.txid(body.decode("ascii", "replace").strip(), what)
        if answer != expected:
            raise ChainBadResponseError(
                f"{what}: server answered txid {answer}, the transaction's is {expected}"
            )
        return expected


# --- Bitcoin Core RPC -----------------------------------------------------------------


class BitcoinCoreBackend(_BitcoinBase):
    """Bitcoin Core's JSON-RPC; credentials come from the URL's user and password.

    UTXOs come from ``scantxoutset`` (no wallet needed); each previous transaction from
    ``getrawtransaction`` with the block hash of the UTXO's height, so no ``-txindex``
    is needed either. ``scantxoutset`` walks the whole UTXO set: give it a timeout of
    a minute or more (``TANDEM_CHAIN_TIMEOUT``).
    """

    kind: ClassVar[str] = "bitcoincore"

    def __init__(self, endpoint: ChainEndpoint, transport: httpx.BaseTransport | None = None) -> None:
        self.network = endpoint.network
        self.rpc = JsonRpcClient(
            HttpEndpoint(endpoint.url, timeout=endpoint.timeout, transport=transport), version="1.0"
        )
        self._chain_checked = False

    def close(self) -> None:
        self.rpc.close()

    def _call(self, method: str, params: list[Any]) -> Any:
        if not self._chain_checked:
            self.check_chain()
        return self.rpc.call(method, params)

    def check_chain(self) -> None:
        what = "getblockchaininfo"
        info = parse.obj(self.rpc.call(what, []), what)
        served = parse.string(parse.field(info, "chain", what), what)
        if served not in CORE_CHAIN_NAMES[self.network]:
            raise ChainMismatchError(
                f"{what}: {self.rpc.display} serves chain {served[:20]!r}, not bitcoin {self.network}"
            )
        self._chain_checked = True

    def tip_height(self) -> int:
        return parse.integer(self._call("getblockcount", []), "getblockcount")

    def raw_transaction(self, txid: str, *, block_hash: str | None = None) -> bytes:
        wanted = parse.txid(txid, "txid")
        params: list[Any] = [wanted, False] if block_hash is None else [wanted, False, block_hash]
        raw = parse.hex_bytes(self._call("getrawtransaction", params), "getrawtransaction")
        checked_transaction(raw, wanted, "getrawtransaction")
        return raw

    def utxos(self, address: str) -> tuple[Utxo, ...]:
        normalised = btc.validate_address(address, self.network)
        what = "scantxoutset"
        scan = parse.obj(self._call(what, ["start", [f"addr({normalised})"]]), what)
        if scan.get("success") is not True:
            raise ChainRejectedError(f"{what}: the node did not complete the scan")
        hash_by_height: dict[int, str] = {}
        script = btc.address_to_script(normalised, self.network)

        def found() -> Iterator[tuple[str, int, int, int]]:
            for item in parse.arr(parse.field(scan, "unspents", what), what):
                entry = parse.obj(item, what)
                txid = parse.txid(parse.field(entry, "txid", what), what)
                vout = parse.integer(parse.field(entry, "vout", what), what, maximum=0xFFFFFFFF)
                amount = parse.btc_to_sats(parse.field(entry, "amount", what), what)
                height = parse.integer(parse.field(entry, "height", what), what)
                if parse.hex_bytes(parse.field(entry, "scriptPubKey", what), what) != script:
                    parse.bad(what, f"unspent {txid}:{vout} has another script than {normalised}'s")
                yield txid, vout, amount, height

        def fetch_raw(txid: str, height: int) -> bytes:
            if height not in hash_by_height:
                hash_by_height[height] = parse.txid(self._call("getblockhash", [height]), "getblockhash")
            return self.raw_transaction(txid, block_hash=hash_by_height[height])

        return _checked_utxos(found(), fetch_raw, address=normalised, network=self.network, what=what)

    def transaction_status(self, txid: str) -> TxStatus:
        wanted = parse.txid(txid, "txid")
        what = "getrawtransaction"
        try:
            answer = parse.obj(self._call(what, [wanted, True]), what)
        except JsonRpcError as exc:
            if exc.rpc_code == _RPC_NO_SUCH_TX:
                return TxStatus(wanted, "unknown")
            raise
        if parse.txid(parse.field(answer, "txid", what), what) != wanted:
            parse.bad(what, "answer is for another transaction")
        confirmations = parse.integer(answer.get("confirmations", 0), what)
        if confirmations == 0:
            return TxStatus(wanted, "pending")
        tip = self.tip_height()
        if confirmations > tip + 1:
            parse.bad(what, f"{confirmations} confirmations at tip height {tip}")
        return TxStatus(wanted, "confirmed", tip - confirmations + 1, confirmations)

    def suggest_fee_rate(self, target_blocks: int = 6) -> BitcoinFeeRate:
        what = "estimatesmartfee"
        answer = parse.obj(self._call(what, [_target(target_blocks)]), what)
        if "feerate" not in answer:
            errors = answer.get("errors")
            said = "; ".join(str(e) for e in errors) if isinstance(errors, list) else "no estimate"
            raise ChainRejectedError(f"{what}: the node has no fee estimate ({said[:200]})")
        btc_per_kvb = parse.decimal_number(answer["feerate"], what)
        blocks = parse.integer(parse.field(answer, "blocks", what), what, minimum=1)
        # BTC per 1000 vbytes -> sat per vbyte
        return _fee_rate(btc_per_kvb * parse.SATS_PER_BTC / 1000, blocks, what)

    def broadcast(self, raw: bytes) -> str:
        expected = _local_txid(raw)
        answer = parse.txid(self._call("sendrawtransaction", [raw.hex()]), "sendrawtransaction")
        if answer != expected:
            raise ChainBadResponseError(
                f"sendrawtransaction: node answered txid {answer}, the transaction's is {expected}"
            )
        return expected
