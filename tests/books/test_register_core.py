"""The pure register and reconciliation: every rule of Register.replay refuses what it
should, and every discrepancy kind is named. Entries are built as the service writes
them; roles are those of the members who signed them."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.core import reconcile as rcore
from tandem.core.register import UNALLOCATED, Register, proposal_digest
from tandem.errors import VerificationError

ROLES = {"m1": "manager", "m2": "manager", "c1": "custodian"}
ADDR = "0x00000000000000000000000000000000000000aa"
TOKEN = "0x00000000000000000000000000000000000000bb"
TX = "0x" + "11" * 32


def entry(
    index: int,
    kind: str,
    data: dict[str, Any],
    *,
    actor: str | None = None,
    type_: str = "",
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    envelope = (
        {"action": {"type": type_, "actor": actor, "body": body or {}}, "signature": ""} if actor else None
    )
    return {
        "index": index,
        "kind": kind,
        "outcome": "ok",
        "time": 1000 + index,
        "data": data,
        "envelope": envelope,
    }


def client_entries(
    cid: str = "acme", seg: str = "segregated", *, approver: str = "c1"
) -> list[dict[str, Any]]:
    content = {"id": cid, "name": cid.title(), "segregation": seg}
    digest = proposal_digest("client.create", f"p-{cid}", content, "m1")
    return [
        entry(
            0,
            "client.proposed",
            {"proposal": f"p-{cid}", "content": content, "digest": digest},
            actor="m1",
            type_="client.propose",
            body=content,
        ),
        entry(
            1,
            "client.created",
            {"proposal": f"p-{cid}", "client": content},
            actor=approver,
            type_="client.approve",
            body={"proposal": f"p-{cid}", "digest": digest},
        ),
    ]


def movement(
    mid: str,
    type_: str,
    amount: str,
    *,
    asset: str = "ETH",
    client: str = "acme",
    txid: str = TX,
    index: int | None = None,
    withdrawal: str | None = None,
) -> dict[str, Any]:
    return {
        "id": mid,
        "type": type_,
        "client": client,
        "chain": "ethereum",
        "network": "sepolia",
        "asset": asset,
        "wallet": "ks1",
        "address": ADDR,
        "amount": amount,
        "time": 2000,
        "txid": txid,
        "index": index,
        "withdrawal": withdrawal,
        "height": 5,
    }


def deposit(i: int, amount: str, **kw: Any) -> dict[str, Any]:
    seg = kw.pop("segregation", "client:acme")
    return entry(
        i, "register.deposit", {"movement": movement(f"mv{i}", "deposit", amount, **kw), "segregation": seg}
    )


def withdrawal(i: int, wid: str = "wd1", amount: int = 100, fee: int = 10) -> list[dict[str, Any]]:
    created = {
        "withdrawal": wid,
        "wallet": "ks1",
        "chain": "ethereum",
        "network": "sepolia",
        "asset": "ETH",
        "amount": str(amount),
        "fee": str(fee),
        "fee_asset": "ETH",
    }
    return [
        entry(
            i,
            "withdrawal.created",
            created,
            actor="m1",
            type_="withdrawal.create",
            body={"intent": {"from": ADDR}},
        ),
        entry(i + 1, "withdrawal.released", {"withdrawal": wid, "txid": "22" * 32}),
    ]


def moved(i: int, wid: str = "wd1", amount: int = 100, fee: int = 7) -> list[dict[str, Any]]:
    return [
        entry(
            i,
            "register.withdrawal",
            {"movement": movement(f"w{i}", "withdrawal", f"-{amount}", txid="22" * 32, withdrawal=wid)},
        ),
        entry(
            i + 1,
            "register.fee",
            {"movement": movement(f"f{i}", "fee", f"-{fee}", txid="22" * 32, withdrawal=wid)},
        ),
    ]


def snapshot(
    amount: int, *, pending: list[str] | None = None, extra: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    balances = [
        {"chain": "ethereum", "network": "sepolia", "address": ADDR, "asset": "ETH", "amount": str(amount)}
    ]
    return {
        "version": 1,
        "heights": {"ethereum/sepolia": 9},
        "balances": balances + (extra or []),
        "pending": pending or [],
    }


def kinds(reg: Register, snap: dict[str, Any]) -> list[str]:
    return [d["kind"] for d in rcore.reconcile(reg, snap, register_size=99)["discrepancies"]]


def test_positions_from_deposits_withdrawals_and_fees() -> None:
    reg = Register.replay([*client_entries(), deposit(2, "1000"), *withdrawal(3), *moved(5)], roles=ROLES)
    assert reg.address_balances() == {("ethereum", "sepolia", ADDR, "ETH"): 893}
    assert kinds(reg, snapshot(893)) == []


def test_every_discrepancy_kind_is_named() -> None:
    base = [*client_entries(), deposit(2, "1000")]
    reg = Register.replay(base, roles=ROLES)
    assert kinds(reg, snapshot(1005)) == ["unexpected_inflow"]
    assert kinds(reg, snapshot(990)) == ["outflow_without_withdrawal"]
    pending = Register.replay([*base, *withdrawal(3)], roles=ROLES)
    assert kinds(pending, snapshot(893, pending=["wd1"])) == ["withdrawal_not_confirmed"]
    assert kinds(pending, snapshot(800, pending=["wd1"])) == ["amount_mismatch"]
    token = {"chain": "ethereum", "network": "sepolia", "address": ADDR, "asset": TOKEN, "amount": "5"}
    assert kinds(reg, snapshot(1000, extra=[token])) == ["unknown_token"]


def test_report_is_deterministic_and_table_reads() -> None:
    reg = Register.replay([*client_entries(), deposit(2, "1000")], roles=ROLES)
    a = rcore.reconcile(reg, snapshot(1005), register_size=3)
    b = rcore.reconcile(reg, snapshot(1005), register_size=3)
    assert rcore.report_hash(a) == rcore.report_hash(b)
    assert "unexpected_inflow" in rcore.table(a)


def test_a_network_no_chain_was_read_for_is_not_compared_with_zero() -> None:
    """A server without a connection for a network reads nothing there: the register's
    balance on it is listed as not compared, never reported as an outflow."""
    reg = Register.replay([*client_entries(), deposit(2, "1000")], roles=ROLES)
    unread = {**snapshot(0), "heights": {}, "balances": []}
    report = rcore.reconcile(reg, unread, register_size=3)
    assert report["discrepancies"] == []
    assert report["rows"] == []
    assert report["verdict"] == "incomplete"  # never "reconciled" while a balance went unread
    assert report["not_read"] == [
        {"chain": "ethereum", "network": "sepolia", "address": ADDR, "asset": "ETH", "register": "1000"}
    ]
    assert "not compared: 1 register balance on ethereum/sepolia" in rcore.table(report)
    # Read, the same balance is compared, and a read report carries no such list.
    read = rcore.reconcile(reg, snapshot(990), register_size=3)
    assert [d["kind"] for d in read["discrepancies"]] == ["outflow_without_withdrawal"]
    assert "not_read" not in read


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        (lambda: client_entries(approver="m2"), "not a custodian"),
        (lambda: client_entries(approver="m1"), "cannot approve its own"),
        (lambda: [*client_entries(), deposit(2, "5"), deposit(3, "5")], "recorded twice"),
        (lambda: [deposit(2, "5")], "credits acme"),
        (lambda: [*client_entries(), deposit(2, "5", client="other")], "credits other"),
        (lambda: [*client_entries(), deposit(2, "5", segregation="client-omnibus")], "waits for an approved"),
        (lambda: [*client_entries(), *moved(2)], "no released withdrawal"),
        (lambda: [*client_entries(), *withdrawal(2), *moved(4, amount=99)], "moved 100 ETH"),
        (lambda: [*client_entries(), *withdrawal(2), *moved(4, fee=11)], "at most 10"),
        (lambda: [*client_entries(), *withdrawal(2), *moved(4), *moved(6)], "already recorded"),
    ],
)
def test_unjustified_entries_are_refused(entries: Any, match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        Register.replay(entries(), roles=ROLES)


def test_omnibus_allocation_rules() -> None:
    base = [
        *client_entries("ann", "omnibus"),
        deposit(2, "100", client=UNALLOCATED, segregation="client-omnibus"),
    ]

    def allocation(
        i: int, amount: str, *, approver: str = "c1", pid: str | None = None
    ) -> list[dict[str, Any]]:
        content = {"deposit": "mv2", "client": "ann", "amount": amount}
        pid = pid or f"a{i}"
        digest = proposal_digest("allocation", pid, content, "m1")
        return [
            entry(
                i,
                "allocation.proposed",
                {"proposal": pid, "content": content, "digest": digest},
                actor="m1",
                type_="allocation.propose",
                body=content,
            ),
            entry(
                i + 1,
                "register.allocation",
                {"proposal": pid, "movement": f"al{i}", "allocation": content},
                actor=approver,
                type_="allocation.approve",
                body={"proposal": pid, "digest": digest},
            ),
        ]

    reg = Register.replay([*base, *allocation(3, "60"), *allocation(5, "40")], roles=ROLES)
    pos = {k[0]: v for k, v in reg.positions().items()}
    assert pos == {"ann": 100, UNALLOCATED: 0}
    with pytest.raises(VerificationError, match="exceeds"):
        Register.replay([*base, *allocation(3, "60"), *allocation(5, "41")], roles=ROLES)
    with pytest.raises(VerificationError, match="not a custodian"):
        Register.replay([*base, *allocation(3, "60", approver="m2")], roles=ROLES)


def test_policy_names_who_bears_fees() -> None:
    from tandem.core.policy import default_policy, parse_policy
    from tandem.errors import InputError

    doc = default_policy().to_json()
    assert "fees_charged_to" not in doc  # the default keeps the policy's hash
    assert parse_policy({**doc, "fees_charged_to": "fund"}).fees_charged_to == "fund"
    with pytest.raises(InputError, match="fees_charged_to"):
        parse_policy({**doc, "fees_charged_to": "manager"})
