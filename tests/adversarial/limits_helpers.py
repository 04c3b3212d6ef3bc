"""Helpers for the fee, limit, nonce and release-lifetime attacks (THREATS 28-32, 37, 38):
what a refused withdrawal request must leave untouched, and the refusal it must log."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.refusals import refused as refused_with

from tandem.errors import RemoteError
from tandem.store.models import Approval, OperationShare, Withdrawal, WithdrawalNonce


def withdrawal_state(world: World) -> dict[str, Any]:
    """Every withdrawal row as stored, its approvals, its shares and the nonce claims."""
    with world.svc.db.read() as s:
        return {
            "withdrawals": sorted(
                (
                    w.id,
                    w.status,
                    w.signed_tx,
                    w.txid,
                    w.released_at,
                    w.release_expires_at,
                    w.broadcast_at,
                    w.confirmed_at,
                    w.abandoned_at,
                )
                for w in s.exec(select(Withdrawal)).all()
            ),
            "approvals": sorted((a.subject, a.member) for a in s.exec(select(Approval)).all()),
            "shares": len(s.exec(select(OperationShare)).all()),
            "nonces": sorted(
                (n.chain, n.network, n.address, n.nonce, n.withdrawal)
                for n in s.exec(select(WithdrawalNonce)).all()
            ),
        }


def refused(world: World, code: str, kind: str, fn: Any, *args: Any, **kwargs: Any) -> RemoteError:
    """``fn`` is refused with ``code``; withdrawals, approvals, shares and nonce claims
    are as they were; and the log's newest entry is the ``kind`` refusal with that code."""
    before = withdrawal_state(world)
    exc = refused_with(code, fn, *args, **kwargs)
    assert isinstance(exc, RemoteError)
    assert 400 <= exc.http_status < 500
    after = withdrawal_state(world)
    assert after == before
    # Reading the log may itself open the auditor's session (an entry of its own).
    last = [e for e in audit_entries(world) if e["kind"] != "session.opened"][-1]
    assert last["kind"] == f"{kind}.refused", last
    assert last["outcome"] == "refused"
    assert last["code"] == code
    return exc


def count_ok(world: World, kind: str) -> int:
    return sum(1 for e in audit_entries(world) if e["kind"] == kind and e["outcome"] == "ok")
