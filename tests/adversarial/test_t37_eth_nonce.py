"""THREATS 37: two live withdrawals with the same Ethereum nonce. Both could be approved,
and only one can ever be mined: which one is the broadcaster's choice. The second is
refused while the first is live (pending, approved, released, broadcast, confirmed),
the database's primary key enforces it, and the nonce is free again once the first
ended without using it (rejected, cancelled, expired, abandoned)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from tests.adversarial.limits_helpers import refused
from tests.conftest import World
from tests.helpers.withdrawals import (
    TOKEN,
    Setup,
    create_approved,
    eth_intent,
    fresh_sessions,
    setup,
)

from tandem.store.models import WithdrawalNonce


def second_with_same_nonce_refused(world: World, s: Setup, *, nonce: int = 7) -> None:
    err = refused(
        world,
        "nonce_in_use",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s, amount=2 * 10**15, nonce=nonce),
    )
    assert err.http_status == 409
    assert f"nonce {nonce}" in err.message


def test_t37_second_pending_withdrawal_with_the_same_nonce_refused(world: World) -> None:
    s = setup(world)
    first = world.client.withdrawals.create(world["alice"], eth_intent(s, nonce=7))
    second_with_same_nonce_refused(world, s)
    # A token transfer from the same address is the same account nonce.
    refused(
        world,
        "nonce_in_use",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        eth_intent(s, amount=5, asset=TOKEN, nonce=7),
    )
    # Another nonce is fine.
    assert world.client.withdrawals.create(world["alice"], eth_intent(s, nonce=8))["status"] == "pending"
    ids = [w["id"] for w in world.client.withdrawals.list(world["olga"])]
    assert first["id"] in ids
    assert len(ids) == 2


def test_t37_same_nonce_refused_while_approved_and_after_release(world: World) -> None:
    s = setup(world)
    w = create_approved(world, eth_intent(s, nonce=7))
    second_with_same_nonce_refused(world, s)
    world.client.withdrawals.release(world["bob"], w["id"])
    second_with_same_nonce_refused(world, s)
    world.client.withdrawals.record_broadcast(
        world["bob"],
        w["id"],
        txid=world.client.withdrawals.get(world["olga"], w["id"])["txid"],
    )
    world.client.withdrawals.confirm(world["bob"], w["id"])
    second_with_same_nonce_refused(world, s)


def test_t37_nonce_free_again_after_reject_expiry_or_abandon(world: World) -> None:
    s = setup(world)
    rejected = world.client.withdrawals.create(world["alice"], eth_intent(s, nonce=7))
    world.client.withdrawals.reject(world["bob"], rejected["id"], reason="wrong amount")
    expiring = world.client.withdrawals.create(world["alice"], eth_intent(s, nonce=7))
    world.clock.advance(86400)
    fresh_sessions(world)
    assert world.client.withdrawals.get(world["olga"], expiring["id"])["status"] == "expired"
    released = create_approved(world, eth_intent(s, nonce=7))
    world.client.withdrawals.release(world["bob"], released["id"])
    second_with_same_nonce_refused(world, s)
    world.client.withdrawals.abandon(world["bob"], released["id"], reason="fee too low, replaced")
    again = world.client.withdrawals.create(world["alice"], eth_intent(s, nonce=7))
    assert again["status"] == "pending"


def test_t37_the_database_refuses_a_second_claim_on_a_nonce(world: World) -> None:
    """Even a writer that skipped the service's check cannot store two live claims."""
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], eth_intent(s, nonce=7))
    duplicate = WithdrawalNonce(
        chain="ethereum", network="sepolia", address=s.eth_from, nonce=7, withdrawal="wd_other", created_at=0
    )

    def insert() -> None:
        with world.svc.db.write() as session:
            session.add(duplicate)
            session.flush()

    with pytest.raises(IntegrityError):
        insert()
    with world.svc.db.read() as session:
        claims = session.exec(select(WithdrawalNonce)).all()
        assert [(c.nonce, c.withdrawal) for c in claims] == [(7, w["id"])]
