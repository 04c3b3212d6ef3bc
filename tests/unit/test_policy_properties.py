"""Properties of the policy engine over random policies, withdrawals and approvals (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.canonical import loads_strict
from tandem.core.policy import (
    AddressBookEntry,
    Approval,
    PastWithdrawal,
    WithdrawalFacts,
    evaluate,
    parse_policy,
    quorum,
)
from tandem.core.roles import Role

NOW = 1_700_000_000
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"

WALLETS = ["ks_a", "ks_b"]
CHAINS = ["bitcoin", "ethereum"]
NETWORKS = ["mainnet", "testnet"]
ASSETS = ["BTC", "ETH", USDC, USDC.lower()]
ADDRESSES = [
    "bc1qdest",
    "0x52908400098527886E0F7030069857D2E4169EE7",
    "0x52908400098527886e0f7030069857d2e4169ee7",
]

amounts = st.integers(min_value=1, max_value=10**12)
# Deadlines off: drawn policies vary in size and CI machines in speed.
relaxed = settings(deadline=None)


@st.composite
def match_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, choices in (
        ("wallet", WALLETS),
        ("chain", CHAINS),
        ("network", NETWORKS),
        ("asset", ASSETS),
    ):
        if draw(st.booleans()):
            doc[key] = draw(st.sampled_from(choices))
    if draw(st.booleans()):
        doc["min_amount"] = str(draw(amounts))
    return doc


@st.composite
def rule_docs(draw: st.DrawFn, name: str) -> dict[str, Any]:
    match = draw(match_docs())
    approvals: dict[str, int] = {"custodian": draw(st.integers(1, 3))}
    if draw(st.booleans()):
        approvals["manager"] = draw(st.integers(0, 2))
    doc: dict[str, Any] = {
        "name": name,
        "match": match,
        "approvals": approvals,
        "request_ttl_seconds": draw(st.integers(1, 10**6)),
        "approval_ttl_seconds": draw(st.integers(1, 10**6)),
    }
    if draw(st.booleans()):
        doc["allowlist_only"] = draw(st.booleans())
    if draw(st.booleans()):
        floor = int(match.get("min_amount", "0"))
        doc["max_amount"] = str(floor + draw(st.integers(0, 10**12)))
    if draw(st.booleans()):
        doc["velocity"] = {
            "amount": str(draw(amounts)),
            "period_seconds": draw(st.integers(1, 10**6)),
        }
    if draw(st.booleans()):
        doc["time_lock"] = {
            "above": str(draw(st.integers(0, 10**12))),
            "delay_seconds": draw(st.integers(1, 10**6)),
        }
    return doc


@st.composite
def policy_docs(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 4))
    rules = [draw(rule_docs(f"r{i}")) for i in range(count)]
    return {
        "version": draw(st.integers(1, 1000)),
        "change_delay_seconds": draw(st.integers(0, 10**6)),
        "rules": rules,
    }


@st.composite
def withdrawal_facts(draw: st.DrawFn) -> WithdrawalFacts:
    return WithdrawalFacts(
        wallet=draw(st.sampled_from(WALLETS)),
        chain=draw(st.sampled_from(CHAINS)),
        network=draw(st.sampled_from(NETWORKS)),
        asset=draw(st.sampled_from(ASSETS)),
        amount=draw(amounts),
        destination=draw(st.sampled_from(ADDRESSES)),
    )


book_entries = st.builds(
    AddressBookEntry,
    chain=st.sampled_from(CHAINS),
    network=st.sampled_from(NETWORKS),
    address=st.sampled_from(ADDRESSES),
    label=st.sampled_from(["cold", "treasury", "exchange"]),
    asset=st.none() | st.sampled_from(ASSETS),
)
past_withdrawals = st.builds(
    PastWithdrawal,
    wallet=st.sampled_from(WALLETS),
    asset=st.sampled_from(ASSETS),
    amount=amounts,
    time=st.integers(NOW - 3 * 10**6, NOW + 100),
)


def reference_first_match(doc: dict[str, Any], facts: WithdrawalFacts) -> str | None:
    """First-match-wins written out again from the document, independently of Match."""

    def same(a: str, b: str) -> bool:
        return a.lower() == b.lower() if a.startswith("0x") and b.startswith("0x") else a == b

    for rule in doc["rules"]:
        m = rule["match"]
        if "wallet" in m and m["wallet"] != facts.wallet:
            continue
        if "chain" in m and m["chain"] != facts.chain:
            continue
        if "network" in m and m["network"] != facts.network:
            continue
        if "asset" in m and not same(m["asset"], facts.asset):
            continue
        if "min_amount" in m and facts.amount < int(m["min_amount"]):
            continue
        return str(rule["name"])
    return None


@relaxed
@given(
    doc=policy_docs(),
    facts=withdrawal_facts(),
    book=st.lists(book_entries, max_size=4),
    history=st.lists(past_withdrawals, max_size=6),
)
def test_decision_is_deterministic_and_ignores_input_order(
    doc: dict[str, Any],
    facts: WithdrawalFacts,
    book: list[AddressBookEntry],
    history: list[PastWithdrawal],
) -> None:
    policy = parse_policy(doc)
    first = evaluate(policy, facts, now=NOW, address_book=book, history=history)
    again = evaluate(
        parse_policy(doc), facts, now=NOW, address_book=book[::-1], history=history[::-1]
    )
    assert first.to_json() == again.to_json()


@relaxed
@given(
    doc=policy_docs(),
    facts=withdrawal_facts(),
    book=st.lists(book_entries, max_size=4),
    history=st.lists(past_withdrawals, max_size=6),
)
def test_every_decision_requires_a_custodian(
    doc: dict[str, Any],
    facts: WithdrawalFacts,
    book: list[AddressBookEntry],
    history: list[PastWithdrawal],
) -> None:
    decision = evaluate(parse_policy(doc), facts, now=NOW, address_book=book, history=history)
    assert decision.required.get(Role.CUSTODIAN, 0) >= 1
    assert Role.AUDITOR not in decision.required


@relaxed
@given(doc=policy_docs(), facts=withdrawal_facts())
def test_first_matching_rule_is_chosen_and_explained(
    doc: dict[str, Any], facts: WithdrawalFacts
) -> None:
    decision = evaluate(parse_policy(doc), facts, now=NOW, address_book=[], history=[])
    expected = reference_first_match(doc, facts)
    assert decision.rule_name == expected
    if expected is None:
        assert not decision.allowed
    else:
        assert any(f"rule {expected!r} matched" in line for line in decision.explanation)
        rule = next(r for r in doc["rules"] if r["name"] == expected)
        assert decision.request_expires_at == NOW + rule["request_ttl_seconds"]
        lock = rule.get("time_lock")
        if lock is not None and facts.amount > int(lock["above"]):
            assert decision.time_lock_until == NOW + lock["delay_seconds"]
        else:
            assert decision.time_lock_until is None


@relaxed
@given(
    doc=policy_docs(),
    facts=withdrawal_facts(),
    book=st.lists(book_entries, max_size=4),
    history=st.lists(past_withdrawals, max_size=6),
)
def test_allowed_exactly_when_require_passes(
    doc: dict[str, Any],
    facts: WithdrawalFacts,
    book: list[AddressBookEntry],
    history: list[PastWithdrawal],
) -> None:
    decision = evaluate(parse_policy(doc), facts, now=NOW, address_book=book, history=history)
    if decision.allowed:
        decision.require()
    else:
        with pytest.raises(type(decision.violations[0])) as refused:
            decision.require()
        assert refused.value is decision.violations[0]


@relaxed
@given(doc=policy_docs())
def test_policy_round_trips_through_canonical_json(doc: dict[str, Any]) -> None:
    policy = parse_policy(doc)
    assert parse_policy(policy.to_json()) == policy
    reparsed = parse_policy(loads_strict(json.dumps(policy.to_json())))
    assert reparsed.hash() == policy.hash()


# --- quorum ---------------------------------------------------------------------------

MEMBER_IDS = ["m1", "m2", "m3", "c1", "c2", "c3", "a1", "gone"]
ROLES = [Role.MANAGER, Role.CUSTODIAN, Role.AUDITOR]
ELIGIBLE = {
    "m1": Role.MANAGER,
    "m2": Role.MANAGER,
    "m3": Role.MANAGER,
    "c1": Role.CUSTODIAN,
    "c2": Role.CUSTODIAN,
    "c3": Role.CUSTODIAN,
    "a1": Role.AUDITOR,
}
approval_lists = st.lists(
    st.builds(Approval, st.sampled_from(MEMBER_IDS), st.sampled_from(ROLES)), max_size=12
)
requirements = st.fixed_dictionaries(
    {Role.CUSTODIAN: st.integers(1, 3)}, optional={Role.MANAGER: st.integers(0, 2)}
)


@relaxed
@given(
    required=requirements,
    approvals=approval_lists,
    requester=st.sampled_from(MEMBER_IDS),
)
def test_quorum_counts_distinct_eligible_non_requesting_members(
    required: dict[Role, int], approvals: list[Approval], requester: str
) -> None:
    result = quorum(required, approvals, requester=requester, eligible=ELIGIBLE)
    for role, needed in required.items():
        valid = {
            member
            for member, claimed in approvals
            if member != requester and ELIGIBLE.get(member) == claimed == role
        }
        if needed:
            assert result.approved_by[role] == frozenset(valid)
        assert (role in result.missing) == (len(valid) < needed)
    assert result.met == (not result.missing)


@relaxed
@given(
    required=requirements,
    approvals=approval_lists,
    requester=st.sampled_from(MEMBER_IDS),
)
def test_quorum_unchanged_by_repeats_order_or_requester_approvals(
    required: dict[Role, int], approvals: list[Approval], requester: str
) -> None:
    base = quorum(required, approvals, requester=requester, eligible=ELIGIBLE)
    noisy = [
        *approvals[::-1],
        *approvals,
        Approval(requester, ELIGIBLE.get(requester, Role.MANAGER)),
    ]
    other = quorum(required, noisy, requester=requester, eligible=ELIGIBLE)
    assert other.approved_by == base.approved_by
    assert other.missing == base.missing
