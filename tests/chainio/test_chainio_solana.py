"""The Solana JSON-RPC backend against the documented answer shapes.

No Solana validator installs from npm or PyPI here (``solana-test-validator`` ships
only with the Agave release archives), so the answers are those of the Solana RPC HTTP
methods reference (solana.com/docs/rpc/http): ``getGenesisHash``, ``getBalance``,
``getTokenAccountsByOwner`` (jsonParsed), ``getSignaturesForAddress``,
``getTransaction``, ``getSignatureStatuses``, ``getLatestBlockhash``, ``getSlot`` and
``sendTransaction`` (base64), served by httpx.MockTransport. The transaction sent is a
real system-program transfer signed with Ed25519 by ``core.chains.solana``.
"""

from __future__ import annotations

import base64
import secrets
from decimal import Decimal
from typing import Any

import pytest
from tests.chainio.mock_nodes import JsonRpcServer, RpcFault, backend_for

from tandem.chainio import SolanaBackend
from tandem.chainio.solana import GENESIS_HASHES, TOKEN_2022_PROGRAM, TOKEN_PROGRAM, SolanaJsonRpc
from tandem.core.chains import solana as sol
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    ChainRejectedError,
    InvalidTransactionError,
)

SYSTEM_PROGRAM = b"\x00" * 32


def new_account() -> tuple[bytes, str]:
    seed = secrets.token_bytes(32)
    return seed, sol.address_from_public_key(sol.public_key_from_seed(seed))


def system_transfer(seed: bytes, recipient: str, lamports: int, blockhash: str) -> bytes:
    """A legacy-message system transfer, signed: what ``solana transfer`` sends."""
    payer = sol.public_key_from_seed(seed)
    data = (2).to_bytes(4, "little") + lamports.to_bytes(8, "little")  # SystemInstruction::Transfer
    message = (
        bytes([1, 0, 1])  # one signer, no read-only signed, one read-only unsigned (the program)
        + bytes([3]) + payer + b58decode(recipient) + SYSTEM_PROGRAM
        + b58decode(blockhash)
        + bytes([1, 2, 2, 0, 1, len(data)]) + data
    )  # fmt: skip
    signature = sol.sign_ed25519(seed, message)
    return bytes([1]) + signature + message


class SolanaNode:
    def __init__(self, cluster: str = "devnet") -> None:
        self.genesis = GENESIS_HASHES[cluster]
        self.slot = 341_197_933
        self.balances: dict[str, int] = {}
        self.token_accounts: dict[str, list[dict[str, Any]]] = {}
        self.transactions: dict[str, dict[str, Any]] = {}
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
                "getSignaturesForAddress": lambda p: self.signatures_of.get(p[0], [])[: p[1]["limit"]],
                "getTransaction": lambda p: self.transactions.get(p[0]),
                "getSignatureStatuses": lambda p: self.context([self.statuses.get(s) for s in p[0]]),
                "getLatestBlockhash": lambda p: self.context(
                    {
                        "blockhash": "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N",
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


def solana(node: SolanaNode, network: str = "devnet") -> SolanaJsonRpc:
    backend = backend_for("solana", network, "jsonrpc+https://solana-rpc.example", node.server)
    assert isinstance(backend, SolanaJsonRpc)
    return backend


def test_the_cluster_is_checked_by_genesis_hash_first() -> None:
    node = SolanaNode(cluster="devnet")
    backend = solana(node, network="mainnet")
    with pytest.raises(ChainMismatchError, match="not solana mainnet"):
        backend.balance(new_account()[1])
    assert node.server.methods_called() == ["getGenesisHash"]
    assert isinstance(solana(node), SolanaBackend)


def test_balance_in_lamports_at_the_context_slot() -> None:
    node = SolanaNode()
    _, owner = new_account()
    node.balances[owner] = 2_500_000_000
    balance = solana(node).balance(owner)
    assert (balance.amount, balance.block_height) == (2_500_000_000, node.slot)
    node.balances[owner] = 2.5  # type: ignore[assignment]
    with pytest.raises(ChainBadResponseError, match="expected an integer"):
        solana(node).balance(owner)


def test_token_balances_read_the_base_unit_string_never_ui_amount() -> None:
    node = SolanaNode()
    _, owner = new_account()
    _, mint = new_account()
    _, mint22 = new_account()
    account = node.add_token_account(owner, mint, "420000000000001")
    node.add_token_account(owner, mint22, "7", program=TOKEN_2022_PROGRAM)
    backend = solana(node)
    balances = backend.token_balances(owner)
    assert [(b.token, b.amount, b.decimals) for b in balances] == [
        (mint, 420_000_000_000_001, 6),
        (mint22, 7, 6),
    ]
    assert balances[0].account == account
    [only] = backend.token_balances(owner, mint=mint)
    assert only.amount == 420_000_000_000_001


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("tokenAmount", "amount"), "1.5"),
        (("tokenAmount", "amount"), 15),
        (("tokenAmount", "amount"), "007"),
        (("owner",), "11111111111111111111111111111111"),  # another owner
    ],
)
def test_token_accounts_in_another_shape_are_refused(path: tuple[str, ...], value: Any) -> None:
    node = SolanaNode()
    _, owner = new_account()
    node.add_token_account(owner, new_account()[1], "100")
    target = node.token_accounts[owner][0]["account"]["data"]["parsed"]["info"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ChainBadResponseError):
        solana(node).token_balances(owner)


def test_signatures_for_address_and_transaction_status() -> None:
    node = SolanaNode()
    _, owner = new_account()
    good = b58encode(secrets.token_bytes(64))
    bad = b58encode(secrets.token_bytes(64))
    node.signatures_of[owner] = [
        {"err": None, "memo": None, "signature": good, "slot": 114, "blockTime": None,
         "confirmationStatus": "finalized"},
        {"err": {"InstructionError": [0, "Custom"]}, "memo": None, "signature": bad, "slot": 113,
         "blockTime": 1_790_000_000, "confirmationStatus": "confirmed"},
    ]  # fmt: skip
    backend = solana(node)
    infos = backend.signatures(owner, limit=10)
    assert [(i.signature, i.slot, i.failed) for i in infos] == [(good, 114, False), (bad, 113, True)]

    node.confirm(good, slot=114, confirmations=None)
    node.confirm(bad, slot=113, err={"InstructionError": [0, "Custom"]}, confirmations=3)
    status = backend.transaction_status(good)
    assert (status.state, status.block_height, status.confirmations, status.fee) == (
        "confirmed",
        114,
        32,
        5000,
    )
    assert backend.transaction_status(bad).state == "failed"
    assert backend.transaction_status(bad).confirmations == 3
    assert backend.transaction_status(b58encode(secrets.token_bytes(64))).state == "unknown"


def test_a_transaction_answered_for_another_signature_is_refused() -> None:
    node = SolanaNode()
    asked, other = b58encode(secrets.token_bytes(64)), b58encode(secrets.token_bytes(64))
    node.confirm(other, slot=5)
    node.transactions[asked] = node.transactions[other]
    with pytest.raises(ChainBadResponseError, match="another transaction"):
        solana(node).transaction_status(asked)


def test_broadcast_sends_base64_and_checks_the_signature_answered() -> None:
    node = SolanaNode()
    backend = solana(node)
    seed, _ = new_account()
    blockhash = backend.latest_blockhash()
    assert (blockhash.last_valid_block_height, blockhash.slot) == (3090, node.slot)
    raw = system_transfer(seed, new_account()[1], 1_000_000, blockhash.blockhash)
    expected = b58encode(raw[1:65])
    assert backend.broadcast(raw) == expected
    assert node.sent == [raw]

    node.send_answer = lambda raw: b58encode(secrets.token_bytes(64))
    with pytest.raises(ChainBadResponseError, match="the transaction's is"):
        backend.broadcast(raw)

    def refuse(raw: bytes) -> Any:
        raise RpcFault(-32002, "Transaction simulation failed: Blockhash not found")

    node.send_answer = refuse
    with pytest.raises(ChainRejectedError, match="Blockhash not found") as info:
        backend.broadcast(raw)
    assert info.value.details == {"rpc_code": -32002}


def test_an_unsigned_or_truncated_transaction_is_refused_before_sending() -> None:
    node = SolanaNode()
    backend = solana(node)
    with pytest.raises(InvalidTransactionError, match="not signed"):
        backend.broadcast(bytes([1]) + b"\x00" * 64 + b"message")
    with pytest.raises(InvalidTransactionError):
        backend.broadcast(bytes([2]) + b"\x01" * 64)
    assert node.sent == []
