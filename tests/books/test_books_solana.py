"""Solana in the books: deposits (SOL and SPL) found through getSignaturesForAddress and
getTransaction, withdrawals whose blockhash or durable nonce, token decimals and fee
come from the chain, broadcast and confirmed, and balances per address and mint
reconciled, online and from an offline snapshot. On SQLite and PostgreSQL.

No Solana validator installs from the registries here (see
tests/chainio/test_chainio_solana.py), so the node is ``tests.chainio.mock_nodes.
SolanaNode``, answering in the shapes the Solana JSON-RPC reference publishes; the
transactions it is sent are the real ones Tandem built, signed and released."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.books.helpers import make_client
from tests.chainio.mock_nodes import (
    SolanaNode,
    backend_for,
    new_account,
    system_transfer_ix,
    token_transfer_ix,
)
from tests.conftest import FakeClock, World
from tests.helpers.keysets import make_keyset
from tests.helpers.withdrawals import allow, approve, pass_delay

from tandem.api import create_app
from tandem.chainio import ChainConfig
from tandem.client import Client
from tandem.core import reconcile as rcore
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.core.chains.base58 import b58encode
from tandem.core.service_key import ServiceKey
from tandem.errors import RemoteError
from tandem.services import Tandem
from tandem.services import books as books_mod
from tandem.services.books import Books
from tandem.store.db import Database

SPEC = "jsonrpc+https://solana-rpc.example"
DEST = sol.address_from_public_key(sol.public_key_from_seed(hashlib.sha256(b"sol cold vault").digest()))
MINT = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"
SOL = 10**9


def _books(world: World, node: SolanaNode) -> Books:
    books = Books(world.svc.runner, world.svc.withdrawals, ChainConfig.from_mapping({"solana.devnet": SPEC}))
    books._backends[("solana", "devnet")] = backend_for("solana", "devnet", SPEC, node.server)
    world.client.http.app.state.books = books  # type: ignore[attr-defined]
    return books


@pytest.fixture
def solana_world(world: World) -> dict[str, Any]:
    node = SolanaNode()
    books = _books(world, node)
    make_client(world, books, "acme")
    ks = make_keyset(world, curve="ed25519", chains=(("solana", "devnet"),), segregation="client:acme")
    (address,) = [a["address"] for a in ks.addresses if a["chain"] == "solana"]
    allow(world, chain="solana", network="devnet", address=DEST, label="sol cold vault", asset="SOL")
    allow(world, chain="solana", network="devnet", address=DEST, label="usdc cold vault", asset=MINT)
    pass_delay(world)
    node.set_mint(MINT, 6)
    _, funder = new_account()
    sol_in = node.record_parsed(
        payer=funder, instructions=[system_transfer_ix(funder, address, 3 * SOL)], touches=(address,)
    )
    node.balances[address] = 3 * SOL
    ata = stx.associated_token_address(address, MINT)
    _, their_account = new_account()
    tok_in = node.record_parsed(
        payer=funder,
        instructions=[token_transfer_ix(their_account, ata, 7_000_000, mint=MINT, authority=funder)],
        token_balances=[(ata, address, MINT, "7000000")],
        touches=(address,),
    )
    node.add_token_account(address, MINT, "7000000")
    return {"node": node, "books": books, "wallet": ks.id, "address": address, "in": (sol_in, tok_in)}


def _intent(wallet: str, asset: str, amount: int, **solana: Any) -> dict[str, Any]:
    intent = {
        "wallet": wallet,
        "chain": "solana",
        "network": "devnet",
        "asset": asset,
        "amount": str(amount),
        "destination": DEST,
    }
    return {**intent, "solana": solana} if solana else intent


def test_deposits_withdrawal_and_fee_reconcile(world: World, solana_world: dict[str, Any]) -> None:
    node: SolanaNode = solana_world["node"]
    books: Books = solana_world["books"]
    address = solana_world["address"]

    seen = books.scan_deposits()
    assert sorted((m["asset"], m["amount"], m["txid"]) for m in seen) == sorted(
        [("SOL", str(3 * SOL), solana_world["in"][0]), (MINT, "7000000", solana_world["in"][1])]
    )
    assert all(m["client"] == "acme" and m["height"] == node.slot and m["index"] == 0 for m in seen)
    assert books.scan_deposits() == []  # each deposit once, though the slot is scanned again
    report = books.reconcile()["report"]
    assert report["verdict"] == "reconciled", rcore.table(report)
    assert {(r["asset"], r["chain_amount"]) for r in report["rows"]} == {
        ("SOL", str(3 * SOL)),
        (MINT, "7000000"),
    }

    # The manager names wallet, asset, amount and destination; the blockhash is the chain's.
    created = world.client.withdrawals.create(world["alice"], _intent(solana_world["wallet"], "SOL", SOL))
    assert created["intent"]["solana"] == {"recent_blockhash": node.blockhash}
    assert created["intent"]["from"] == address
    approve(world, created["id"])
    released = world.client.withdrawals.release(world["bob"], created["id"])
    wid, txid = created["id"], released["txid"]
    env = world.client.sign(world["bob"], "withdrawal.broadcast", {"withdrawal": wid, "txid": txid})
    sent = world.client.request("POST", f"/v1/books/withdrawals/{wid}/broadcast", json_body={"envelope": env})
    assert sent["status"] == "broadcast"
    assert node.sent == [bytes.fromhex(released["signed_tx"])]

    # The cluster runs it: the payer pays the amount and 5000 lamports.
    node.confirm(txid, slot=node.slot + 3, fee=5000)
    node.transactions[txid]["meta"]["preBalances"] = [3 * SOL, 0, 1]
    node.transactions[txid]["meta"]["postBalances"] = [2 * SOL - 5000, SOL, 1]
    node.balances[address] = 2 * SOL - 5000
    confirm = world.client.sign(world["bob"], "withdrawal.confirm", {"withdrawal": wid})
    tracked = world.client.request(
        "POST", f"/v1/books/withdrawals/{wid}/track", json_body={"envelope": confirm}
    )
    assert (tracked["state"], tracked["height"]) == ("confirmed", node.slot + 3)
    moves = {m.type: m for m in books.register().movements if m.withdrawal == wid}
    assert (moves["withdrawal"].amount, moves["fee"].amount, moves["fee"].asset) == (-SOL, -5000, "SOL")
    logged = world.client.get(world["olga"], "/v1/books/reconciliations")
    # After the scan, on demand, after the confirmation.
    assert [r["verdict"] for r in logged] == ["reconciled", "reconciled", "reconciled"]

    # A transfer nobody recorded, and a token the register never saw, are named.
    node.balances[address] += 777
    stranger_mint = new_account()[1]
    node.add_token_account(address, stranger_mint, "42")
    injected = books.reconcile()
    kinds = sorted((d["kind"], d["asset"], d["difference"]) for d in injected["report"]["discrepancies"])
    assert kinds == sorted([("unexpected_inflow", "SOL", "777"), ("unknown_token", stranger_mint, "42")])

    # Offline: the export and the snapshot give the same verdict; a lying snapshot does not.
    lines, checkpoint = world.client.audit.export(world["olga"])
    reading = rcore.read_export(lines, checkpoint, world.svc.key.sign_public)
    assert rcore.verify_report(injected, reading, injected["snapshot"])["verdict"] == "discrepancies"
    lie = {
        **injected["snapshot"],
        "balances": [b for b in injected["snapshot"]["balances"] if b["asset"] == MINT],
    }
    with pytest.raises(Exception, match="re-run gives"):
        rcore.verify_report(injected, reading, lie)


def test_deposits_are_read_back_to_the_keys_birth_in_budgeted_incremental_scans(
    world: World, solana_world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deposit far older than any slot look-back, behind a history longer than one
    scan's page budget, is recorded by a later scan (not left to the reconciliation as an
    unexpected inflow); the walk stops at the key set's creation; each scan goes on from
    the cursor the log holds."""
    node: SolanaNode = solana_world["node"]
    address = solana_world["address"]
    monkeypatch.setattr(books_mod, "SOLANA_PAGE", 3)
    monkeypatch.setattr(books_mod, "SOLANA_SIGNATURE_PAGES", 2)
    _, funder = new_account()
    _, elsewhere = new_account()
    listed = node.signatures_of[address]

    def older(signature: str, block_time: int) -> None:
        entry = next(e for e in listed if e["signature"] == signature)
        listed.remove(entry)
        listed.append({**entry, "blockTime": block_time})  # the oldest so far
        node.parsed_transactions[signature]["blockTime"] = block_time

    noise = [
        node.record_parsed(payer=address, instructions=[system_transfer_ix(address, elsewhere, 1)],
                           touches=(address,), slot=node.slot - 20_000)
        for _ in range(6)
    ]  # fmt: skip
    for n in noise:
        older(n, world.clock() - 600)
    old_in = node.record_parsed(
        payer=funder,
        instructions=[system_transfer_ix(funder, address, 4 * SOL)],
        touches=(address,),
        slot=node.slot - 50_000,  # far beyond 10,000 slots
    )
    older(old_in, world.clock() - 3600)
    before_birth = node.record_parsed(
        payer=funder, instructions=[system_transfer_ix(funder, address, SOL)], touches=(address,)
    )
    older(before_birth, world.clock() - 10 * 86_400)
    node.balances[address] = 7 * SOL

    def read_txs() -> set[str]:
        return {p[0] for m, p in node.server.calls if m == "getTransaction"}

    first = solana_world["books"].scan_deposits()
    assert sorted(m["txid"] for m in first) == sorted(solana_world["in"])  # two pages: the budget
    assert solana_world["books"].reconcile()["report"]["verdict"] == "discrepancies"  # 4 SOL not yet seen

    again = _books(world, node)  # a new process: the cursor comes from the log
    second = again.scan_deposits()
    assert [(m["txid"], m["amount"], m["height"]) for m in second] == [
        (old_in, str(4 * SOL), node.slot - 50_000)
    ]
    third = _books(world, node).scan_deposits()
    assert third == []
    assert before_birth not in read_txs()  # older than the key set: never read
    cursors = again.logged(books_mod.SOLANA_CURSOR_KIND)
    assert cursors[-1]["gaps"] == []
    assert cursors[-1]["newest"] == solana_world["in"][1]
    assert _books(world, node).reconcile()["report"]["verdict"] == "reconciled"

    # Later scans ask only for what is newer than the cursor.
    node.server.calls.clear()
    late = node.record_parsed(
        payer=funder, instructions=[system_transfer_ix(funder, address, SOL)], touches=(address,)
    )
    node.balances[address] += SOL
    assert [m["txid"] for m in _books(world, node).scan_deposits()] == [late]
    pages = [p[1] for m, p in node.server.calls if m == "getSignaturesForAddress"]
    assert pages == [{"limit": 3, "commitment": "confirmed", "until": solana_world["in"][1]}]
    assert read_txs() == {late}


def test_an_offline_snapshot_reconciles_solana(world: World, solana_world: dict[str, Any]) -> None:
    books: Books = solana_world["books"]
    books.scan_deposits()
    address = solana_world["address"]
    snapshot = {
        "version": 1,
        "heights": {"solana/devnet": 341_200_000},
        "balances": [
            {
                "chain": "solana",
                "network": "devnet",
                "address": address,
                "asset": "SOL",
                "amount": str(3 * SOL),
            },
            {"chain": "solana", "network": "devnet", "address": address, "asset": MINT, "amount": "6999999"},
        ],
        "pending": [],
    }
    report = books.reconcile(snapshot)["report"]
    assert [(d["kind"], d["asset"], d["difference"]) for d in report["discrepancies"]] == [
        ("outflow_without_withdrawal", MINT, "-1")
    ]


def test_token_decimals_account_creation_and_durable_nonce_from_the_chain(
    world: World, solana_world: dict[str, Any]
) -> None:
    node: SolanaNode = solana_world["node"]
    wallet, address = solana_world["wallet"], solana_world["address"]

    # The destination has no token account yet: the transfer creates it (its rent is in the fee).
    created = world.client.withdrawals.create(world["alice"], _intent(wallet, MINT, 2_500_000))
    assert created["intent"]["solana"] == {
        "recent_blockhash": node.blockhash,
        "decimals": 6,
        "create_destination_account": True,
    }
    assert int(created["fee"]) == 5000 + stx.TOKEN_ACCOUNT_RENT
    node.set_account(stx.associated_token_address(DEST, MINT), stx.TOKEN_PROGRAM, bytes(165))
    suggested = world.client.get(
        world["alice"], "/v1/books/suggest", wallet=wallet, chain="solana", network="devnet",
        asset=MINT, destination=DEST,
    )  # fmt: skip
    assert suggested["solana"]["create_destination_account"] is False
    assert suggested["fee"] == "5000"
    assert suggested["fee_worst_case"] == "5000"

    # A durable nonce account named: its stored nonce, read from the account, is the blockhash.
    _, nonce_account = new_account()
    stored = b58encode(hashlib.sha256(b"stored nonce").digest())
    node.set_nonce_account(nonce_account, address, stored)
    durable = world.client.withdrawals.create(
        world["alice"], _intent(wallet, "SOL", 1000, nonce_account=nonce_account)
    )
    assert durable["intent"]["solana"] == {"recent_blockhash": stored, "nonce_account": nonce_account}
    assert durable["decoded"]["nonce_account"] == nonce_account

    # A nonce account another key advances would make a transaction that cannot land.
    node.set_nonce_account(nonce_account, DEST, stored)
    with pytest.raises(RemoteError, match="not by the wallet"):
        world.client.withdrawals.create(
            world["alice"], _intent(wallet, "SOL", 1000, nonce_account=nonce_account)
        )

    # A cluster charging more than Tandem's fee review counts is refused, not believed.
    node.lamports_per_signature = 10_000
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.create(world["alice"], _intent(wallet, "SOL", 1000))
    assert err.value.remote_code == "chain_bad_response"

    # By hand stays possible: a blockhash given is used as written, no node asked.
    calls = len(node.server.calls)
    by_hand = world.client.withdrawals.create(
        world["alice"], _intent(wallet, "SOL", 1000, recent_blockhash=stored)
    )
    assert by_hand["intent"]["solana"] == {"recent_blockhash": stored}
    assert len(node.server.calls) == calls


def _follow(world: World, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while job["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = world.client.get(world["olga"], f"/v1/books/reconciliations/jobs/{job['job']}")
    return job


def test_reconciliation_over_the_api_runs_as_a_job_with_progress(
    world: World, solana_world: dict[str, Any]
) -> None:
    books: Books = solana_world["books"]
    books.scan_deposits()
    env = world.client.sign(world["bob"], "reconciliation.run", {})
    started = world.client.request(
        "POST", "/v1/books/reconciliations", json_body={"envelope": env, "background": True}
    )
    assert started["state"] == "running"
    assert started["job"].startswith("rj_")
    job = _follow(world, started)
    assert (job["state"], job["done"], job["total"]) == ("done", 1, 1)
    result = job["result"]
    assert result["report"]["verdict"] == "reconciled"
    logged = world.client.get(world["olga"], "/v1/books/reconciliations")
    assert logged[-1]["report_sha256"] == result["report_sha256"]

    # A chain that fails is a failed job with the error's code, not a vanished one.
    solana_world["node"].genesis = b58encode(hashlib.sha256(b"another cluster").digest())
    books._backends[("solana", "devnet")] = backend_for("solana", "devnet", SPEC, solana_world["node"].server)
    env = world.client.sign(world["bob"], "reconciliation.run", {})
    failed = _follow(
        world,
        world.client.request(
            "POST", "/v1/books/reconciliations", json_body={"envelope": env, "background": True}
        ),
    )
    assert (failed["state"], failed["error"]["code"]) == ("failed", "chain_mismatch")
    with pytest.raises(RemoteError) as err:
        world.client.get(world["olga"], "/v1/books/reconciliations/jobs/rj_0000000000000000")
    assert err.value.remote_code == "not_found"


def test_a_reconciliation_job_outlives_a_restart(
    world: World, solana_world: dict[str, Any], db: Database, service_key: ServiceKey, clock: FakeClock
) -> None:
    """A job is a database row: a second app on the same database (the server after a
    restart) shows a job the first one left running with its progress, then, once that
    process has been silent past the limit, as interrupted with a clear message; a new
    job can then be started and finishes there."""
    node: SolanaNode = solana_world["node"]
    solana_world["books"].scan_deposits()
    plain = node.server.methods["getBalance"]
    entered, gate = threading.Event(), threading.Event()

    def held(params: Any) -> Any:
        entered.set()
        assert gate.wait(60)
        return plain(params)

    node.server.methods["getBalance"] = held
    env = world.client.sign(world["bob"], "reconciliation.run", {})
    started = world.client.request(
        "POST", "/v1/books/reconciliations", json_body={"envelope": env, "background": True}
    )
    jid = started["job"]
    assert entered.wait(30)
    try:
        svc2 = Tandem(Database(db.url, schema=db.schema), service_key, clock=clock)
        svc2.audit.startup_check()
        with TestClient(create_app(service=svc2), raise_server_exceptions=False) as tc:
            after = Client(http=tc, clock=clock)
            books2 = Books(svc2.runner, svc2.withdrawals, ChainConfig.from_mapping({"solana.devnet": SPEC}))
            books2._backends[("solana", "devnet")] = backend_for("solana", "devnet", SPEC, node.server)
            tc.app.state.books = books2  # type: ignore[attr-defined]

            seen = after.get(world["olga"], f"/v1/books/reconciliations/jobs/{jid}")
            assert (seen["state"], seen["done"], seen["total"]) == ("running", 0, 1)  # its progress
            busy = after.sign(world["bob"], "reconciliation.run", {})
            with pytest.raises(RemoteError) as err:
                after.request(
                    "POST", "/v1/books/reconciliations", json_body={"envelope": busy, "background": True}
                )
            assert err.value.remote_code == "conflict"

            clock.advance(books_mod.JOB_STALE_SECONDS + 1)  # its process never wrote again
            seen = after.get(world["olga"], f"/v1/books/reconciliations/jobs/{jid}")
            assert (seen["state"], seen["error"]["code"]) == ("interrupted", "interrupted")
            assert "start it again" in seen["error"]["message"]
            assert "result" not in seen
            listed = after.get(world["olga"], "/v1/books/reconciliations/jobs")
            assert [(j["job"], j["state"]) for j in listed] == [(jid, "interrupted")]
            with pytest.raises(RemoteError, match="start it again") as err:
                after.books.follow_job(world["olga"], seen, progress=lambda done, total: None, poll_seconds=0)
            assert err.value.remote_code == "interrupted"

            node.server.methods["getBalance"] = plain
            report = after.books.reconcile_with_progress(
                world["bob"], progress=lambda done, total: None, poll_seconds=0.05
            )
            assert report["report"]["verdict"] == "reconciled"
            listed = after.get(world["olga"], "/v1/books/reconciliations/jobs")
            assert [j["state"] for j in listed] == ["done", "interrupted"]
            fresh = after.get(world["olga"], f"/v1/books/reconciliations/jobs/{listed[0]['job']}")
            assert fresh["result"]["report_sha256"] == report["report_sha256"]
            svc2.db.dispose()
    finally:
        gate.set()
    # The first process was alive after all: its job ends with its own report.
    deadline = time.monotonic() + 30
    while (last := solana_world["books"].job(jid))["state"] != "done":
        assert time.monotonic() < deadline, last
        time.sleep(0.05)


def test_a_deposit_waiting_for_its_client_is_not_scanned_past(
    world: World, solana_world: dict[str, Any]
) -> None:
    """A deposit into a client's wallet before the client is approved is not recorded,
    and the cursor does not move past it: it is recorded once the client exists."""
    node: SolanaNode = solana_world["node"]
    books: Books = solana_world["books"]
    books.scan_deposits()
    ks = make_keyset(world, curve="ed25519", chains=(("solana", "devnet"),), segregation="client:beta")
    (early,) = [a["address"] for a in ks.addresses if a["chain"] == "solana"]
    _, funder = new_account()
    paid = node.record_parsed(
        payer=funder, instructions=[system_transfer_ix(funder, early, SOL)], touches=(early,)
    )
    node.signatures_of[early][0]["blockTime"] = world.clock()  # paid now, after the key was made
    assert books.scan_deposits() == []
    assert books.scan_deposits() == []
    make_client(world, books, "beta")
    assert [(m["txid"], m["client"]) for m in books.scan_deposits()] == [(paid, "beta")]
