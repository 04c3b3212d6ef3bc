"""A Solana JSON-RPC endpoint over LiteSVM, the Solana runtime that ``solders`` ships.

No validator installs from the registries here, but ``solders`` (on PyPI) carries
LiteSVM: the real Solana runtime, with the System, SPL Token and Associated Token
Account programs loaded, executing transactions in process. It serves no JSON-RPC,
so :class:`SvmNode` answers the methods Tandem calls, in the shapes of the Solana RPC
reference (solana.com/docs/rpc/http), from the runtime's own state: balances and
account bytes are the runtime's, ``sendTransaction`` executes the transaction (a
failing one is refused as a validator's preflight refuses it), and a transaction's
fee and pre/post balances are what the runtime charged and left. What this test code
itself writes is the JSON around those facts, and the ``jsonParsed`` view of the
instructions (System transfers and SPL Token transfers, as a validator's parser
names them). The cluster is presented as devnet (its genesis hash), and slots do not
advance unless a test warps them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from solders.account import Account
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction
from solders.transaction_metadata import FailedTransactionMetadata
from tests.chainio.mock_nodes import JsonRpcServer, RpcFault, signature_page

from tandem.chainio.solana import GENESIS_HASHES, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, TOKEN_PROGRAMS
from tandem.core.chains import solana_tx as stx
from tandem.core.chains.base58 import b58encode

SYSTEM = "11111111111111111111111111111111"


_PROGRAM_NAMES = {TOKEN_PROGRAM: "spl-token", TOKEN_2022_PROGRAM: "spl-token-2022"}


def _pk(address: str) -> Pubkey:
    return Pubkey.from_string(address)


def _priority_fee(message: bytes) -> int:
    from solders.compute_budget import ID as COMPUTE_BUDGET
    from solders.message import Message

    parsed = Message.from_bytes(message)
    limit = price = 0
    for ix in parsed.instructions:
        if parsed.account_keys[ix.program_id_index] != COMPUTE_BUDGET:
            continue
        data = bytes(ix.data)
        if data[0] == 2:
            limit = int.from_bytes(data[1:5], "little")
        elif data[0] == 3:
            price = int.from_bytes(data[1:9], "little")
    return -(-limit * price // 1_000_000)


@dataclass
class Executed:
    signature: str
    slot: int
    keys: list[str]
    message: stx.Message
    fee: int
    pre: list[int]
    post: list[int]
    post_tokens: list[dict[str, Any]]


@dataclass
class SvmNode:
    # Signatures verified, and a blockhash must be recent (or a durable nonce's stored value).
    svm: LiteSVM = field(default_factory=lambda: LiteSVM().with_sigverify(True).with_blockhash_check(True))
    executed: dict[str, Executed] = field(default_factory=dict)
    # (owner, mint, token program) of the token accounts to list
    token_owners: set[tuple[str, str, str]] = field(default_factory=set)
    # What getRecentPrioritizationFees answers: one compute-unit price per recent slot.
    prioritization_fees: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = JsonRpcServer(
            methods={
                "getGenesisHash": lambda p: GENESIS_HASHES["devnet"],
                "getSlot": lambda p: self.slot,
                "getBalance": lambda p: self.context(self.svm.get_balance(_pk(p[0])) or 0),
                "getAccountInfo": lambda p: self.context(self.account_json(p[0])),
                "getTokenAccountsByOwner": self.token_accounts_by_owner,
                "getLatestBlockhash": lambda p: self.context(
                    {"blockhash": str(self.svm.latest_blockhash()), "lastValidBlockHeight": self.slot + 150}
                ),
                "getFeeForMessage": self.fee_for_message,
                "sendTransaction": self.send_transaction,
                "getTransaction": self.get_transaction,
                "getSignatureStatuses": self.signature_statuses,
                "getSignaturesForAddress": self.signatures_for_address,
                "getRecentPrioritizationFees": lambda p: [
                    {"slot": self.slot - len(self.prioritization_fees) + i, "prioritizationFee": f}
                    for i, f in enumerate(self.prioritization_fees)
                ],
            }
        )

    @property
    def slot(self) -> int:
        return int(self.svm.get_clock().slot)

    def context(self, value: Any) -> dict[str, Any]:
        return {"context": {"apiVersion": "2.2.0", "slot": self.slot}, "value": value}

    # --- state -------------------------------------------------------------------------

    def balance(self, address: str) -> int:
        return self.svm.get_balance(_pk(address)) or 0

    def token_amount(self, owner: str, mint: str, program: str = TOKEN_PROGRAM) -> int:
        account = self.svm.get_account(_pk(stx.associated_token_address(owner, mint, program)))
        return 0 if account is None else int.from_bytes(bytes(account.data)[64:72], "little")

    def set_account(self, address: str, owner: str, data: bytes, lamports: int | None = None) -> None:
        rent = self.svm.minimum_balance_for_rent_exemption(len(data))
        self.svm.set_account(_pk(address), Account(lamports or rent, data, _pk(owner), False, 0))

    def account_json(self, address: str) -> dict[str, Any] | None:
        account = self.svm.get_account(_pk(address))
        if account is None or (account.lamports == 0 and not bytes(account.data)):
            return None
        return {
            "data": [base64.b64encode(bytes(account.data)).decode("ascii"), "base64"],
            "executable": account.executable,
            "lamports": account.lamports,
            "owner": str(account.owner),
            "rentEpoch": 18_446_744_073_709_551_615,
            "space": len(bytes(account.data)),
        }

    def _token_account(self, address: str) -> dict[str, Any] | None:
        account = self.svm.get_account(_pk(address))
        if account is None or str(account.owner) not in TOKEN_PROGRAMS:
            return None
        data = bytes(account.data)
        # SPL Token: 165 bytes; Token-2022: 165, then the account type (2) and extensions.
        if len(data) != 165 and not (str(account.owner) == TOKEN_2022_PROGRAM and data[165:166] == b"\x02"):
            return None
        mint, owner = b58encode(data[0:32]), b58encode(data[32:64])
        decimals = bytes(self.svm.get_account(_pk(mint)).data)[44]  # type: ignore[union-attr]
        amount = int.from_bytes(data[64:72], "little")
        return {
            "mint": mint,
            "owner": owner,
            "amount": str(amount),
            "decimals": decimals,
            "lamports": account.lamports,
            "program": str(account.owner),
            "space": len(data),
        }

    def token_accounts_by_owner(self, params: list[Any]) -> dict[str, Any]:
        owner, selector, options = params
        assert options["encoding"] == "jsonParsed"
        out = []
        for who, mint, program in sorted(self.token_owners):
            if who != owner or ("mint" in selector and selector["mint"] != mint):
                continue
            if "programId" in selector and selector["programId"] != program:
                continue
            address = stx.associated_token_address(owner, mint, program)
            info = self._token_account(address)
            if info is None:
                continue
            amount = {
                "amount": info["amount"],
                "decimals": info["decimals"],
                "uiAmountString": info["amount"],
            }
            out.append(
                {
                    "pubkey": address,
                    "account": {
                        "data": {
                            "program": _PROGRAM_NAMES[program],
                            "parsed": {
                                "info": {"isNative": False, "mint": mint, "owner": owner,
                                         "state": "initialized", "tokenAmount": amount},
                                "type": "account",
                            },
                            "space": info["space"],
                        },
                        "executable": False,
                        "lamports": info["lamports"],
                        "owner": program,
                        "rentEpoch": 18_446_744_073_709_551_615,
                        "space": info["space"],
                    },
                }
            )  # fmt: skip
        return self.context(out)

    # --- transactions ------------------------------------------------------------------

    def fee_for_message(self, params: list[Any]) -> dict[str, Any]:
        message = stx.parse_message(base64.b64decode(params[0]))
        if message.recent_blockhash != str(self.svm.latest_blockhash()):
            return self.context(None)
        # The runtime's signature fee, plus the priority fee the ComputeBudget instructions
        # set, read with solders' own message parser.
        return self.context(
            5000 * message.num_required_signatures + _priority_fee(base64.b64decode(params[0]))
        )

    def send_transaction(self, params: list[Any]) -> str:
        raw = base64.b64decode(params[0])
        tx = Transaction.from_bytes(raw)
        _sigs, message_bytes = stx.parse_transaction(raw)
        message = stx.parse_message(message_bytes)
        keys = list(message.account_keys)
        pre = [self.balance(k) for k in keys]
        result = self.svm.send_transaction(tx)
        if isinstance(result, FailedTransactionMetadata):
            raise RpcFault(-32002, f"Transaction simulation failed: {result.err()}")
        signature = str(tx.signatures[0])
        post_tokens = []
        for i, k in enumerate(keys):
            info = self._token_account(k)
            if info is not None:
                amount = {
                    "amount": info["amount"],
                    "decimals": info["decimals"],
                    "uiAmountString": info["amount"],
                }
                post_tokens.append(
                    {"accountIndex": i, "mint": info["mint"], "owner": info["owner"],
                     "programId": info["program"], "uiTokenAmount": amount}
                )  # fmt: skip
                self.token_owners.add((info["owner"], info["mint"], info["program"]))
        self.executed[signature] = Executed(
            signature,
            self.slot,
            keys,
            message,
            result.fee(),
            pre,
            [self.balance(k) for k in keys],
            post_tokens,
        )
        return signature

    def _parsed(self, ix: stx.CompiledInstruction, message: stx.Message) -> dict[str, Any]:
        resolved = message.resolve(ix)
        accounts = [a.address for a in resolved.accounts]
        data = ix.data
        if resolved.program == SYSTEM and data[:4] == (2).to_bytes(4, "little"):
            info = {
                "source": accounts[0],
                "destination": accounts[1],
                "lamports": int.from_bytes(data[4:12], "little"),
            }
            return {"parsed": {"info": info, "type": "transfer"}, "program": "system", "programId": SYSTEM,
                    "stackHeight": None}  # fmt: skip
        if resolved.program in TOKEN_PROGRAMS and data[:1] == bytes([12]):
            amount = str(int.from_bytes(data[1:9], "little"))
            info = {
                "source": accounts[0],
                "mint": accounts[1],
                "destination": accounts[2],
                "authority": accounts[3],
                "tokenAmount": {"amount": amount, "decimals": data[9], "uiAmountString": amount},
            }
            return {"parsed": {"info": info, "type": "transferChecked"},
                    "program": _PROGRAM_NAMES[resolved.program], "programId": resolved.program,
                    "stackHeight": None}  # fmt: skip
        return {
            "accounts": accounts,
            "data": b58encode(data),
            "programId": resolved.program,
            "stackHeight": None,
        }

    def get_transaction(self, params: list[Any]) -> dict[str, Any] | None:
        done = self.executed.get(params[0])
        if done is None:
            return None
        parsed = params[1]["encoding"] == "jsonParsed"
        m = done.message
        keys: list[Any] = (
            [{"pubkey": k, "signer": m.is_signer(i), "source": "transaction", "writable": m.is_writable(i)}
             for i, k in enumerate(done.keys)]
            if parsed
            else done.keys
        )  # fmt: skip
        instructions = [
            self._parsed(ix, m)
            if parsed
            else {
                "accounts": list(ix.accounts),
                "data": b58encode(ix.data),
                "programIdIndex": ix.program_index,
            }
            for ix in m.instructions
        ]
        return {
            "blockTime": 1_790_000_000,
            "meta": {"computeUnitsConsumed": 0, "err": None, "fee": done.fee, "innerInstructions": [],
                     "logMessages": [], "postBalances": done.post, "postTokenBalances": done.post_tokens,
                     "preBalances": done.pre, "preTokenBalances": [], "rewards": [], "status": {"Ok": None}},
            "slot": done.slot,
            "transaction": {"message": {"accountKeys": keys, "instructions": instructions,
                                        "recentBlockhash": m.recent_blockhash},
                            "signatures": [done.signature]},
            "version": "legacy",
        }  # fmt: skip

    def signature_statuses(self, params: list[Any]) -> dict[str, Any]:
        out: list[Any] = []
        for sig in params[0]:
            done = self.executed.get(sig)
            found = self.svm.get_transaction(Signature.from_string(sig)) is not None
            out.append(
                None
                if done is None or not found
                else {"slot": done.slot, "confirmations": None, "err": None, "status": {"Ok": None},
                      "confirmationStatus": "finalized"}
            )  # fmt: skip
        return self.context(out)

    def signatures_for_address(self, params: list[Any]) -> list[dict[str, Any]]:
        address, options = params
        touching = [e for e in self.executed.values() if address in e.keys]
        touching.reverse()  # newest first
        return signature_page(
            [
                {"blockTime": 1_790_000_000, "confirmationStatus": "finalized", "err": None, "memo": None,
                 "signature": e.signature, "slot": e.slot}
                for e in touching
            ],
            options,
        )  # fmt: skip
