"""The Solana JSON-RPC backend against the documented answer shapes.

No Solana validator installs from npm or PyPI here (``solana-test-validator`` ships
only with the Agave release archives; the registries' ``litesvm`` and
``solana-bankrun`` run programs in process and serve no JSON-RPC), so the answers are
those of the Solana RPC HTTP methods reference (solana.com/docs/rpc/http):
``getGenesisHash``, ``getBalance``, ``getTokenAccountsByOwner`` (jsonParsed),
``getTokenAccountBalance``, ``getAccountInfo`` (base64), ``getFeeForMessage``,
``getSignaturesForAddress``, ``getTransaction`` (json and jsonParsed),
``getSignatureStatuses``, ``getLatestBlockhash``, ``getSlot`` and ``sendTransaction``
(base64), served by httpx.MockTransport. These tests show the client reads the
documented shapes and refuses others; they do not show a particular validator version
still answers so. The transaction sent is a
real system-program transfer signed with Ed25519 by ``core.chains.solana``.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from tests.chainio.mock_nodes import (
    RpcFault,
    SolanaNode,
    backend_for,
    new_account,
    system_transfer_ix,
    token_transfer_ix,
)

from tandem.chainio import Mint, SolanaBackend
from tandem.chainio.solana import SYSTEM_PROGRAM as SYSTEM_PROGRAM_ID
from tandem.chainio.solana import TOKEN_2022_PROGRAM, TOKEN_PROGRAM, SolanaJsonRpc
from tandem.core.chains import solana as sol
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.errors import (
    ChainBadResponseError,
    ChainMismatchError,
    ChainRejectedError,
    InputError,
    InvalidTransactionError,
)

SYSTEM_PROGRAM = b"\x00" * 32


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


def test_durable_nonce_is_decoded_from_the_account_bytes() -> None:
    node = SolanaNode()
    _, authority = new_account()
    _, account = new_account()
    stored = b58encode(secrets.token_bytes(32))
    node.set_nonce_account(account, authority, stored)
    nonce = solana(node).durable_nonce(account)
    assert (nonce.account, nonce.authority, nonce.nonce, nonce.lamports_per_signature) == (
        account,
        authority,
        stored,
        5000,
    )
    assert node.server.calls[-1][1][1]["encoding"] == "base64"
    with pytest.raises(ChainBadResponseError, match="does not exist"):
        solana(node).durable_nonce(new_account()[1])
    node.set_account(account, TOKEN_PROGRAM, bytes(80))  # not owned by the System program
    with pytest.raises(ChainBadResponseError, match="not a System nonce account"):
        solana(node).durable_nonce(account)
    node.set_account(account, "11111111111111111111111111111111", bytes(80))  # uninitialized
    with pytest.raises(ChainBadResponseError, match="not an initialized nonce account"):
        solana(node).durable_nonce(account)


def test_mint_decimals_program_account_existence_and_fee_for_message() -> None:
    node = SolanaNode()
    _, mint = new_account()
    backend = solana(node)
    node.set_mint(mint, 9)
    assert backend.mint(mint) == Mint(decimals=9, program=TOKEN_PROGRAM)
    assert backend.account_exists(mint)
    assert not backend.account_exists(new_account()[1])
    plain = bytes(36) + (10**6).to_bytes(8, "little") + bytes([4, 1]) + bytes(36)
    node.set_account(mint, TOKEN_2022_PROGRAM, plain)
    assert backend.mint(mint) == Mint(decimals=4, program=TOKEN_2022_PROGRAM)
    # Extensions follow the base mint (padded to 165 bytes, then the account type).
    node.set_account(mint, TOKEN_2022_PROGRAM, plain + bytes(83) + b"\x01" + bytes(12))
    with pytest.raises(ChainBadResponseError, match="Token-2022 mint with extensions"):
        backend.mint(mint)
    node.set_account(mint, SYSTEM_PROGRAM_ID, plain)
    with pytest.raises(ChainBadResponseError, match="not a mint of the SPL Token or the Token-2022"):
        backend.mint(mint)
    assert backend.fee_for_message(bytes([1, 0, 1, 0])) == 5000
    node.server.methods["getFeeForMessage"] = lambda p: node.context(None)  # blockhash expired
    assert backend.fee_for_message(bytes([1, 0, 1, 0])) is None


def test_recent_prioritization_fees_in_the_documented_shape() -> None:
    """getRecentPrioritizationFees answers [{"slot", "prioritizationFee"}] per recent
    slot (the Solana RPC reference's example); the accounts asked for are the writable
    ones, at most 128."""
    node = SolanaNode()
    asked: list[Any] = []

    def answer(params: list[Any]) -> Any:
        asked.append(params)
        return [{"slot": 348125, "prioritizationFee": 0}, {"slot": 348126, "prioritizationFee": 1000},
                {"slot": 348127, "prioritizationFee": 500}]  # fmt: skip

    node.server.methods["getRecentPrioritizationFees"] = answer
    _, account = new_account()
    assert solana(node).recent_prioritization_fees((account,)) == (0, 1000, 500)
    assert asked == [[[account]]]
    node.server.methods["getRecentPrioritizationFees"] = lambda p: [{"slot": 1, "prioritizationFee": "1000"}]
    with pytest.raises(ChainBadResponseError):
        solana(node).recent_prioritization_fees((account,))
    with pytest.raises(InputError):
        solana(node).recent_prioritization_fees(tuple(new_account()[1] for _ in range(129)))


def test_token_account_balance_reads_the_amount_string() -> None:
    node = SolanaNode()
    _, owner = new_account()
    account = node.add_token_account(owner, new_account()[1], "9864")
    balance = solana(node).token_account_balance(account)
    assert (balance.amount, balance.decimals, balance.account, balance.block_height) == (
        9864,
        6,
        account,
        node.slot,
    )
    node.token_accounts[owner][0]["account"]["data"]["parsed"]["info"]["tokenAmount"]["amount"] = 98.64
    with pytest.raises(ChainBadResponseError):
        solana(node).token_account_balance(account)


def test_transfers_into_our_addresses_are_read_from_parsed_transactions() -> None:
    node = SolanaNode()
    _, payer = new_account()
    _, ours = new_account()
    _, other = new_account()
    _, mint = new_account()
    _, our_token_account = new_account()
    _, their_token_account = new_account()
    signature = node.record_parsed(
        payer=payer,
        instructions=[
            system_transfer_ix(payer, ours, 1_500_000_000),
            system_transfer_ix(payer, other, 7),  # not to us
            token_transfer_ix(their_token_account, our_token_account, 2_000_000, mint=mint),
            {
                "accounts": [],
                "data": "3Bxs4h24hBtQy9rw",
                "programId": "ComputeBudget111111111111111111111111111111",
            },
        ],
        # an inner (CPI) transfer of the first instruction: a plain SPL transfer, no mint
        inner=[token_transfer_ix(their_token_account, our_token_account, 5, authority=payer)],
        token_balances=[(our_token_account, ours, mint, "2000005"), (their_token_account, other, mint, "0")],
        touches=(ours,),
    )
    moved = solana(node).transfers_to(signature, (ours,))
    assert [(t.recipient, t.asset, t.amount, t.index, t.account) for t in moved] == [
        (ours, "SOL", 1_500_000_000, 0, None),
        (ours, mint, 5, 1, our_token_account),  # the inner instruction runs right after its parent
        (ours, mint, 2_000_000, 3, our_token_account),
    ]
    assert {t.slot for t in moved} == {node.slot}
    assert node.server.calls[-1][1][1]["encoding"] == "jsonParsed"

    failed = node.record_parsed(
        payer=payer, instructions=[system_transfer_ix(payer, ours, 9)], err={"InstructionError": [0, "X"]}
    )
    assert solana(node).transfers_to(failed, (ours,)) == ()
    assert solana(node).transfers_to(b58encode(secrets.token_bytes(64)), (ours,)) == ()

    lying = node.record_parsed(
        payer=payer,
        instructions=[token_transfer_ix(their_token_account, our_token_account, 1, mint=new_account()[1])],
        token_balances=[(our_token_account, ours, mint, "1")],
    )
    with pytest.raises(ChainBadResponseError, match="another mint"):
        solana(node).transfers_to(lying, (ours,))
    node.parsed_transactions[lying]["transaction"]["signatures"] = [signature]
    with pytest.raises(ChainBadResponseError, match="another transaction"):
        solana(node).transfers_to(lying, (ours,))
