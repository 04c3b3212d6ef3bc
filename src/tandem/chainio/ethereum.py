"""Ethereum over the standard JSON-RPC API (any execution client: geth, Nethermind, anvil).

Before its first question the backend asks ``eth_chainId`` and refuses a node that
serves another chain than the configured network (:class:`ChainMismatchError`): a
nonce or a balance read from the wrong chain is worse than none. Balances and token
balances are read at one block number the backend fetched first, so a reconciliation
compares figures from the same height. Every hex quantity is parsed strictly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from tandem.chainio import parse
from tandem.chainio.base import (
    Balance,
    EthereumFees,
    EthereumTransaction,
    InternalTransfer,
    TokenBalance,
    TokenTransfer,
    TxState,
    TxStatus,
)
from tandem.chainio.transport import HttpEndpoint, JsonRpcClient, JsonRpcError
from tandem.core.chains import ethereum as eth
from tandem.errors import ChainBadResponseError, ChainMismatchError, InputError, InvalidTransactionError

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.endpoint import ChainEndpoint

# keccak256("Transfer(address,address,uint256)"), the ERC-20 (EIP-20) event topic.
TRANSFER_TOPIC = "0x" + eth.keccak256(b"Transfer(address,address,uint256)").hex()
BALANCE_OF_SELECTOR = eth.keccak256(b"balanceOf(address)")[:4]
DEFAULT_LOG_PAGE_BLOCKS = 2_000
# How many extra requests splitting refused log pages may cost before giving up.
MAX_LOG_PAGE_SPLITS = 256
FEE_HISTORY_BLOCKS = 10
_METHOD_NOT_FOUND = -32601


def _word(address: str) -> str:
    return "0x" + eth.parse_address(address).rjust(32, b"\x00").hex()


def _address_from_topic(topic: str, what: str) -> str:
    raw = bytes.fromhex(topic[2:])
    if raw[:12] != b"\x00" * 12:
        parse.bad(what, "address topic has non-zero high bytes")
    return eth.to_checksum_address(raw[12:])


def _address(value: Any, what: str) -> str:
    raw = parse.data(value, what, length=20)
    return eth.to_checksum_address(raw)


class EthereumJsonRpc:
    chain: ClassVar[str] = "ethereum"
    kind: ClassVar[str] = "jsonrpc"

    def __init__(self, endpoint: ChainEndpoint, transport: httpx.BaseTransport | None = None) -> None:
        self.network = endpoint.network
        self.expected_chain_id = eth.CHAIN_IDS[endpoint.network]
        self.rpc = JsonRpcClient(HttpEndpoint(endpoint.url, timeout=endpoint.timeout, transport=transport))
        self._chain_checked = False
        self._no_traces = False  # the node answered trace_block with "method not found"

    def close(self) -> None:
        self.rpc.close()

    # --- plumbing -------------------------------------------------------------------

    def _call(self, method: str, params: list[Any]) -> Any:
        if not self._chain_checked:
            self.chain_id()
        return self.rpc.call(method, params)

    def chain_id(self) -> int:
        """The node's chain id, refused unless it is the configured network's."""
        served = parse.quantity(self.rpc.call("eth_chainId", []), "eth_chainId", bits=64)
        if served != self.expected_chain_id:
            raise ChainMismatchError(
                f"eth_chainId: {self.rpc.display} serves chain id {served}, "
                f"not {self.network} ({self.expected_chain_id})"
            )
        self._chain_checked = True
        return served

    # --- reads ----------------------------------------------------------------------

    def tip_height(self) -> int:
        return parse.quantity(self._call("eth_blockNumber", []), "eth_blockNumber", bits=64)

    def balance(self, address: str) -> Balance:
        owner = eth.to_checksum_address(address)
        height = self.tip_height()
        wei = parse.quantity(self._call("eth_getBalance", [owner, hex(height)]), "eth_getBalance")
        return Balance("ethereum", self.network, owner, wei, height)

    def token_balance(self, token: str, owner: str) -> TokenBalance:
        contract = eth.to_checksum_address(token)
        holder = eth.to_checksum_address(owner)
        height = self.tip_height()
        call = {
            "to": contract,
            "data": "0x" + (BALANCE_OF_SELECTOR + eth.parse_address(holder).rjust(32, b"\x00")).hex(),
        }
        answer = parse.data(self._call("eth_call", [call, hex(height)]), "eth_call balanceOf")
        if len(answer) != 32:
            raise ChainBadResponseError(
                f"eth_call balanceOf: {contract} answered {len(answer)} bytes, not a uint256 "
                "(is it an ERC-20 contract on this network?)"
            )
        return TokenBalance("ethereum", self.network, contract, holder, int.from_bytes(answer, "big"), height)

    def nonce(self, address: str) -> int:
        owner = eth.to_checksum_address(address)
        return parse.quantity(
            self._call("eth_getTransactionCount", [owner, "pending"]), "eth_getTransactionCount", bits=64
        )

    def token_transfers(
        self,
        token: str,
        recipients: tuple[str, ...],
        *,
        from_block: int,
        to_block: int | None = None,
        page_blocks: int = DEFAULT_LOG_PAGE_BLOCKS,
    ) -> tuple[TokenTransfer, ...]:
        """ERC-20 Transfer events of ``token`` to any of ``recipients``, in chain order.

        The range is asked for in pages of at most ``page_blocks`` blocks; a page the
        node refuses as too large (providers cap results) is split in two and retried.
        """
        contract = eth.to_checksum_address(token)
        wanted = {eth.to_checksum_address(r) for r in recipients}
        if not wanted:
            raise InputError("token_transfers needs at least one recipient")
        if isinstance(from_block, bool) or not isinstance(from_block, int) or from_block < 0:
            raise InputError("from_block must be a block number")
        last = self.tip_height() if to_block is None else to_block
        if page_blocks < 1 or last < from_block:
            raise InputError("the block range is empty")
        topics = [TRANSFER_TOPIC, None, sorted(_word(r) for r in wanted)]
        found: list[TokenTransfer] = []
        pending = [
            (start, min(start + page_blocks - 1, last)) for start in range(from_block, last + 1, page_blocks)
        ]
        budget = len(pending) + MAX_LOG_PAGE_SPLITS
        while pending:
            start, end = pending.pop(0)
            budget -= 1
            query = {"address": contract, "fromBlock": hex(start), "toBlock": hex(end), "topics": topics}
            try:
                logs = parse.arr(self._call("eth_getLogs", [query]), "eth_getLogs")
            except JsonRpcError:
                # A single block, or a node that refuses page after page, is a real refusal.
                if end == start or budget < 2:
                    raise
                middle = (start + end) // 2
                pending[:0] = [(start, middle), (middle + 1, end)]
                continue
            found += (self._transfer(log, contract, wanted, start, end) for log in logs)
        found.sort(key=lambda t: (t.block_height, t.log_index))
        return tuple(found)

    def _transfer(self, log: Any, contract: str, wanted: set[str], start: int, end: int) -> TokenTransfer:
        what = "eth_getLogs entry"
        entry = parse.obj(log, what)
        if _address(parse.field(entry, "address", what), what) != contract:
            parse.bad(what, "log is from another contract than the one asked for")
        if entry.get("removed") is True:
            parse.bad(what, "log was removed by a reorganisation")
        topics = [parse.hash32(t, what) for t in parse.arr(parse.field(entry, "topics", what), what)]
        if len(topics) != 3 or topics[0] != TRANSFER_TOPIC:
            parse.bad(what, "log is not an ERC-20 Transfer(address,address,uint256)")
        recipient = _address_from_topic(topics[2], what)
        if recipient not in wanted:
            parse.bad(what, "log is a transfer to an address that was not asked for")
        height = parse.quantity(parse.field(entry, "blockNumber", what), what, bits=64)
        if not start <= height <= end:
            parse.bad(what, "log is outside the block range asked for")
        amount = int.from_bytes(parse.data(parse.field(entry, "data", what), what, length=32), "big")
        return TokenTransfer(
            token=contract,
            sender=_address_from_topic(topics[1], what),
            recipient=recipient,
            amount=amount,
            tx_hash=parse.hash32(parse.field(entry, "transactionHash", what), what),
            block_height=height,
            log_index=parse.quantity(parse.field(entry, "logIndex", what), what, bits=64),
        )

    def suggest_fees(self) -> EthereumFees:
        """EIP-1559 fees: the node's priority fee and twice the next block's base fee.

        Twice the base fee stays valid through six consecutive full blocks (each may
        raise it by 12.5%); what is actually paid is base fee + priority.
        """
        history = parse.obj(
            self._call("eth_feeHistory", [hex(FEE_HISTORY_BLOCKS), "latest", [50]]), "eth_feeHistory"
        )
        base_fees = [
            parse.quantity(v, "eth_feeHistory baseFeePerGas")
            for v in parse.arr(parse.field(history, "baseFeePerGas", "eth_feeHistory"), "eth_feeHistory")
        ]
        ratios = parse.arr(parse.field(history, "gasUsedRatio", "eth_feeHistory"), "eth_feeHistory")
        oldest = parse.quantity(
            parse.field(history, "oldestBlock", "eth_feeHistory"), "eth_feeHistory", bits=64
        )
        if not base_fees or len(base_fees) != len(ratios) + 1:
            parse.bad("eth_feeHistory", "baseFeePerGas must hold one entry per block plus the next")
        rewards = [
            parse.quantity(parse.arr(r, "eth_feeHistory reward")[0], "eth_feeHistory reward")
            for r in parse.arr(history.get("reward", []), "eth_feeHistory reward")
            if r
        ]
        try:
            priority = parse.quantity(self._call("eth_maxPriorityFeePerGas", []), "eth_maxPriorityFeePerGas")
        except JsonRpcError as exc:
            if exc.rpc_code != _METHOD_NOT_FOUND:
                raise
            priority = sorted(rewards)[len(rewards) // 2] if rewards else 0
        next_base = base_fees[-1]
        return EthereumFees(
            base_fee_per_gas=next_base,
            max_priority_fee_per_gas=priority,
            max_fee_per_gas=2 * next_base + priority,
            block_height=oldest + len(ratios) - 1,
        )

    def transaction(self, tx_hash: str) -> EthereumTransaction | None:
        wanted = parse.hash32(tx_hash, "transaction hash")
        answer = self._call("eth_getTransactionByHash", [wanted])
        if answer is None:
            return None
        what = "eth_getTransactionByHash"
        tx = parse.obj(answer, what)
        if parse.hash32(parse.field(tx, "hash", what), what) != wanted:
            parse.bad(what, "answer is for another transaction")
        to = tx.get("to")
        block = tx.get("blockNumber")
        return EthereumTransaction(
            tx_hash=wanted,
            sender=_address(parse.field(tx, "from", what), what),
            to=None if to is None else _address(to, what),
            nonce=parse.quantity(parse.field(tx, "nonce", what), what, bits=64),
            value=parse.quantity(parse.field(tx, "value", what), what),
            block_height=None if block is None else parse.quantity(block, what, bits=64),
        )

    def transfers_in_block(self, height: int, recipients: tuple[str, ...]) -> tuple[EthereumTransaction, ...]:
        """Plain value transfers to ``recipients`` in block ``height`` (a deposit seen by
        its transaction; value moved by a contract call inside another one is not)."""
        what = "eth_getBlockByNumber"
        wanted = {eth.to_checksum_address(r) for r in recipients}
        block = parse.obj(self._call(what, [hex(height), True]), what)
        if parse.quantity(parse.field(block, "number", what), what, bits=64) != height:
            parse.bad(what, "answer is another block")
        found = []
        for raw in parse.arr(parse.field(block, "transactions", what), what):
            tx = parse.obj(raw, what)
            to = tx.get("to")
            if to is None or _address(to, what) not in wanted:
                continue
            value = parse.quantity(parse.field(tx, "value", what), what)
            if value:
                found.append(
                    EthereumTransaction(
                        tx_hash=parse.hash32(parse.field(tx, "hash", what), what),
                        sender=_address(parse.field(tx, "from", what), what),
                        to=_address(to, what),
                        nonce=parse.quantity(parse.field(tx, "nonce", what), what, bits=64),
                        value=value,
                        block_height=height,
                    )
                )
        return tuple(found)

    def internal_transfers_in_block(
        self, height: int, recipients: tuple[str, ...]
    ) -> tuple[InternalTransfer, ...] | None:
        """Value moved to ``recipients`` by contract calls inside the transactions of block
        ``height`` (``trace_block``: calls below the top one, and ``selfdestruct``
        refunds), skipping any call that failed or sits under one that did. None when
        the node has no trace API (method not found): such deposits are then not seen."""
        what = "trace_block"
        if self._no_traces:
            return None
        try:
            traces = parse.arr(self._call(what, [hex(height)]), what)
        except JsonRpcError as exc:
            if exc.rpc_code != _METHOD_NOT_FOUND:
                raise
            self._no_traces = True
            return None
        wanted = {eth.to_checksum_address(r) for r in recipients}
        failed: set[tuple[str, tuple[int, ...]]] = set()
        position: dict[str, int] = {}
        found = []
        for raw in traces:
            trace = parse.obj(raw, what)
            kind = parse.string(parse.field(trace, "type", what), what)
            tx_value = trace.get("transactionHash")
            if tx_value is None:
                continue  # a block reward trace: no transaction
            tx_hash = parse.hash32(tx_value, what)
            if parse.integer(parse.field(trace, "blockNumber", what), what) != height:
                parse.bad(what, "a trace of another block")
            path = tuple(
                parse.integer(i, what, maximum=1 << 32)
                for i in parse.arr(parse.field(trace, "traceAddress", what), what)
            )
            index = position.get(tx_hash, 0)
            position[tx_hash] = index + 1
            if trace.get("error") is not None:
                failed.add((tx_hash, path))
            if not path or any((tx_hash, path[:n]) in failed for n in range(len(path) + 1)):
                continue  # the top call is the transaction itself; a failed call moved nothing
            action = parse.obj(parse.field(trace, "action", what), what)
            if kind == "call":
                if action.get("callType") not in ("call", None):
                    continue  # delegatecall and staticcall move no value of their own
                to, value = action.get("to"), action.get("value")
            elif kind in ("suicide", "selfdestruct"):
                to, value = action.get("refundAddress"), action.get("balance")
            else:
                continue
            if to is None or value is None or _address(to, what) not in wanted:
                continue
            amount = parse.quantity(value, what)
            if amount:
                found.append(InternalTransfer(tx_hash, _address(to, what), amount, index, height))
        return tuple(found)

    def token_contracts_paying(
        self, recipients: tuple[str, ...], *, from_block: int, to_block: int
    ) -> tuple[str, ...]:
        """Every contract that logged an ERC-20 ``Transfer`` to ``recipients`` in the range,
        whichever token it is: what reconciliation names as an unknown token."""
        what = "eth_getLogs"
        topics = [TRANSFER_TOPIC, None, sorted(_word(r) for r in recipients)]
        query = {"fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": topics}
        contracts = {
            _address(parse.field(parse.obj(log, what), "address", what), what)
            for log in parse.arr(self._call(what, [query]), what)
        }
        return tuple(sorted(contracts))

    def transaction_status(self, txid: str) -> TxStatus:
        wanted = parse.hash32(txid, "transaction hash")
        what = "eth_getTransactionReceipt"
        answer = self._call(what, [wanted])
        if answer is None:
            state: TxState = "unknown" if self.transaction(wanted) is None else "pending"
            return TxStatus(wanted, state)
        receipt = parse.obj(answer, what)
        if parse.hash32(parse.field(receipt, "transactionHash", what), what) != wanted:
            parse.bad(what, "receipt is for another transaction")
        height = parse.quantity(parse.field(receipt, "blockNumber", what), what, bits=64)
        status = parse.quantity(parse.field(receipt, "status", what), what, bits=8)
        if status not in (0, 1):
            parse.bad(what, f"status {status} is neither 0 nor 1")
        fee = parse.quantity(parse.field(receipt, "gasUsed", what), what) * parse.quantity(
            parse.field(receipt, "effectiveGasPrice", what), what
        )
        tip = self.tip_height()
        if tip < height:
            parse.bad(what, f"receipt is in block {height}, above the node's tip {tip}")
        return TxStatus(wanted, "confirmed" if status == 1 else "failed", height, tip - height + 1, fee)

    # --- writes ---------------------------------------------------------------------

    def broadcast(self, raw: bytes) -> str:
        """Send a signed type-2 transaction; the node's hash must be the one computed here."""
        tx = eth.decode_transaction(raw)
        if not tx.is_signed:
            raise InvalidTransactionError("only a signed transaction can be broadcast")
        if tx.chain_id != self.expected_chain_id:
            raise InvalidTransactionError(
                f"transaction is for chain id {tx.chain_id}, this backend serves {self.network}"
            )
        expected = eth.transaction_hash(raw)
        answer = parse.hash32(
            self._call("eth_sendRawTransaction", ["0x" + raw.hex()]), "eth_sendRawTransaction"
        )
        if answer != expected:
            raise ChainBadResponseError(
                f"eth_sendRawTransaction: node answered hash {answer}, the transaction's is {expected}"
            )
        return expected
