"""Deposits, a withdrawal and its fee flowing through a real anvil chain into the
register; a transfer Tandem did not make named by the next reconciliation; the
report re-run offline from the exported log and a snapshot; a forged register entry
refused by the offline check. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
from tests.books.helpers import books_for, make_client
from tests.chainio.conftest import Anvil
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.keysets import make_keyset
from tests.helpers.withdrawals import ETH_DEST, allow, approve, approve_proposal, pass_delay

from tandem.core import reconcile as rcore
from tandem.core.chains import ethereum as eth
from tandem.core.register import Register
from tandem.errors import VerificationError
from tandem.services.books import Books
from tandem.store import audit_log

ONE_ETH = 10**18
TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")


def send_token(anvil: Anvil, token: str, to: str, amount: int) -> dict[str, Any]:
    data = TRANSFER_SELECTOR + eth.parse_address(to).rjust(32, b"\x00") + amount.to_bytes(32, "big")
    return anvil.send_from_dev(token, data)


def mined(books: Books, txid: str) -> None:
    """Wait for the node to mine ``txid``: anvil mines at once, but on a loaded machine
    the receipt can lag the broadcast's answer."""
    backend = books.backend("ethereum", "sepolia")
    deadline = time.monotonic() + 10
    while backend.transaction_status(txid).state == "pending":  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"{txid} not mined"
        time.sleep(0.02)


def withdraw_eth(world: World, books: Books, wallet: str, amount: int) -> dict[str, Any]:
    """Over the API: create naming only wallet, asset, amount and destination (nonce and
    fees come from the chain), approve, release, broadcast, track to confirmation."""
    intent = {
        "wallet": wallet,
        "chain": "ethereum",
        "network": "sepolia",
        "asset": "ETH",
        "amount": str(amount),
        "destination": ETH_DEST,
    }
    created = world.client.withdrawals.create(world["alice"], intent)
    chain_nonce = int(books.backend("ethereum", "sepolia").nonce(created["intent"]["from"]))  # type: ignore[attr-defined]
    assert created["intent"]["ethereum"]["nonce"] == chain_nonce
    approve(world, created["id"])
    released = world.client.withdrawals.release(world["bob"], created["id"])
    wid = created["id"]
    env = world.client.sign(
        world["bob"], "withdrawal.broadcast", {"withdrawal": wid, "txid": released["txid"]}
    )
    broadcast = world.client.request(
        "POST", f"/v1/books/withdrawals/{wid}/broadcast", json_body={"envelope": env}
    )
    assert broadcast["status"] == "broadcast"
    mined(books, released["txid"])
    confirm = world.client.sign(world["bob"], "withdrawal.confirm", {"withdrawal": wid})
    tracked = world.client.request(
        "POST", f"/v1/books/withdrawals/{wid}/track", json_body={"envelope": confirm}
    )
    assert tracked["state"] == "confirmed", tracked
    assert tracked["height"] is not None
    return {"id": wid, "txid": released["txid"], "tracked": tracked}


@pytest.fixture
def funded(world: World, anvil: Anvil, token: str) -> dict[str, Any]:
    books = books_for(world, anvil.url)
    make_client(world, books, "acme")
    ks = make_keyset(world, chains=(("ethereum", "sepolia"),), segregation="client:acme")
    address = ks.addresses[0]["address"]
    allow(world, chain="ethereum", network="sepolia", address=ETH_DEST, label="acme out", asset="ETH")
    allow(world, chain="ethereum", network="sepolia", address=ETH_DEST, label="acme token out", asset=token)
    pass_delay(world)
    eth_tx = anvil.send_from_dev(address, value=2 * ONE_ETH)
    tok_tx = send_token(anvil, token, address, 5_000_000)
    return {
        "books": books,
        "wallet": ks.id,
        "address": address,
        "token": token,
        "eth_tx": eth_tx["transactionHash"],
        "tok_tx": tok_tx["transactionHash"],
    }


def test_deposits_withdrawal_fee_reconcile_and_offline_check(
    world: World, anvil: Anvil, funded: dict[str, Any]
) -> None:
    books: Books = funded["books"]
    address, token = funded["address"], eth.to_checksum_address(funded["token"])

    seen = books.scan_deposits()
    by_asset = {m["asset"]: m for m in seen}
    assert set(by_asset) == {"ETH", token}
    assert by_asset["ETH"]["amount"] == str(2 * ONE_ETH)
    assert by_asset["ETH"]["txid"] == funded["eth_tx"]
    assert by_asset[token]["txid"] == funded["tok_tx"]
    assert by_asset[token]["index"] is not None
    assert all(m["client"] == "acme" and m["height"] is not None for m in seen)
    assert books.scan_deposits() == []  # each deposit is recorded once

    first = books.reconcile()
    assert first["report"]["verdict"] == "reconciled", rcore.table(first["report"])

    done = withdraw_eth(world, books, funded["wallet"], 3 * 10**17)
    reg = books.register()
    moves = [m for m in reg.movements if m.withdrawal == done["id"]]
    assert {m.type for m in moves} == {"withdrawal", "fee"}
    fee = next(m for m in moves if m.type == "fee")
    assert fee.amount < 0
    assert all(m.height == done["tracked"]["height"] for m in moves)
    balance = int(anvil.rpc("eth_getBalance", [address, "latest"]), 16)
    assert reg.address_balances()[("ethereum", "sepolia", address, "ETH")] == balance
    positions = books.positions(client="acme")["items"]
    assert {p["asset"]: p["balance"] for p in positions}["ETH"] == str(balance)

    # The confirmation reconciled on its own; its hash is in the log. Auditors read it all.
    olga = world["olga"]
    logged = world.client.get(olga, "/v1/books/reconciliations")
    # After the scan, on demand, after the confirmation.
    assert [r["verdict"] for r in logged] == ["reconciled", "reconciled", "reconciled"]
    assert world.client.get(olga, "/v1/books/positions", client="acme") == positions
    assert [c["id"] for c in world.client.get(olga, "/v1/books/clients")] == ["acme"]
    kinds_read = {m["type"] for m in world.client.get(olga, "/v1/books/movements")}
    assert kinds_read == {"deposit", "withdrawal", "fee"}
    after = books.reconcile()
    assert after["report"]["verdict"] == "reconciled", rcore.table(after["report"])

    # A transfer Tandem did not make: named by the next reconciliation.
    anvil.send_from_dev(address, value=12345)
    injected = books.reconcile()
    kinds = [(d["kind"], d["asset"], d["difference"]) for d in injected["report"]["discrepancies"]]
    assert kinds == [("unexpected_inflow", "ETH", "12345")]
    assert "unexpected_inflow" in rcore.table(injected["report"])

    # Offline: the export and the snapshot give the same verdict.
    lines, checkpoint = world.client.audit.export(world["olga"])
    reading = rcore.read_export(lines, checkpoint, world.svc.key.sign_public)
    again = rcore.verify_report(injected, reading, injected["snapshot"])
    assert again["verdict"] == "discrepancies"
    # Another snapshot (the chain lying about the balance) does not give the signed verdict.
    lie = {
        **injected["snapshot"],
        "balances": [
            {**b, "amount": str(int(b["amount"]) - 12345)} if b["asset"] == "ETH" else b
            for b in injected["snapshot"]["balances"]
        ],
    }
    with pytest.raises(VerificationError, match="re-run gives reconciled"):
        rcore.verify_report(injected, reading, lie)


def test_a_token_nobody_recorded_is_named(
    world: World, anvil: Anvil, funded: dict[str, Any], token_bytecode: bytes
) -> None:
    books: Books = funded["books"]
    books.scan_deposits()
    assert books.reconcile()["report"]["verdict"] == "reconciled"
    receipt = anvil.send_from_dev(None, token_bytecode + (10**9).to_bytes(32, "big"))
    stranger = eth.to_checksum_address(receipt["contractAddress"])
    send_token(anvil, stranger, funded["address"], 42)
    found = books.reconcile()["report"]["discrepancies"]
    assert [(d["kind"], d["asset"], d["chain_amount"]) for d in found] == [("unknown_token", stranger, "42")]

    # The search for unknown tokens keeps a cursor: each run asks only for the blocks
    # since the last one (a new address from block 0), and remembers what it found.
    searches = books.logged("register.tokens_scanned")
    assert [(e["from_block"], e["addresses"]) for e in searches[:1]] == [(0, [funded["address"]])]
    for before, after in itertools.pairwise(searches):
        assert (after["from_block"], after["addresses"]) == (before["to_block"] + 1, [])
    assert [e["tokens"] for e in searches][-1] == [stranger]
    anvil.mine(1)
    again = books.reconcile()["report"]["discrepancies"]
    assert [(d["kind"], d["asset"]) for d in again] == [("unknown_token", stranger)]
    last = books.logged("register.tokens_scanned")[-1]
    assert last["from_block"] == searches[-1]["to_block"] + 1
    assert last["tokens"] == []  # found before, still named


def test_fees_charged_to_the_fund_when_the_policy_says_so(
    world: World, anvil: Anvil, funded: dict[str, Any]
) -> None:
    from tandem.core.policy import default_policy

    books: Books = funded["books"]
    books.scan_deposits()
    current = world.client.policy.show(world["olga"])["policy"]
    proposal = world.client.policy.propose(
        world["alice"], {**current, "version": 2, "fees_charged_to": "fund"}
    )
    approve_proposal(world, proposal["id"])
    pass_delay(world)
    assert default_policy().fees_charged_to == "wallet_owner"
    done = withdraw_eth(world, books, funded["wallet"], 10**17)
    by_type = {m.type: m for m in books.register().movements if m.withdrawal == done["id"]}
    assert by_type["withdrawal"].client == "acme"
    assert by_type["fee"].client == "fund"
    assert books.reconcile()["report"]["verdict"] == "reconciled"


def test_forged_register_entry_refused_offline(world: World, anvil: Anvil, funded: dict[str, Any]) -> None:
    books: Books = funded["books"]
    books.scan_deposits()
    deposit = next(m for m in books.register().movements if m.asset == "ETH")
    # The service key alone writes a second credit for the same transaction: the log's
    # chain and checkpoints are intact, but no rule justifies the entry.
    with world.svc.db.write() as session:
        audit_log.append(
            session,
            world.svc.key,
            deployment=world.deployment,
            kind="register.deposit",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            time=world.clock(),
            data={
                "movement": {**deposit.to_json(), "id": "mv_forged", "entry": None},
                "segregation": "client:acme",
            },
        )
    lines, checkpoint = world.client.audit.export(world["olga"])
    reading = rcore.read_export(lines, checkpoint, world.svc.key.sign_public)
    with pytest.raises(VerificationError, match="recorded twice"):
        Register.replay(reading.register_entries, roles=reading.roles)


def test_withdrawal_movement_must_match_the_release(
    world: World, anvil: Anvil, funded: dict[str, Any]
) -> None:
    books: Books = funded["books"]
    books.scan_deposits()
    done = withdraw_eth(world, books, funded["wallet"], 10**17)
    lines, checkpoint = world.client.audit.export(world["olga"])
    reading = rcore.read_export(lines, checkpoint, world.svc.key.sign_public)
    Register.replay(reading.register_entries, roles=reading.roles)  # genuine: fine
    forged = []
    for e in reading.register_entries:
        m = e["data"].get("movement") if isinstance(e["data"], dict) else None
        if e["kind"] == "register.withdrawal" and isinstance(m, dict) and m["withdrawal"] == done["id"]:
            forged.append({**e, "data": {**e["data"], "movement": {**m, "amount": "-1"}}})
        else:
            forged.append(e)
    with pytest.raises(VerificationError, match="moved 100000000000000000 ETH"):
        Register.replay(forged, roles=reading.roles)


def test_outflows_named_by_kind(world: World, anvil: Anvil, funded: dict[str, Any]) -> None:
    books: Books = funded["books"]
    address = funded["address"]
    books.scan_deposits()
    # Released and broadcast, not yet tracked: the chain holds less by what it takes.
    intent = {
        "wallet": funded["wallet"],
        "chain": "ethereum",
        "network": "sepolia",
        "asset": "ETH",
        "amount": str(10**17),
        "destination": ETH_DEST,
    }
    created = world.client.withdrawals.create(world["alice"], intent)
    approve(world, created["id"])
    released = world.client.withdrawals.release(world["bob"], created["id"])
    books.broadcast(
        world.client.sign(
            world["bob"], "withdrawal.broadcast", {"withdrawal": created["id"], "txid": released["txid"]}
        )
    )
    pending = books.reconcile()["report"]["discrepancies"]
    assert [(d["kind"], d["asset"]) for d in pending] == [("withdrawal_not_confirmed", "ETH")]
    mined(books, released["txid"])
    books.track(world.client.sign(world["bob"], "withdrawal.confirm", {"withdrawal": created["id"]}))
    assert books.reconcile()["report"]["verdict"] == "reconciled"
    # The key used outside Tandem (here: the node impersonating the address).
    anvil.rpc("anvil_impersonateAccount", [address])
    tx = anvil.rpc("eth_sendTransaction", [{"from": address, "to": ETH_DEST, "value": hex(5 * 10**16)}])
    assert anvil.mined(tx)["status"] == "0x1"
    anvil.rpc("anvil_stopImpersonatingAccount", [address])
    found = books.reconcile()["report"]["discrepancies"]
    assert [(d["kind"], d["asset"]) for d in found] == [("outflow_without_withdrawal", "ETH")]


# A forwarder, assembled by hand: CALL(gas, calldata[0:32] as the address, callvalue),
# revert if that call fails. Init code copies the 24 runtime bytes and returns them.
FORWARDER = bytes.fromhex(
    "601880600b6000396000f3"  # PUSH1 24 DUP1 PUSH1 11 PUSH1 0 CODECOPY PUSH1 0 RETURN
    "6000600060006000"  # retSize retOffset argsSize argsOffset: all 0
    "34600035"  # CALLVALUE, PUSH1 0 CALLDATALOAD (the recipient)
    "5af1"  # GAS CALL
    "15601357"  # ISZERO PUSH1 19 JUMPI
    "00"  # STOP
    "5b600080fd"  # JUMPDEST PUSH1 0 DUP1 REVERT
)


def test_value_moved_by_a_contract_call_is_a_deposit(
    world: World, anvil: Anvil, funded: dict[str, Any]
) -> None:
    """An internal transfer (a contract paying us inside someone's transaction: no
    transaction to our address, no log) is found in the node's traces (anvil answers
    trace_block), recorded with the trace's index as evidence, and reconciles."""
    books: Books = funded["books"]
    address = funded["address"]
    books.scan_deposits()
    forwarder = anvil.send_from_dev(None, FORWARDER)["contractAddress"]
    before = int(anvil.rpc("eth_getBalance", [address, "latest"]), 16)
    paid = anvil.send_from_dev(forwarder, eth.parse_address(address).rjust(32, b"\x00"), value=7 * 10**15)
    assert int(anvil.rpc("eth_getBalance", [address, "latest"]), 16) == before + 7 * 10**15
    seen = books.scan_deposits()
    assert [(m["asset"], m["amount"], m["txid"], m["index"]) for m in seen] == [
        ("ETH", str(7 * 10**15), paid["transactionHash"], 1)
    ]
    assert books.scan_deposits() == []
    report = books.reconcile()["report"]
    assert report["verdict"] == "reconciled", rcore.table(report)


def test_a_dropped_broadcast_is_recorded_released_again_and_sent_again(
    world: World, anvil: Anvil, funded: dict[str, Any]
) -> None:
    """The node forgets a broadcast transaction (evicted from its pool): tracking records
    it as dropped, the withdrawal is released again, and the same bytes go out again."""
    books: Books = funded["books"]
    books.scan_deposits()
    intent = {
        "wallet": funded["wallet"],
        "chain": "ethereum",
        "network": "sepolia",
        "asset": "ETH",
        "amount": str(10**17),
        "destination": ETH_DEST,
    }
    created = world.client.withdrawals.create(world["alice"], intent)
    wid = created["id"]
    approve(world, wid)
    released = world.client.withdrawals.release(world["bob"], wid)
    txid = released["txid"]

    def broadcast() -> dict[str, Any]:
        env = world.client.sign(world["bob"], "withdrawal.broadcast", {"withdrawal": wid, "txid": txid})
        path = f"/v1/books/withdrawals/{wid}/broadcast"
        return dict(world.client.request("POST", path, json_body={"envelope": env}))

    def track() -> dict[str, Any]:
        env = world.client.sign(world["bob"], "withdrawal.confirm", {"withdrawal": wid})
        path = f"/v1/books/withdrawals/{wid}/track"
        return dict(world.client.request("POST", path, json_body={"envelope": env}))

    anvil.rpc("evm_setAutomine", [False])
    try:
        assert broadcast()["status"] == "broadcast"
        assert track()["state"] == "pending"
        anvil.rpc("anvil_dropTransaction", [txid])
        dropped = track()
    finally:
        anvil.rpc("evm_setAutomine", [True])
    assert dropped["state"] == "dropped"
    assert world.client.get(world["olga"], f"/v1/withdrawals/{wid}")["status"] == "released"
    logged = [e for e in audit_entries(world) if e["kind"] == "withdrawal.dropped"]
    assert [(e["data"]["withdrawal"], e["data"]["txid"], e["data"]["status"]) for e in logged] == [
        (wid, txid, "released")
    ]
    # Tracking a release that is not broadcast records nothing more.
    assert track()["state"] == "unknown"
    assert len([e for e in audit_entries(world) if e["kind"] == "withdrawal.dropped"]) == 1

    assert broadcast()["status"] == "broadcast"
    mined(books, txid)
    assert track()["state"] == "confirmed"
    assert world.client.get(world["olga"], f"/v1/withdrawals/{wid}")["status"] == "confirmed"


def test_a_deposit_waiting_for_its_client_is_read_again_once_the_client_exists(
    world: World, anvil: Anvil, token: str
) -> None:
    """A client's wallet paid before the client is registered: the scan does not move
    past that block, so the deposit (ether and token alike) is recorded once the client
    exists, however many blocks came since, and only once."""
    books = books_for(world, anvil.url)
    allow(world, chain="ethereum", network="sepolia", address=ETH_DEST, label="late token out", asset=token)
    pass_delay(world)
    ks = make_keyset(world, chains=(("ethereum", "sepolia"),), segregation="client:late")
    address = ks.addresses[0]["address"]
    eth_tx = anvil.send_from_dev(address, value=ONE_ETH)["transactionHash"]
    tok_tx = send_token(anvil, token, address, 777)["transactionHash"]
    assert books.scan_deposits() == []
    anvil.mine(5)
    assert books.scan_deposits() == []  # still waiting: nothing recorded, nothing skipped
    make_client(world, books, "late")
    anvil.mine(3)
    seen = books.scan_deposits()
    assert sorted((m["txid"], m["client"]) for m in seen) == sorted([(eth_tx, "late"), (tok_tx, "late")])
    assert books.scan_deposits() == []
    assert books.reconcile()["report"]["verdict"] == "reconciled"
