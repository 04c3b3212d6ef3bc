"""The typed readers of withdrawal and proposal answers: built from the JSON as served,
strict about every field's type, and keeping the very JSON they were read from."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tandem.client.views import Approval, ProposalView, WithdrawalView
from tandem.errors import RemoteError

WITHDRAWAL: dict[str, Any] = {
    "id": "wd_1",
    "wallet": "ks_1",
    "chain": "bitcoin",
    "network": "testnet",
    "requester": "mem_alice",
    "intent": {"amount": "50000", "asset": "BTC", "destination": "tb1qdest"},
    "fingerprint": "abcd-ef01",
    "policy_version": 3,
    "status": "pending",
    "created_at": 1000,
    "expires_at": 2000,
    "time_lock_until": None,
    "released_at": None,
    "txid": None,
    "signed_tx": None,
    "decision": {"rule": "small", "required": {"custodian": 1}, "explanation": ["rule small matched"]},
    "required": {"custodian": 2},
    "escalated": True,
    "approvals": [{"member": "mem_bob", "role": "custodian", "at": 1500, "expires_at": 1900}],
    "decoded": {"decimals": 8, "symbol": "BTC"},
}

PROPOSAL: dict[str, Any] = {
    "id": "prop_1",
    "kind": "member.add",
    "body": {"change": "add", "card": {"name": "cora"}},
    "proposer": "mem_alice",
    "status": "pending",
    "created_at": 1000,
    "expires_at": 2000,
    "approved_at": None,
    "effective_at": None,
    "digest": "00" * 32,
    "approvals": [],
}


def test_a_withdrawal_reads_as_typed_fields() -> None:
    w = WithdrawalView.from_json(WITHDRAWAL)
    assert (w.id, w.chain, w.network, w.status, w.policy_version) == (
        "wd_1",
        "bitcoin",
        "testnet",
        "pending",
        3,
    )
    assert (w.amount, w.asset, w.destination) == ("50000", "BTC", "tb1qdest")
    assert w.required == {"custodian": 2}  # what it needs now, not the decision's
    assert w.rule == "small"
    assert w.explanation == ("rule small matched",)
    assert w.escalated is True
    assert w.approvals == (Approval(member="mem_bob", role="custodian", at=1500, expires_at=1900),)
    assert w.approved_by("mem_bob")
    assert not w.approved_by("mem_alice")
    assert (w.decimals, w.symbol) == (8, "BTC")
    assert w.doc is WITHDRAWAL


def test_a_withdrawal_without_its_own_requirement_reads_the_decisions() -> None:
    doc = copy.deepcopy(WITHDRAWAL)
    del doc["required"], doc["decoded"], doc["escalated"]
    w = WithdrawalView.from_json(doc)
    assert w.required == {"custodian": 1}
    assert (w.decimals, w.symbol, w.escalated) == (None, None, False)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("policy_version",), "3", "policy_version"),
        (("policy_version",), True, "policy_version"),
        (("expires_at",), None, "expires_at"),
        (("id",), 7, "id"),
        (("intent", "amount"), 50000, "amount"),
        (("intent",), ["not", "an", "object"], "intent"),
        (("required",), {"custodian": "2"}, "custodian"),
        (("approvals",), {"member": "mem_bob"}, "approvals"),
        (("escalated",), "yes", "escalated"),
        (("decision", "explanation"), [1], "explanation"),
    ],
)
def test_a_withdrawal_field_of_the_wrong_type_is_refused(
    path: tuple[str, ...], value: Any, field: str
) -> None:
    doc = copy.deepcopy(WITHDRAWAL)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(RemoteError, match=field) as info:
        WithdrawalView.from_json(doc)
    assert info.value.remote_code == "bad_response"


def test_an_approval_of_the_wrong_shape_is_refused() -> None:
    doc = copy.deepcopy(WITHDRAWAL)
    doc["approvals"] = [{"member": "mem_bob", "role": "custodian", "at": "noon"}]
    with pytest.raises(RemoteError, match="approval's at is not an integer"):
        WithdrawalView.from_json(doc)


def test_a_proposal_reads_as_typed_fields() -> None:
    p = ProposalView.from_json(PROPOSAL)
    assert (p.id, p.kind, p.proposer, p.status) == ("prop_1", "member.add", "mem_alice", "pending")
    assert p.body == PROPOSAL["body"]
    assert p.approvals == ()
    assert p.pending_change is None
    assert not p.approved_by("mem_bob")
    assert p.doc is PROPOSAL


@pytest.mark.parametrize(
    ("name", "value"),
    [("kind", None), ("body", "text"), ("created_at", 1.5), ("approvals", "none"), ("pending_change", [])],
)
def test_a_proposal_field_of_the_wrong_type_is_refused(name: str, value: Any) -> None:
    with pytest.raises(RemoteError, match=name):
        ProposalView.from_json({**PROPOSAL, name: value})


def test_an_answer_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(RemoteError, match="not a JSON object"):
        WithdrawalView.from_json(["wd_1"])
    with pytest.raises(RemoteError, match="not a JSON object"):
        ProposalView.from_json("prop_1")
