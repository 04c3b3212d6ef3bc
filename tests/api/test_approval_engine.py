"""The flows ask the one approval engine (tandem.core.approvals), for real: a stored
approval under an old policy version refuses a release as the offline signer refuses
the bundle; ceremony quorums are counted from the approval records; a release counts
its quorum once."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import select
from tests.api.test_ceremony import approve as approve_ceremony
from tests.api.test_ceremony import custom_definition, propose
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.refusals import refused
from tests.helpers.withdrawals import btc_intent, create_approved, policy_doc, rule, setup

from tandem.core import approvals as engine
from tandem.core import withdrawal as wcore
from tandem.core.canonical import canonical
from tandem.store.models import Approval, Withdrawal


def test_a_stored_approval_under_an_old_policy_version_refuses_the_release(world: World) -> None:
    """The server once skipped such an approval and released on the others; the offline
    signer refused the bundle. Both now refuse (the stricter rule)."""
    s = setup(world, policy=policy_doc(2, [rule("one", custodians=1)]))
    w = create_approved(world, btc_intent(s), by=("bob",))
    assert w["status"] == "approved"
    # Cora signs an approval of exactly this content, naming policy version 1.
    body = wcore.approval_body(
        withdrawal=w["id"],
        intent_hash_hex=w["intent_hash"],
        tx_digest_hex=w["tx_digest"],
        policy_version=w["policy_version"] - 1,
        expires_at=world.clock() + 600,
    )
    env = world.client.sign(world["cora"], "withdrawal.approve", body)
    with world.svc.db.write() as session:
        session.add(
            Approval(
                subject=w["id"],
                member=world["cora"].member_id,
                role="custodian",
                envelope=canonical(env).decode(),
                created_at=world.clock(),
            )
        )
    refused(
        "policy_version_mismatch",
        world.client.withdrawals.release,
        world["bob"],
        w["id"],
        match="names policy version 1",
    )
    with world.svc.db.read() as session:
        row = session.get(Withdrawal, w["id"])
        assert row is not None
        assert row.signed_tx is None
    assert any(
        e["kind"] == "withdrawal.release.refused" and e["code"] == "policy_version_mismatch"
        for e in audit_entries(world)
    )


def test_a_release_counts_its_quorum_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    real = engine.evaluate
    calls: list[str] = []

    def counting(request: engine.Request, *args: Any, **kwargs: Any) -> engine.QuorumResult:
        calls.append(request.kind)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", counting)
    released = world.client.withdrawals.release(world["bob"], w["id"])
    assert released["status"] == "released"
    assert calls.count("withdrawal") == 1
    entry = next(e for e in audit_entries(world) if e["kind"] == "withdrawal.released")
    assert entry["data"]["approved_by"] == [world["bob"].member_id]


def test_ceremony_quorum_is_read_from_the_approval_records(world: World) -> None:
    """Ceremony approvals are written to the Approval table and counted from it: with the
    record gone, the last reveal finds no quorum and nothing is generated."""
    ceremony_id, mine = propose(world, text=custom_definition(custodians=1))
    view, theirs = approve_ceremony(world, ceremony_id, "bob")
    assert view["status"] == "revealing"
    with world.svc.db.read() as session:
        records = session.exec(select(Approval).where(Approval.subject == ceremony_id)).all()
        assert [(a.member, a.role) for a in records] == [(world["bob"].member_id, "custodian")]
    world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)
    with world.svc.db.write() as session:
        for a in session.exec(select(Approval).where(Approval.subject == ceremony_id)).all():
            session.delete(a)
    bob = world["bob"]
    refused("quorum_not_met", world.client.ceremonies.reveal, bob, ceremony_id, theirs, match="custodian 0/1")
    assert world.client.ceremonies.get(world["olga"], ceremony_id)["status"] == "revealing"
