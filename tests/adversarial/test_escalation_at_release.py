"""A wallet limit's escalation at release asks only for approvals that can be given.

At creation the limit counts pending and released withdrawals in its window; at release
only released ones, in the window ending then. So a request made when the window was
quiet can meet, at release, a window that another withdrawal (created later, released
first) filled: the release escalates to a stronger quorum. The request then waits for
the extra approvals again (``pending``, shown in the queue with what it now needs), the
approval route admits them, and it releases. An escalation no set of members can meet
(too few members of a role besides the requester) is refused with
``escalation_unsatisfiable`` and changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.adversarial.limits_helpers import refused, withdrawal_state
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.withdrawals import Setup, approve, btc_intent, fresh_sessions, policy_doc, rule, setup

from tandem.console import pages
from tandem.core import withdrawal as wcore
from tandem.errors import QuorumNotMetError, RemoteError
from tandem.store.models import Withdrawal

WINDOW = 3600


def escalating_policy(approvals: dict[str, int]) -> dict[str, Any]:
    doc = policy_doc(2, [rule("default", approval_ttl_seconds=7200)])
    doc["wallet_limits"] = [
        {
            "name": "btc-hour",
            "match": {"asset": "BTC"},
            "period_seconds": WINDOW,
            "escalate": {"above": "100000", "approvals": approvals},
        }
    ]
    return doc


def escalated_at_release(world: World, s: Setup) -> dict[str, Any]:
    """``first`` (alice's, 60k) is made and approved by one custodian while the window is
    quiet; after the window has moved on, mark's 60k request is made (alone in its
    window: one custodian), approved and released first. Releasing ``first`` now finds
    120k released in the window: above the escalation threshold."""
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=60_000))
    assert first["decision"]["required"] == {"custodian": 1}
    world.clock.advance(WINDOW + 1)
    fresh_sessions(world)  # the read sessions lapsed with the hour
    second = world.client.withdrawals.create(world["mark"], btc_intent(s, amount=60_000))
    assert second["decision"]["required"] == {"custodian": 1}
    approve(world, second["id"], "cora")
    assert world.client.withdrawals.release(world["cora"], second["id"])["status"] == "released"
    assert approve(world, first["id"], "bob")["status"] == wcore.APPROVED
    return first


def test_escalated_release_waits_for_the_extra_approval_then_releases(world: World) -> None:
    s = setup(world, policy=escalating_policy({"custodian": 1, "manager": 1}))
    first = escalated_at_release(world, s)

    err = refused_committed(world, first["id"])
    assert err.remote_code == "escalated"
    assert "1 more manager" in err.message
    view = world.client.withdrawals.get(world["olga"], first["id"])
    assert view["status"] == wcore.PENDING
    assert view["escalated"] is True
    assert view["required"] == {"custodian": 1, "manager": 1}
    assert view["decision"]["required"] == {"custodian": 1}  # the decision made at creation stays
    entry = [e for e in audit_entries(world) if e["kind"] == "withdrawal.escalated"]
    assert len(entry) == 1
    assert entry[0]["data"]["missing"] == {"manager": 1}

    # The queue shows it waiting again, for mark, with what it now needs.
    waiting = pages.queue(world.client, world["mark"], pages.directory(world.client, world["mark"]))
    row = next(w for w in waiting["withdrawals"] if w["id"] == first["id"])
    assert row["required"] == 2
    assert row["mine_to_approve"] is True
    assert "1 manager" in row["required_text"]

    # The server exports only approved requests. One that marks the row approved again
    # to export it anyway meets the offline signer, which reads the escalation from the
    # log and asks for the same.
    set_status(world, first["id"], wcore.APPROVED)
    bundle = world.client.get(world["alice"], f"/v1/withdrawals/{first['id']}/bundle")
    set_status(world, first["id"], wcore.PENDING)
    with pytest.raises(QuorumNotMetError, match="manager"):
        wcore.verify_bundle(bundle, now=world.clock())

    # The requester still cannot approve her own request; the other manager can.
    refused(
        world,
        "self_approval",
        "withdrawal.approve",
        world.client.withdrawals.approve,
        world["alice"],
        first["id"],
        totp=world.code("alice"),
    )
    assert approve(world, first["id"], "mark")["status"] == wcore.APPROVED
    bundle = world.client.get(world["alice"], f"/v1/withdrawals/{first['id']}/bundle")
    assert wcore.verify_bundle(bundle, now=world.clock()).approvers == {
        world["bob"].member_id,
        world["mark"].member_id,
    }
    released = world.client.withdrawals.release(world["bob"], first["id"])
    assert released["status"] == "released"
    last = [e for e in audit_entries(world) if e["kind"] == "withdrawal.released"][-1]
    assert set(last["data"]["approved_by"]) == {world["bob"].member_id, world["mark"].member_id}


def test_escalation_nobody_can_meet_is_refused_with_its_reason(world: World) -> None:
    """Two managers besides the requester are asked for; there is one (mark). Refused
    for good, with the counts; the request stays as it was."""
    s = setup(world, policy=escalating_policy({"custodian": 1, "manager": 2}))
    first = escalated_at_release(world, s)
    err = refused(
        world,
        "escalation_unsatisfiable",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        first["id"],
    )
    assert "2 manager approval(s)" in err.message
    assert "only 1 manager(s) other than the requester" in err.message
    view = world.client.withdrawals.get(world["olga"], first["id"])
    assert view["status"] == wcore.APPROVED
    assert view["escalated"] is False


def test_a_retry_under_the_same_idempotency_key_releases_once_approved(world: World) -> None:
    """The escalation is not cached as the request's answer: after the extra approval
    the same Idempotency-Key releases."""
    s = setup(world, policy=escalating_policy({"custodian": 1, "manager": 1}))
    first = escalated_at_release(world, s)
    key = "release-" + first["id"]
    body = {"envelope": world.client.withdrawals.release_envelope(world["bob"], first["id"])}
    response = world.client.http.post(
        f"/v1/withdrawals/{first['id']}/release", json=body, headers={"Idempotency-Key": key}
    )
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "escalated"
    approve(world, first["id"], "mark")
    body = {"envelope": world.client.withdrawals.release_envelope(world["bob"], first["id"])}
    again = world.client.http.post(
        f"/v1/withdrawals/{first['id']}/release", json=body, headers={"Idempotency-Key": key}
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "released"


def set_status(world: World, withdrawal_id: str, status: str) -> None:
    with world.svc.db.write() as session:
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        row.status = status
        session.add(row)


def refused_committed(world: World, withdrawal_id: str) -> Any:
    """The escalation answer: a 409 whose state change (back to pending) is committed
    with its ``withdrawal.escalated`` entry, and no refusal entry beside it."""
    before = withdrawal_state(world)
    logged = len(audit_entries(world))
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.release(world["bob"], withdrawal_id)
    assert err.value.http_status == 409
    after = withdrawal_state(world)
    assert after != before  # pending again
    new = [e for e in audit_entries(world)[logged:] if e["data"].get("withdrawal") == withdrawal_id]
    assert [(e["kind"], e["outcome"]) for e in new] == [("withdrawal.escalated", "ok")]
    assert not [e for e in audit_entries(world)[logged:] if e["kind"] == "withdrawal.release.refused"]
    return err.value
