"""Velocity reads one wallet's window from indexed columns, not every past withdrawal
(issue 11): old rows, other wallets and closed requests are never selected."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tandem.core.policy import PastWithdrawal
from tandem.services.policies import withdrawal_history
from tandem.store.db import Database
from tandem.store.models import Withdrawal

NOW = 1_800_000_000
HOUR = 3600


def row(
    wid: str, *, status: str, created_at: int, released_at: int | None = None, **extra: Any
) -> Withdrawal:
    fields: dict[str, Any] = {
        "keyset": "ks_a",
        "key_id": "k",
        "chain": "bitcoin",
        "network": "testnet",
        "requester": "mem_x",
        "intent": "{}",
        "intent_hash": "0" * 64,
        "unsigned_tx": "",
        "context": "{}",
        "tx_digest": "0" * 64,
        "decision": "{}",
        "policy_version": 1,
        "expires_at": created_at + 86400,
        "asset": "BTC",
        "amount": "1000",
        "fee": "10",
        "fee_asset": "BTC",
        **extra,
    }
    return Withdrawal(id=wid, status=status, created_at=created_at, released_at=released_at, **fields)


def test_history_is_the_window_only(db: Database) -> None:
    with db.write() as s:
        s.add(row("old_released", status="released", created_at=NOW - 9 * HOUR, released_at=NOW - 2 * HOUR))
        s.add(row("late_release", status="broadcast", created_at=NOW - 9 * HOUR, released_at=NOW - 60))
        s.add(row("abandoned", status="abandoned", created_at=NOW - 9 * HOUR, released_at=NOW - 30))
        s.add(row("open_new", status="pending", created_at=NOW - 120))
        s.add(row("open_old", status="approved", created_at=NOW - 2 * HOUR))
        s.add(row("rejected", status="rejected", created_at=NOW - 60))
        s.add(row("expired", status="pending", created_at=NOW - 60, expires_at=NOW))
        s.add(row("wei", status="released", created_at=NOW - 50, released_at=NOW - 40, amount=str(10**24)))
        s.add(row("other_wallet", status="pending", created_at=NOW - 60, keyset="ks_b"))
    with db.read() as s:
        got = withdrawal_history(s, "ks_a", NOW, window_seconds=HOUR)
        released = withdrawal_history(s, "ks_a", NOW, window_seconds=HOUR, released_only=True)
        none = withdrawal_history(s, "ks_a", NOW, window_seconds=0)
    as_set = {(p.amount, p.time) for p in got}
    assert as_set == {(1010, NOW - 60), (1010, NOW - 30), (1010, NOW - 120), (10**24 + 10, NOW - 40)}
    assert {(p.amount, p.time) for p in released} == {
        (1010, NOW - 60),
        (1010, NOW - 30),
        (10**24 + 10, NOW - 40),
    }
    assert none == []
    assert all(isinstance(p, PastWithdrawal) and p.wallet == "ks_a" for p in got)


def test_the_window_query_uses_the_wallet_indexes(db: Database) -> None:
    if db.writer.dialect.name != "sqlite":
        return
    with db.read() as s:
        plan = s.connection().execute(
            text(
                "EXPLAIN QUERY PLAN SELECT id FROM withdrawal WHERE keyset = 'ks_a' AND "
                "((released_at IS NOT NULL AND released_at >= 1) OR (created_at >= 1))"
            )
        )
        detail = " ".join(str(r[-1]) for r in plan)
    assert "ix_withdrawal_keyset" in detail
