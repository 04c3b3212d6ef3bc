"""Solana over its JSON-RPC API (as an Agave validator or an RPC provider serves it).

Before its first question the backend asks ``getGenesisHash`` and refuses a node of
another cluster. Token balances come from ``getTokenAccountsByOwner`` in ``jsonParsed``
encoding; only the ``amount`` string (base units) is read, never the float
``uiAmount``. A broadcast's signature is compared with the first signature of the
transaction bytes, which is the transaction's id.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from tandem.chainio import parse
from tandem.chainio.base import (
    Balance,
    Blockhash,
    DurableNonce,
    Mint,
    SignatureInfo,
    SolanaTransfer,
    TokenBalance,
    TxState,
    TxStatus,
)
from tandem.chainio.transport import HttpEndpoint, JsonRpcClient
from tandem.core.chains import solana as sol
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.core.chains.solana_tx import TOKEN_2022_PROGRAM, TOKEN_PROGRAM, TOKEN_PROGRAMS
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    InputError,
    InvalidAddressError,
    InvalidTransactionError,
)

if TYPE_CHECKING:
    import httpx

    from tandem.chainio.endpoint import ChainEndpoint

GENESIS_HASHES = {
    "mainnet": "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d",
    "devnet": "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG",
    "testnet": "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY",
}
SYSTEM_PROGRAM = "11111111111111111111111111111111"
# A System nonce account (nonce::state::Versions): u32 version (1: current), u32 state
# (1: initialized), the authority, the stored durable nonce, lamports per signature.
NONCE_ACCOUNT_LEN = 80
# An SPL mint: COption<authority> (36), supply u64, decimals u8, is_initialized, COption<freeze>.
MINT_LEN = 82
# What one instruction of getTransaction's jsonParsed answer moves into an account.
_SYSTEM_TRANSFERS = ("transfer", "transferWithSeed")
_TOKEN_TRANSFERS = ("transfer", "transferChecked", "mintTo", "mintToChecked")
COMMITMENT = "confirmed"
# getSignatureStatuses reports null confirmations once a block is rooted (finalized):
# by then at least 32 blocks have voted on it.
FINALIZED_CONFIRMATIONS = 32
MAX_TRANSACTION_BYTES = 1232  # the packet size limit of a Solana transaction
U64_MAX = (1 << 64) - 1


def _address(value: Any, what: str) -> str:
    try:
        return sol.validate_address(parse.string(value, what))
    except InvalidAddressError as exc:
        raise ChainBadResponseError(f"{what}: {exc.message}") from None


def _signature(value: Any, what: str) -> str:
    text = parse.string(value, what)
    try:
        raw = b58decode(text)
    except InputError:
        parse.bad(what, "signature is not base58")
    if len(raw) != 64:
        parse.bad(what, f"signature decodes to {len(raw)} bytes, not 64")
    return text


def _optional_int(value: Any, what: str) -> int | None:
    return None if value is None else parse.integer(value, what)


def first_signature(raw: bytes) -> str:
    """The id of a serialised transaction: its first signature, base58."""
    if not isinstance(raw, bytes) or not raw or len(raw) > MAX_TRANSACTION_BYTES:
        raise InvalidTransactionError(f"a Solana transaction is 1 to {MAX_TRANSACTION_BYTES} bytes")
    # compact-u16 signature count; a transaction has at most a few dozen signatures
    count, offset = raw[0], 1
    if count & 0x80:
        raise InvalidTransactionError("too many signatures for a Solana transaction")
    if count == 0 or len(raw) < offset + 64 * count:
        raise InvalidTransactionError("transaction has no room for its signatures")
    signature = raw[offset : offset + 64]
    if signature == b"\x00" * 64:
        raise InvalidTransactionError("transaction is not signed")
    return b58encode(signature)


class SolanaJsonRpc:
    chain: ClassVar[str] = "solana"
    kind: ClassVar[str] = "jsonrpc"

    def __init__(self, endpoint: ChainEndpoint, transport: httpx.BaseTransport | None = None) -> None:
        self.network = endpoint.network
        self.rpc = JsonRpcClient(HttpEndpoint(endpoint.url, timeout=endpoint.timeout, transport=transport))
        self._cluster_checked = False

    def close(self) -> None:
        self.rpc.close()

    def _call(self, method: str, params: list[Any]) -> Any:
        if not self._cluster_checked:
            self.check_cluster()
        return self.rpc.call(method, params)

    def check_cluster(self) -> None:
        genesis = parse.string(self.rpc.call("getGenesisHash", []), "getGenesisHash")
        if genesis != GENESIS_HASHES[self.network]:
            raise ChainMismatchError(
                f"getGenesisHash: {self.rpc.display} serves cluster {genesis[:44]!r}, "
                f"not solana {self.network}"
            )
        self._cluster_checked = True

    def _with_context(self, answer: Any, what: str) -> tuple[int, Any]:
        wrapped = parse.obj(answer, what)
        context = parse.obj(parse.field(wrapped, "context", what), what)
        return parse.integer(parse.field(context, "slot", what), what), parse.field(wrapped, "value", what)

    def tip_height(self) -> int:
        return parse.integer(self._call("getSlot", [{"commitment": COMMITMENT}]), "getSlot")

    def balance(self, address: str) -> Balance:
        owner = sol.validate_address(address)
        slot, value = self._with_context(
            self._call("getBalance", [owner, {"commitment": COMMITMENT}]), "getBalance"
        )
        return Balance(
            "solana", self.network, owner, parse.integer(value, "getBalance", maximum=U64_MAX), slot
        )

    def token_balances(self, owner: str, mint: str | None = None) -> tuple[TokenBalance, ...]:
        """Every SPL token account of ``owner`` (of one mint, or of both token programs)."""
        holder = sol.validate_address(owner)
        filters: list[dict[str, str]] = (
            [{"mint": sol.validate_address(mint)}]
            if mint is not None
            else [{"programId": TOKEN_PROGRAM}, {"programId": TOKEN_2022_PROGRAM}]
        )
        out: list[TokenBalance] = []
        what = "getTokenAccountsByOwner"
        for selector in filters:
            answer = self._call(
                what, [holder, selector, {"encoding": "jsonParsed", "commitment": COMMITMENT}]
            )
            slot, value = self._with_context(answer, what)
            for item in parse.arr(value, what):
                out.append(self._token_account(item, holder, mint, slot))
        return tuple(out)

    def _token_account(self, item: Any, holder: str, mint: str | None, slot: int) -> TokenBalance:
        what = "getTokenAccountsByOwner entry"
        entry = parse.obj(item, what)
        account = parse.obj(parse.field(entry, "account", what), what)
        program = _address(parse.field(account, "owner", what), what)
        if program not in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM):
            parse.bad(what, "account is not owned by a token program")
        data = parse.obj(parse.field(account, "data", what), what)
        parsed = parse.obj(parse.field(data, "parsed", what), what)
        if parse.field(parsed, "type", what) != "account":
            parse.bad(what, "parsed data is not a token account")
        info = parse.obj(parse.field(parsed, "info", what), what)
        if _address(parse.field(info, "owner", what), what) != holder:
            parse.bad(what, "token account belongs to another owner than asked for")
        token = _address(parse.field(info, "mint", what), what)
        if mint is not None and token != mint:
            parse.bad(what, "token account is of another mint than asked for")
        amount = parse.obj(parse.field(info, "tokenAmount", what), what)
        return TokenBalance(
            chain="solana",
            network=self.network,
            token=token,
            owner=holder,
            amount=parse.decimal_string(parse.field(amount, "amount", what), what, maximum=U64_MAX),
            block_height=slot,
            account=_address(parse.field(entry, "pubkey", what), what),
            decimals=parse.integer(parse.field(amount, "decimals", what), what, maximum=255),
        )

    def signatures(
        self, address: str, *, limit: int = 100, before: str | None = None, until: str | None = None
    ) -> tuple[SignatureInfo, ...]:
        """The address's signatures, newest first: older than ``before`` and newer than
        ``until`` (both excluded) when given, at most ``limit``."""
        target = sol.validate_address(address)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise InputError("limit must be in [1, 1000]")
        options: dict[str, Any] = {"limit": limit, "commitment": COMMITMENT}
        if before is not None:
            options["before"] = _signature(before, "before")
        if until is not None:
            options["until"] = _signature(until, "until")
        what = "getSignaturesForAddress"
        out = []
        for item in parse.arr(self._call(what, [target, options]), what):
            entry = parse.obj(item, what)
            status = entry.get("confirmationStatus")
            out.append(
                SignatureInfo(
                    signature=_signature(parse.field(entry, "signature", what), what),
                    slot=parse.integer(parse.field(entry, "slot", what), what),
                    failed=entry.get("err") is not None,
                    confirmation_status=None if status is None else parse.string(status, what),
                    block_time=_optional_int(entry.get("blockTime"), what),
                )
            )
        if len(out) > limit:
            parse.bad(what, f"node sent {len(out)} signatures for a limit of {limit}")
        return tuple(out)

    def _confirmations(self, signature: str) -> tuple[bool, int]:
        """(known to the node, confirmations) from getSignatureStatuses."""
        what = "getSignatureStatuses"
        _, value = self._with_context(
            self._call(what, [[signature], {"searchTransactionHistory": True}]), what
        )
        statuses = parse.arr(value, what)
        if len(statuses) != 1:
            parse.bad(what, "expected one status for one signature")
        if statuses[0] is None:
            return False, 0
        status = parse.obj(statuses[0], what)
        confirmations = status.get("confirmations")
        if confirmations is None:
            return True, FINALIZED_CONFIRMATIONS
        return True, parse.integer(confirmations, what)

    def _transaction(
        self, signature: str, encoding: str
    ) -> tuple[Mapping[str, Any], Mapping[str, Any], int] | None:
        """``getTransaction`` of ``signature`` in ``encoding``: the answer, its
        ``transaction`` object and its slot, once the answer is checked to be for that
        signature; None when the node does not know the transaction."""
        what = "getTransaction"
        options = {"encoding": encoding, "maxSupportedTransactionVersion": 0, "commitment": COMMITMENT}
        answer = self._call(what, [signature, options])
        if answer is None:
            return None
        tx = parse.obj(answer, what)
        body = parse.obj(parse.field(tx, "transaction", what), what)
        signatures = parse.arr(parse.field(body, "signatures", what), what)
        if not signatures or _signature(signatures[0], what) != signature:
            parse.bad(what, "answer is for another transaction")
        return tx, body, parse.integer(parse.field(tx, "slot", what), what)

    def transaction_status(self, txid: str) -> TxStatus:
        signature = _signature(txid, "signature")
        what = "getTransaction"
        found = self._transaction(signature, "json")
        if found is None:
            known, _ = self._confirmations(signature)
            return TxStatus(signature, "pending" if known else "unknown")
        tx, _body, slot = found
        meta = parse.obj(parse.field(tx, "meta", what), what)
        fee = parse.integer(parse.field(meta, "fee", what), what, maximum=U64_MAX)
        _, confirmations = self._confirmations(signature)
        state: TxState = "failed" if meta.get("err") is not None else "confirmed"
        pre = parse.arr(meta.get("preBalances") or [], what)
        post = parse.arr(meta.get("postBalances") or [], what)
        spent = None
        if pre and post:
            before = parse.integer(pre[0], what, maximum=U64_MAX)
            after = parse.integer(post[0], what, maximum=U64_MAX)
            if after > before:
                parse.bad(what, "the fee payer's balance rose")
            spent = before - after
        return TxStatus(signature, state, slot, max(confirmations, 1), fee, spent)

    def latest_blockhash(self) -> Blockhash:
        what = "getLatestBlockhash"
        slot, value = self._with_context(self._call(what, [{"commitment": COMMITMENT}]), what)
        info = parse.obj(value, what)
        blockhash = parse.string(parse.field(info, "blockhash", what), what)
        try:
            if len(b58decode(blockhash)) != 32:
                parse.bad(what, "blockhash is not 32 bytes")
        except InputError:
            parse.bad(what, "blockhash is not base58")
        return Blockhash(
            blockhash=blockhash,
            last_valid_block_height=parse.integer(parse.field(info, "lastValidBlockHeight", what), what),
            slot=slot,
        )

    def _account(self, address: str, what: str) -> tuple[int, str, bytes] | None:
        """(slot, owner program, data) of an account, or None when it does not exist."""
        target = sol.validate_address(address)
        slot, value = self._with_context(
            self._call("getAccountInfo", [target, {"encoding": "base64", "commitment": COMMITMENT}]), what
        )
        if value is None:
            return None
        info = parse.obj(value, what)
        owner = _address(parse.field(info, "owner", what), what)
        data = parse.arr(parse.field(info, "data", what), what)
        if len(data) != 2 or data[1] != "base64":
            parse.bad(what, "account data is not [base64, 'base64']")
        try:
            raw = base64.b64decode(parse.string(data[0], what), validate=True)
        except ValueError:
            parse.bad(what, "account data is not base64")
        return slot, owner, raw

    def account_exists(self, address: str) -> bool:
        return self._account(address, "getAccountInfo") is not None

    def durable_nonce(self, account: str) -> DurableNonce:
        """The stored nonce of a System nonce account (``getAccountInfo``, base64, decoded
        here from the account's bytes rather than from a node's parsed view)."""
        what = "getAccountInfo (nonce account)"
        found = self._account(account, what)
        if found is None:
            parse.bad(what, f"nonce account {account} does not exist")
        slot, owner, raw = found
        if owner != SYSTEM_PROGRAM or len(raw) != NONCE_ACCOUNT_LEN:
            parse.bad(what, f"{account} is not a System nonce account")
        version = int.from_bytes(raw[0:4], "little")
        state = int.from_bytes(raw[4:8], "little")
        if version != 1 or state != 1:
            parse.bad(what, f"{account} is not an initialized nonce account ({version}, {state})")
        return DurableNonce(
            account=sol.validate_address(account),
            authority=b58encode(raw[8:40]),
            nonce=b58encode(raw[40:72]),
            lamports_per_signature=int.from_bytes(raw[72:80], "little"),
            slot=slot,
        )

    def mint(self, mint: str) -> Mint:
        """The decimals a mint states and the token program that owns it
        (``getAccountInfo``, its bytes decoded). A Token-2022 mint with extensions is
        refused: they change the rent of the accounts it creates and what a transfer
        delivers, which Tandem's review does not cover."""
        what = "getAccountInfo (mint)"
        found = self._account(mint, what)
        if found is None:
            parse.bad(what, f"mint {mint} does not exist")
        _slot, owner, raw = found
        if owner not in TOKEN_PROGRAMS:
            parse.bad(what, f"{mint} is not a mint of the SPL Token or the Token-2022 program")
        if owner == TOKEN_2022_PROGRAM and len(raw) > MINT_LEN:
            parse.bad(
                what,
                f"{mint} is a Token-2022 mint with extensions (transfer fees, hooks, ...), "
                "which Tandem does not withdraw",
            )
        if len(raw) != MINT_LEN or raw[45] != 1:
            parse.bad(what, f"{mint} is not an initialized mint")
        return Mint(decimals=raw[44], program=owner)

    def recent_prioritization_fees(self, accounts: tuple[str, ...]) -> tuple[int, ...]:
        """The compute-unit prices (micro-lamports) that landed transactions locking
        ``accounts`` writable paid in the recent slots (``getRecentPrioritizationFees``),
        one per slot."""
        what = "getRecentPrioritizationFees"
        if len(accounts) > 128:
            raise InputError("getRecentPrioritizationFees takes at most 128 accounts")
        keys = [sol.validate_address(a) for a in accounts]
        out = []
        for item in parse.arr(self._call(what, [keys]), what):
            entry = parse.obj(item, what)
            parse.integer(parse.field(entry, "slot", what), what)
            out.append(parse.integer(parse.field(entry, "prioritizationFee", what), what, maximum=U64_MAX))
        if len(out) > 150:
            parse.bad(what, f"node sent {len(out)} slots; the cache holds 150")
        return tuple(out)

    def fee_for_message(self, message: bytes) -> int | None:
        """What the cluster charges for ``message`` (``getFeeForMessage``); None once its
        blockhash has expired."""
        what = "getFeeForMessage"
        encoded = base64.b64encode(message).decode("ascii")
        _, value = self._with_context(self._call(what, [encoded, {"commitment": COMMITMENT}]), what)
        return None if value is None else parse.integer(value, what, maximum=U64_MAX)

    def token_account_balance(self, account: str) -> TokenBalance:
        """One token account's balance (``getTokenAccountBalance``), base units from the
        ``amount`` string. ``token`` and ``owner`` are not in this answer and stay empty."""
        what = "getTokenAccountBalance"
        target = sol.validate_address(account)
        slot, value = self._with_context(self._call(what, [target, {"commitment": COMMITMENT}]), what)
        info = parse.obj(value, what)
        return TokenBalance(
            chain="solana",
            network=self.network,
            token="",
            owner="",
            amount=parse.decimal_string(parse.field(info, "amount", what), what, maximum=U64_MAX),
            block_height=slot,
            account=target,
            decimals=parse.integer(parse.field(info, "decimals", what), what, maximum=255),
        )

    def transfers_to(self, signature: str, recipients: tuple[str, ...]) -> tuple[SolanaTransfer, ...]:
        """The SOL and SPL token transfers into ``recipients`` (wallet addresses) that one
        transaction made, read from ``getTransaction`` in ``jsonParsed`` encoding, inner
        instructions included. A token account is attributed to its owner by the
        transaction's own ``postTokenBalances``. A failed transaction moved nothing."""
        sig = _signature(signature, "signature")
        ours = {sol.validate_address(r) for r in recipients}
        what = "getTransaction"
        found = self._transaction(sig, "jsonParsed")
        if found is None:
            return ()
        tx, body, slot = found
        block_time = _optional_int(tx.get("blockTime"), what)
        meta = parse.obj(parse.field(tx, "meta", what), what)
        if meta.get("err") is not None:
            return ()
        message = parse.obj(parse.field(body, "message", what), what)
        keys = []
        for item in parse.arr(parse.field(message, "accountKeys", what), what):
            key = parse.obj(item, what).get("pubkey") if isinstance(item, dict) else item
            keys.append(_address(key, what))
        holders: dict[str, tuple[str, str]] = {}  # token account -> (owner, mint)
        for item in parse.arr(meta.get("postTokenBalances") or [], what):
            entry = parse.obj(item, what)
            position = parse.integer(parse.field(entry, "accountIndex", what), what)
            if position >= len(keys):
                parse.bad(what, "a token balance names an account the transaction does not hold")
            if "owner" in entry:
                holders[keys[position]] = (
                    _address(entry["owner"], what),
                    _address(parse.field(entry, "mint", what), what),
                )
        inner: dict[int, list[Any]] = {}
        for item in parse.arr(meta.get("innerInstructions") or [], what):
            group = parse.obj(item, what)
            inner[parse.integer(parse.field(group, "index", what), what)] = list(
                parse.arr(parse.field(group, "instructions", what), what)
            )
        ordered: list[Any] = []
        for i, ix in enumerate(parse.arr(parse.field(message, "instructions", what), what)):
            ordered.append(ix)
            ordered += inner.get(i, [])
        out = []
        for index, ix in enumerate(ordered):
            moved = self._moved(parse.obj(ix, what), holders, what)
            if moved is not None and moved[0] in ours and moved[2] > 0:
                recipient, asset, amount, account = moved
                out.append(SolanaTransfer(sig, slot, recipient, asset, amount, index, account, block_time))
        return tuple(out)

    def _moved(
        self, ix: Any, holders: dict[str, tuple[str, str]], what: str
    ) -> tuple[str, str, int, str | None] | None:
        """(recipient owner, asset, amount, token account) of one parsed instruction."""
        parsed = ix.get("parsed")
        if not isinstance(parsed, dict):
            return None  # an instruction the node could not parse: not a transfer it knows
        kind = parsed.get("type")
        info = parse.obj(parsed.get("info", {}), what)
        program = ix.get("program")
        if program == "system" and kind in _SYSTEM_TRANSFERS:
            to = _address(parse.field(info, "destination", what), what)
            return to, "SOL", parse.integer(parse.field(info, "lamports", what), what, maximum=U64_MAX), None
        if program not in ("spl-token", "spl-token-2022") or kind not in _TOKEN_TRANSFERS:
            return None
        target = "account" if kind.startswith("mintTo") else "destination"
        account = _address(parse.field(info, target, what), what)
        if account not in holders:
            return None  # no post balance names its owner: not an account of ours
        owner, mint = holders[account]
        if "mint" in info and _address(info["mint"], what) != mint:
            parse.bad(what, "a token instruction names another mint than its account holds")
        if "tokenAmount" in info:
            amount_obj = parse.obj(info["tokenAmount"], what)
            amount = parse.decimal_string(parse.field(amount_obj, "amount", what), what, maximum=U64_MAX)
        else:
            amount = parse.decimal_string(parse.field(info, "amount", what), what, maximum=U64_MAX)
        return owner, mint, amount, account

    def broadcast(self, raw: bytes) -> str:
        expected = first_signature(raw)
        what = "sendTransaction"
        encoded = base64.b64encode(raw).decode("ascii")
        answer = _signature(
            self._call(what, [encoded, {"encoding": "base64", "preflightCommitment": COMMITMENT}]), what
        )
        if answer != expected:
            raise ChainBadResponseError(
                f"{what}: node answered signature {answer}, the transaction's is {expected}"
            )
        return expected
