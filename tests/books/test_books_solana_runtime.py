"""Solana withdrawals executed by the real Solana runtime: LiteSVM, which ``solders``
ships (see tests/chainio/svm_node.py; no validator installs from the registries, and
LiteSVM serves no JSON-RPC, so a thin endpoint answers the RPC methods from the
runtime's state). The manager names only wallet, asset, amount and destination;
Tandem fills the blockhash (or the durable nonce), decimals and token account creation
from the endpoint, builds, approves and releases the transaction, and the runtime runs
the very bytes released: a SOL transfer, an SPL transfer that creates the destination's
token account, and a durable-nonce transfer. Deposits made by transactions the runtime
ran are found, and the register reconciles with the balances the runtime holds,
fees and rent included. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import httpx
import pytest
from tests.books.helpers import make_client
from tests.conftest import World, new_member
from tests.helpers.keysets import make_keyset
from tests.helpers.withdrawals import allow, approve, pass_delay

pytest.importorskip("solders.litesvm")
from tests.chainio.mock_nodes import backend_for
from tests.chainio.svm_node import SYSTEM, SvmNode

from tandem.chainio import ChainConfig
from tandem.core import reconcile as rcore
from tandem.core.actions import sign_action
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.core.chains.base58 import b58encode
from tandem.core.roles import Role
from tandem.errors import RemoteError
from tandem.services.books import Books

SPEC = "jsonrpc+https://solana-rpc.example"
SOL = 10**9


class Funder:
    """Someone outside Tandem, paying into its addresses with transactions the runtime runs."""

    def __init__(self, node: SvmNode) -> None:
        self.node = node
        self.seed = secrets.token_bytes(32)
        self.address = sol.address_from_public_key(sol.public_key_from_seed(self.seed))
        node.svm.airdrop(sol_pk(self.address), 100 * SOL)

    def send(self, instructions: list[stx.Instruction]) -> str:
        message = stx.compile_message(
            instructions, self.address, str(self.node.svm.latest_blockhash())
        ).serialize()
        raw = stx.serialize_transaction([sol.sign_ed25519(self.seed, message)], message)
        return self.node.send_transaction([base64.b64encode(raw).decode("ascii"), {"encoding": "base64"}])

    def new_mint(self, decimals: int, program: str = stx.TOKEN_PROGRAM, extra: bytes = b"") -> str:
        mint = sol.address_from_public_key(sol.public_key_from_seed(secrets.token_bytes(32)))
        authority = (1).to_bytes(4, "little") + sol_pk(self.address).__bytes__()
        data = (
            authority
            + (0).to_bytes(8, "little")
            + bytes([decimals, 1])
            + (0).to_bytes(4, "little")
            + bytes(32)
        )
        self.node.set_account(mint, program, data + extra)
        return mint

    def mint_to(
        self, mint: str, owner: str, amount: int, decimals: int, program: str = stx.TOKEN_PROGRAM
    ) -> stx.Instruction:
        account = stx.associated_token_address(owner, mint, program)
        return stx.Instruction(
            program,
            (stx.AccountMeta(mint, False, True), stx.AccountMeta(account, False, True),
             stx.AccountMeta(self.address, True, False)),
            bytes([14]) + amount.to_bytes(8, "little") + bytes([decimals]),  # MintToChecked
        )  # fmt: skip


def sol_pk(address: str) -> Any:
    from solders.pubkey import Pubkey

    return Pubkey.from_string(address)


def _released_and_tracked(world: World, intent: dict[str, Any]) -> dict[str, Any]:
    created = world.client.withdrawals.create(world["alice"], intent)
    approve(world, created["id"])
    released = world.client.withdrawals.release(world["bob"], created["id"])
    wid = created["id"]
    env = world.client.sign(
        world["bob"], "withdrawal.broadcast", {"withdrawal": wid, "txid": released["txid"]}
    )
    sent = world.client.request("POST", f"/v1/books/withdrawals/{wid}/broadcast", json_body={"envelope": env})
    assert sent["status"] == "broadcast"
    confirm = world.client.sign(world["bob"], "withdrawal.confirm", {"withdrawal": wid})
    tracked = world.client.request(
        "POST", f"/v1/books/withdrawals/{wid}/track", json_body={"envelope": confirm}
    )
    assert tracked["state"] == "confirmed", tracked
    return {"created": created, "released": released, "tracked": tracked}


def test_tandem_built_solana_transfers_run_in_the_runtime_and_the_books_reconcile(world: World) -> None:
    node = SvmNode()
    books = Books(world.svc.runner, world.svc.withdrawals, ChainConfig.from_mapping({"solana.devnet": SPEC}))
    books._backends[("solana", "devnet")] = backend_for("solana", "devnet", SPEC, node.server)
    world.client.http.app.state.books = books  # type: ignore[attr-defined]
    make_client(world, books, "acme")
    ks = make_keyset(world, curve="ed25519", chains=(("solana", "devnet"),), segregation="client:acme")
    (ours,) = [a["address"] for a in ks.addresses if a["chain"] == "solana"]
    dest = sol.address_from_public_key(sol.public_key_from_seed(secrets.token_bytes(32)))

    funder = Funder(node)
    mint = funder.new_mint(6)
    allow(world, chain="solana", network="devnet", address=dest, label="vault", asset="SOL")
    allow(world, chain="solana", network="devnet", address=dest, label="vault tokens", asset=mint)
    pass_delay(world)

    # Deposits: real transactions, run by the runtime, found by the scan.
    sol_in = funder.send([stx.transfer(funder.address, ours, 5 * SOL)])
    tok_in = funder.send(
        [
            stx.create_associated_token_account_idempotent(funder.address, funder.address, mint),
            funder.mint_to(mint, funder.address, 10_000_000, 6),
            stx.create_associated_token_account_idempotent(funder.address, ours, mint),
            stx.transfer_checked(funder.address, ours, mint, 7_000_000, 6),
        ]
    )
    seen = books.scan_deposits()
    assert sorted((m["asset"], m["amount"], m["txid"], m["index"]) for m in seen) == sorted(
        [("SOL", str(5 * SOL), sol_in, 0), (mint, "7000000", tok_in, 3)]
    )
    assert books.reconcile()["report"]["verdict"] == "reconciled"

    # A SOL withdrawal: blockhash from the chain, the runtime runs the released bytes.
    base = {"wallet": ks.id, "chain": "solana", "network": "devnet", "destination": dest}
    one = _released_and_tracked(world, {**base, "asset": "SOL", "amount": str(SOL)})
    assert node.balance(dest) == SOL
    assert node.balance(ours) == 4 * SOL - 5000

    # A token withdrawal creating the destination's token account: decimals from the mint.
    two = _released_and_tracked(world, {**base, "asset": mint, "amount": "2500000"})
    assert two["created"]["intent"]["solana"]["create_destination_account"] is True
    assert two["created"]["intent"]["solana"]["decimals"] == 6
    assert node.token_amount(dest, mint) == 2_500_000
    assert node.token_amount(ours, mint) == 4_500_000
    rent = node.svm.minimum_balance_for_rent_exemption(165)
    assert node.balance(ours) == 4 * SOL - 5000 - 5000 - rent

    # A durable-nonce withdrawal: the stored nonce read from the account is the blockhash.
    nonce_account = sol.address_from_public_key(sol.public_key_from_seed(secrets.token_bytes(32)))
    stored = b58encode(hashlib.sha256(b"a stored durable nonce").digest())
    data = (
        (1).to_bytes(4, "little") + (1).to_bytes(4, "little") + sol_pk(ours).__bytes__()
        + sol_pk(stored).__bytes__() + (5000).to_bytes(8, "little")
    )  # fmt: skip
    node.set_account(nonce_account, SYSTEM, data)
    three = _released_and_tracked(
        world, {**base, "asset": "SOL", "amount": "1000000", "solana": {"nonce_account": nonce_account}}
    )
    assert three["created"]["intent"]["solana"] == {
        "recent_blockhash": stored,
        "nonce_account": nonce_account,
    }
    advanced = books.backend("solana", "devnet").durable_nonce(nonce_account)  # type: ignore[attr-defined]
    assert advanced.nonce != stored  # the runtime advanced it: the release cannot run twice

    # Priority fees, asked for by the manager: a compute-unit price from the cluster's
    # recent prioritization fees, the limit Tandem's transfer needs; the runtime runs it
    # within that limit and charges exactly the fee the approvers reviewed.
    node.prioritization_fees = [0, 0, 20_000, 50_000, 90_000, 0, 1_000_000]
    before = node.balance(ours)
    four = _released_and_tracked(
        world, {**base, "asset": "SOL", "amount": "1000", "solana": {"priority": True}}
    )
    asked = four["created"]["intent"]["solana"]
    assert (asked["compute_unit_limit"], asked["compute_unit_price"]) == (1_500, 1_000_000)
    assert four["created"]["fee"] == str(5000 + 1_500)  # 1,500 units at 1 lamport each
    assert node.balance(ours) == before - 1000 - 5000 - 1_500
    node.prioritization_fees = [40_000]
    before = node.balance(ours)
    new_dest = sol.address_from_public_key(sol.public_key_from_seed(secrets.token_bytes(32)))
    allow(world, chain="solana", network="devnet", address=new_dest, label="vault 2", asset=mint)
    pass_delay(world)
    five = _released_and_tracked(
        world,
        {**base, "destination": new_dest, "asset": mint, "amount": "1000", "solana": {"priority": True}},
    )
    asked = five["created"]["intent"]["solana"]
    assert (
        asked["compute_unit_limit"],
        asked["compute_unit_price"],
        asked["create_destination_account"],
    ) == (
        50_000,
        40_000,
        True,
    )
    assert node.balance(ours) == before - 5000 - 2000 - rent  # 50,000 units at 0.04 lamports
    assert node.token_amount(new_dest, mint) == 1000

    # The register charged what the runtime charged: fees, and the rent of the account made.
    fees = {m.withdrawal: -m.amount for m in books.register().movements if m.type == "fee"}
    assert fees == {
        one["created"]["id"]: 5000,
        two["created"]["id"]: 5000 + rent,
        three["created"]["id"]: 5000,
        four["created"]["id"]: 5000 + 1_500,
        five["created"]["id"]: 5000 + 2000 + rent,
    }
    report = books.reconcile()["report"]
    assert report["verdict"] == "reconciled", rcore.table(report)
    chain = {r["asset"]: r["chain_amount"] for r in report["rows"] if r["address"] == ours}
    assert chain == {"SOL": str(node.balance(ours)), mint: "4499000"}


def test_token_2022_withdrawals_run_in_the_runtime_and_extension_mints_are_refused(world: World) -> None:
    """A Token-2022 mint: Tandem reads the program from the mint account, derives the
    accounts in that program, names it in the intent (so the approvers' own decoding
    compares it), charges the rent of a Token-2022 account, and the runtime runs it."""
    t22 = stx.TOKEN_2022_PROGRAM
    node = SvmNode()
    books = Books(world.svc.runner, world.svc.withdrawals, ChainConfig.from_mapping({"solana.devnet": SPEC}))
    books._backends[("solana", "devnet")] = backend_for("solana", "devnet", SPEC, node.server)
    world.client.http.app.state.books = books  # type: ignore[attr-defined]
    make_client(world, books, "acme")
    ks = make_keyset(world, curve="ed25519", chains=(("solana", "devnet"),), segregation="client:acme")
    (ours,) = [a["address"] for a in ks.addresses if a["chain"] == "solana"]
    dest = sol.address_from_public_key(sol.public_key_from_seed(secrets.token_bytes(32)))
    funder = Funder(node)
    mint = funder.new_mint(2, t22)
    allow(world, chain="solana", network="devnet", address=dest, label="vault tokens", asset=mint)
    pass_delay(world)
    sol_in = funder.send([stx.transfer(funder.address, ours, SOL)])
    tok_in = funder.send(
        [
            stx.create_associated_token_account_idempotent(funder.address, funder.address, mint, t22),
            funder.mint_to(mint, funder.address, 100_000, 2, t22),
            stx.create_associated_token_account_idempotent(funder.address, ours, mint, t22),
            stx.transfer_checked(funder.address, ours, mint, 90_000, 2, t22),
        ]
    )
    seen = books.scan_deposits()
    assert sorted((m["asset"], m["amount"], m["txid"]) for m in seen) == sorted(
        [("SOL", str(SOL), sol_in), (mint, "90000", tok_in)]
    )

    base = {"wallet": ks.id, "chain": "solana", "network": "devnet", "destination": dest}
    before = node.balance(ours)
    done = _released_and_tracked(world, {**base, "asset": mint, "amount": "12345"})
    asked = done["created"]["intent"]["solana"]
    assert (asked["token_program"], asked["decimals"], asked["create_destination_account"]) == (t22, 2, True)
    decoded = done["created"]["decoded"]
    assert decoded["token_program"] == t22
    assert decoded["destination_token_account"] == stx.associated_token_address(dest, mint, t22)
    assert node.token_amount(dest, mint, t22) == 12_345
    assert node.token_amount(ours, mint, t22) == 90_000 - 12_345
    rent = node.svm.minimum_balance_for_rent_exemption(170)
    assert rent == stx.TOKEN_2022_ACCOUNT_RENT
    assert node.balance(ours) == before - 5000 - rent
    assert done["created"]["fee"] == str(5000 + rent)
    fees = {m.withdrawal: -m.amount for m in books.register().movements if m.type == "fee"}
    assert fees == {done["created"]["id"]: 5000 + rent}
    report = books.reconcile()["report"]
    assert report["verdict"] == "reconciled", rcore.table(report)

    # A Token-2022 mint with extensions (here a transfer-fee config): refused, by name.
    fee_mint = funder.new_mint(2, t22, extra=bytes(83) + b"\x01" + bytes(112))
    allow(world, chain="solana", network="devnet", address=dest, label="fee token", asset=fee_mint)
    pass_delay(world)
    with pytest.raises(RemoteError, match="Token-2022 mint with extensions"):
        world.client.withdrawals.create(world["alice"], {**base, "asset": fee_mint, "amount": "1"})


def test_a_hand_filled_token_intent_is_checked_against_its_mint_when_the_server_reads_solana(
    world: World,
) -> None:
    """A manager who fills the Solana parameters by hand (the client then asks the chain
    nothing) and names the wrong token program, or a Token-2022 mint with extensions, is
    refused at create, with the code and in the log, when the server reads the network;
    without a node there the intent goes on to the approvers' decoding as before."""
    t22 = stx.TOKEN_2022_PROGRAM
    node = SvmNode()
    mint_reads: list[httpx.Request] = []

    def counted(request: httpx.Request) -> httpx.Response:
        mint_reads.extend([request] * request.content.count(b'"getAccountInfo"'))
        answer: httpx.Response = node.server(request)
        return answer

    books = Books(world.svc.runner, world.svc.withdrawals, ChainConfig.from_mapping({"solana.devnet": SPEC}))
    books._backends[("solana", "devnet")] = backend_for("solana", "devnet", SPEC, counted)
    world.client.http.app.state.books = books  # type: ignore[attr-defined]
    ks = make_keyset(world, curve="ed25519", chains=(("solana", "devnet"),))
    dest = sol.address_from_public_key(sol.public_key_from_seed(secrets.token_bytes(32)))
    funder = Funder(node)
    classic, token22 = funder.new_mint(2), funder.new_mint(2, t22)
    with_fees = funder.new_mint(2, t22, extra=bytes(83) + b"\x01" + bytes(112))
    for i, mint in enumerate((classic, token22, with_fees)):
        allow(world, chain="solana", network="devnet", address=dest, label=f"tokens {i}", asset=mint)
    pass_delay(world)

    def by_hand(mint: str, decimals: int = 2, **named: str) -> dict[str, Any]:
        params = {"recent_blockhash": str(node.svm.latest_blockhash()), "decimals": decimals}
        return {
            "wallet": ks.id, "chain": "solana", "network": "devnet", "destination": dest, "asset": mint,
            "amount": "5", "solana": {**params, "create_destination_account": True, **named},
        }  # fmt: skip

    refusals = [
        (by_hand(token22), "invalid_input", "is a Token-2022 mint"),
        (by_hand(classic, token_program=t22), "invalid_input", "is an SPL Token mint"),
        (by_hand(with_fees, token_program=t22), "chain_bad_response", "Token-2022 mint with extensions"),
        (by_hand(classic, decimals=6), "invalid_input", "has 2 decimals on devnet; intent.solana.decimals"),
    ]
    for intent, code, words in refusals:
        with pytest.raises(RemoteError, match=words) as err:
            world.client.withdrawals.create(world["alice"], intent)
        assert err.value.remote_code == code
    logged = [json.loads(line) for line in world.client.audit.export(world["olga"])[0]]
    refused = [e for e in logged if e["kind"] == "withdrawal.create.refused"]
    assert [(e["code"], e["actor"]) for e in refused[-4:]] == [
        (code, world["alice"].member_id) for _, code, _ in refusals
    ]

    # Named rightly, both programs go through; the mints were read once each.
    reads = len(mint_reads)
    assert reads >= 3
    made = world.client.withdrawals.create(world["alice"], by_hand(token22, token_program=t22))
    assert made["decoded"]["token_program"] == t22
    assert world.client.withdrawals.create(world["alice"], by_hand(classic))["status"] == "pending"
    assert len(mint_reads) == reads

    # A stranger's signed request for a mint never seen makes the server ask the node nothing.
    stranger = new_member("mallory", Role.MANAGER)
    unseen = funder.new_mint(2)
    envelope = sign_action(
        stranger,
        type="withdrawal.create",
        deployment=world.deployment,
        body={"intent": {**made["intent"], "asset": unseen}, "operation": "x", "share_digest": "x"},
        issued_at=world.clock(),
    ).to_json()
    answer = world.client.http.post("/v1/withdrawals", json={"envelope": envelope, "sealed_share": "x"})
    assert answer.json()["code"] == "unknown_actor"
    assert len(mint_reads) == reads

    # Without a node for the network, the server does not look: the approvers' decoder
    # is the check (it shows the program the bytes run in).
    world.client.http.app.state.books = Books(world.svc.runner, world.svc.withdrawals)  # type: ignore[attr-defined]
    unchecked = world.client.withdrawals.create(world["alice"], by_hand(classic, token_program=t22))
    assert unchecked["decoded"]["token_program"] == t22
