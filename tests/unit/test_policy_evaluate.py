"""Evaluating withdrawals against a policy: rule choice, violations, expiry, time locks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tandem.core.policy import (
    AddressBookEntry,
    PastWithdrawal,
    PendingChange,
    Policy,
    PolicyDecision,
    WithdrawalFacts,
    check_approval_fresh,
    check_policy_successor,
    check_policy_version,
    check_request_expiry,
    check_time_lock,
    default_policy,
    evaluate,
    parse_policy,
)
from tandem.core.roles import Role
from tandem.errors import (
    DestinationNotAllowedError,
    ExpiredError,
    InvalidAmountError,
    LimitExceededError,
    NoMatchingRuleError,
    PolicyVersionError,
    TimeLockedError,
    VelocityExceededError,
)

NOW = 1_700_000_000
DAY = 86400
WALLET = "ks_ab12"
BTC_DEST = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
ETH_DEST = "0x52908400098527886E0F7030069857D2E4169EE7"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def btc_policy() -> Policy:
    return parse_policy(
        {
            "version": 3,
            "change_delay_seconds": DAY,
            "rules": [
                {
                    "name": "btc-large",
                    "match": {
                        "wallet": WALLET,
                        "chain": "bitcoin",
                        "asset": "BTC",
                        "min_amount": "100000000",
                    },
                    "approvals": {"custodian": 2},
                    "max_amount": "500000000",
                    "velocity": {"amount": "1000000000", "period_seconds": DAY},
                    "time_lock": {"above": "200000000", "delay_seconds": 3600},
                    "request_ttl_seconds": DAY,
                    "approval_ttl_seconds": 3600,
                },
                {
                    "name": "default",
                    "match": {},
                    "approvals": {"custodian": 1},
                    "allowlist_only": True,
                    "request_ttl_seconds": 7200,
                    "approval_ttl_seconds": 600,
                },
            ],
        }
    )


def facts(**overrides: Any) -> WithdrawalFacts:
    values: dict[str, Any] = {
        "wallet": WALLET,
        "chain": "bitcoin",
        "network": "mainnet",
        "asset": "BTC",
        "amount": 150_000_000,
        "destination": BTC_DEST,
    }
    values.update(overrides)
    return WithdrawalFacts(**values)


def btc_book() -> list[AddressBookEntry]:
    return [
        AddressBookEntry(chain="bitcoin", network="mainnet", address=BTC_DEST, label="cold vault")
    ]


def decide(
    the_facts: WithdrawalFacts,
    *,
    policy: Policy | None = None,
    book: Sequence[AddressBookEntry] | None = None,
    history: Sequence[PastWithdrawal] = (),
    now: int = NOW,
) -> PolicyDecision:
    return evaluate(
        policy or btc_policy(),
        the_facts,
        now=now,
        address_book=btc_book() if book is None else book,
        history=history,
    )


# --- choosing the rule ----------------------------------------------------------------


def test_matching_withdrawal_gets_the_specific_rule() -> None:
    decision = decide(facts())
    assert decision.rule_name == "btc-large"
    assert dict(decision.required) == {Role.CUSTODIAN: 2}
    assert decision.allowed
    decision.require()


def test_first_match_wins_even_if_a_later_rule_also_matches() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "change_delay_seconds": 0,
            "rules": [
                {
                    "name": "lenient",
                    "match": {"asset": "BTC"},
                    "approvals": {"custodian": 1},
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                },
                {
                    "name": "strict",
                    "match": {"asset": "BTC"},
                    "approvals": {"custodian": 3},
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                },
            ],
        }
    )
    decision = decide(facts(), policy=policy)
    assert decision.rule_name == "lenient"
    assert dict(decision.required) == {Role.CUSTODIAN: 1}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"wallet": "ks_other"}, "wallet is ks_other, the rule wants ks_ab12"),
        ({"chain": "litecoin"}, "chain is litecoin, the rule wants bitcoin"),
        ({"asset": "WBTC"}, "asset is WBTC, the rule wants BTC"),
        ({"amount": 99_999_999}, "amount 99999999 is below min_amount 100000000"),
    ],
)
def test_rule_skipped_when_a_match_field_differs(overrides: dict[str, Any], reason: str) -> None:
    decision = decide(facts(**overrides))
    assert decision.rule_name == "default"
    assert f"rule 'btc-large' skipped: {reason}" in decision.explanation


def test_min_amount_is_inclusive() -> None:
    assert decide(facts(amount=100_000_000)).rule_name == "btc-large"


def test_network_match() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "change_delay_seconds": 0,
            "rules": [
                {
                    "name": "testnet",
                    "match": {"network": "testnet"},
                    "approvals": {"custodian": 1},
                    "allowlist_only": False,
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                }
            ],
        }
    )
    assert decide(facts(network="testnet"), policy=policy).rule_name == "testnet"
    assert decide(facts(network="mainnet"), policy=policy).rule_name is None


def test_no_matching_rule_is_refused() -> None:
    policy = parse_policy(
        {
            "version": 5,
            "change_delay_seconds": 0,
            "rules": [
                {
                    "name": "eth-only",
                    "match": {"chain": "ethereum"},
                    "approvals": {"custodian": 1},
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                }
            ],
        }
    )
    decision = decide(facts(), policy=policy)
    assert decision.rule_name is None
    assert not decision.allowed
    with pytest.raises(NoMatchingRuleError, match="no rule of policy version 5 matches"):
        decision.require()


def test_no_matching_rule_fails_closed_in_every_field() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "change_delay_seconds": 0,
            "rules": [
                {
                    "name": "eth-only",
                    "match": {"chain": "ethereum"},
                    "approvals": {"custodian": 1},
                    "allowlist_only": False,
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                }
            ],
        }
    )
    decision = decide(facts(), policy=policy)
    assert decision.required[Role.CUSTODIAN] >= 1
    with pytest.raises(ExpiredError):
        check_request_expiry(decision.request_expires_at, NOW)
    with pytest.raises(ExpiredError):
        check_approval_fresh(
            approved_at=NOW, approval_ttl_seconds=decision.approval_ttl_seconds, now=NOW
        )


def test_decision_carries_policy_identity_expiry_and_ttl() -> None:
    policy = btc_policy()
    decision = decide(facts(), policy=policy)
    assert decision.policy_version == 3
    assert decision.policy_hash == policy.hash()
    assert decision.request_expires_at == NOW + DAY
    assert decision.approval_ttl_seconds == 3600
    default = decide(facts(asset="LTC"), policy=policy)
    assert default.request_expires_at == NOW + 7200
    assert default.approval_ttl_seconds == 600


# --- explanation ----------------------------------------------------------------------


def test_explanation_names_skipped_and_matched_rules_and_requirements() -> None:
    decision = decide(facts(amount=50_000_000))
    text = "\n".join(decision.explanation)
    assert "rule 'btc-large' skipped: amount 50000000 is below min_amount 100000000" in text
    assert "rule 'default' matched" in text
    assert "requires approvals: custodian 1" in text
    assert "on the address book as 'cold vault'" in text


def test_explanation_lists_each_violation() -> None:
    decision = decide(facts(amount=600_000_000), book=[])
    text = "\n".join(decision.explanation)
    assert "exceeds the rule's maximum 500000000" in text
    assert "not on the address book" in text
    assert "refused: 2 problem(s)" in text


# --- violations -----------------------------------------------------------------------


def test_amount_over_max_is_refused_with_both_amounts() -> None:
    decision = decide(facts(amount=600_000_000))
    assert not decision.allowed
    assert [type(v) for v in decision.violations] == [LimitExceededError]
    with pytest.raises(
        LimitExceededError, match="amount 600000000 exceeds the rule's maximum 500000000"
    ):
        decision.require()


def test_amount_equal_to_max_is_allowed() -> None:
    assert decide(facts(amount=500_000_000)).allowed


def test_violations_do_not_depend_on_approvals_and_require_raises_the_first() -> None:
    decision = decide(facts(amount=600_000_000), book=[])
    assert [type(v) for v in decision.violations] == [
        LimitExceededError,
        DestinationNotAllowedError,
    ]
    with pytest.raises(LimitExceededError):
        decision.require()
    # Raising twice gives the same error, not a growing traceback.
    with pytest.raises(LimitExceededError):
        decision.require()


# --- velocity -------------------------------------------------------------------------


def past(amount: int, seconds_ago: int, **overrides: Any) -> PastWithdrawal:
    values: dict[str, Any] = {
        "wallet": WALLET,
        "asset": "BTC",
        "amount": amount,
        "time": NOW - seconds_ago,
    }
    values.update(overrides)
    return PastWithdrawal(**values)


def test_velocity_counts_the_sliding_window() -> None:
    history = [past(450_000_000, 3600), past(450_000_000, DAY - 1)]
    decision = decide(facts(amount=100_000_001), history=history)
    with pytest.raises(
        VelocityExceededError,
        match=r"900000000 of BTC already left wallet ks_ab12 in the last 86400s; "
        r"with 100000001 more that is 1000000001, over the rule's limit 1000000000",
    ):
        decision.require()
    (violation,) = decision.violations
    assert violation.details["window_sum"] == "900000000"


def test_velocity_limit_itself_is_reachable() -> None:
    history = [past(450_000_000, 3600), past(450_000_000, DAY - 1)]
    assert decide(facts(amount=100_000_000), history=history).allowed


def test_velocity_ignores_entries_outside_the_period() -> None:
    history = [past(900_000_000, DAY), past(900_000_000, 2 * DAY)]
    assert decide(facts(amount=400_000_000), history=history).allowed


def test_velocity_entry_one_second_inside_the_period_counts() -> None:
    history = [past(900_000_000, DAY - 1)]
    decision = decide(facts(amount=400_000_000), history=history)
    assert [type(v) for v in decision.violations] == [VelocityExceededError]


def test_velocity_ignores_other_wallets_and_assets() -> None:
    history = [
        past(900_000_000, 60, wallet="ks_other"),
        past(900_000_000, 60, asset="LTC"),
    ]
    assert decide(facts(amount=400_000_000), history=history).allowed


def test_velocity_counts_entries_dated_after_now() -> None:
    history = [past(900_000_000, -30)]
    assert not decide(facts(amount=400_000_000), history=history).allowed


def test_velocity_treats_erc20_contract_case_as_the_same_asset() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "change_delay_seconds": 0,
            "rules": [
                {
                    "name": "usdc",
                    "match": {"asset": USDC},
                    "approvals": {"custodian": 1},
                    "allowlist_only": False,
                    "velocity": {"amount": "1000", "period_seconds": 3600},
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                }
            ],
        }
    )
    history = [past(900, 60, asset=USDC.lower())]
    decision = decide(
        facts(chain="ethereum", asset=USDC, amount=101, destination=ETH_DEST),
        policy=policy,
        history=history,
    )
    assert [type(v) for v in decision.violations] == [VelocityExceededError]


# --- time lock ------------------------------------------------------------------------


def test_time_lock_not_applied_at_exactly_the_threshold() -> None:
    decision = decide(facts(amount=200_000_000))
    assert decision.time_lock_until is None
    check_time_lock(decision.time_lock_until, NOW)


def test_time_lock_applied_one_unit_above_the_threshold() -> None:
    decision = decide(facts(amount=200_000_001))
    assert decision.time_lock_until == NOW + 3600
    assert decision.allowed  # a time lock delays, it does not refuse
    assert any("time lock" in line for line in decision.explanation)


def test_check_time_lock_reports_seconds_remaining() -> None:
    until = NOW + 3600
    with pytest.raises(TimeLockedError, match=r"time-locked for another 3600s"):
        check_time_lock(until, NOW)
    with pytest.raises(TimeLockedError, match=r"another 1s"):
        check_time_lock(until, until - 1)
    check_time_lock(until, until)
    check_time_lock(None, NOW)


# --- allow-list -----------------------------------------------------------------------


def test_destination_not_on_address_book_refused() -> None:
    other = "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh"
    decision = decide(facts(destination=other))
    with pytest.raises(
        DestinationNotAllowedError,
        match=rf"destination {other} is not on the address book for BTC on bitcoin/mainnet",
    ):
        decision.require()


def test_same_address_on_another_network_is_not_allowed() -> None:
    book = [AddressBookEntry(chain="bitcoin", network="testnet", address=BTC_DEST, label="test")]
    decision = decide(facts(), book=book)
    assert [type(v) for v in decision.violations] == [DestinationNotAllowedError]


def test_same_address_on_another_chain_is_not_allowed() -> None:
    book = [AddressBookEntry(chain="ethereum", network="mainnet", address=ETH_DEST, label="hot")]
    decision = decide(facts(chain="polygon", destination=ETH_DEST, asset="MATIC"), book=book)
    assert [type(v) for v in decision.violations] == [DestinationNotAllowedError]


def test_entry_restricted_to_one_asset_does_not_allow_another() -> None:
    book = [
        AddressBookEntry(
            chain="ethereum", network="mainnet", address=ETH_DEST, label="usdc only", asset=USDC
        )
    ]
    eth = decide(facts(chain="ethereum", asset="ETH", destination=ETH_DEST), book=book)
    usdc = decide(facts(chain="ethereum", asset=USDC, destination=ETH_DEST), book=book)
    assert [type(v) for v in eth.violations] == [DestinationNotAllowedError]
    assert usdc.allowed


def test_entry_without_asset_allows_any_asset() -> None:
    book = [AddressBookEntry(chain="ethereum", network="mainnet", address=ETH_DEST, label="any")]
    assert decide(facts(chain="ethereum", asset=USDC, destination=ETH_DEST), book=book).allowed
    assert decide(facts(chain="ethereum", asset="ETH", destination=ETH_DEST), book=book).allowed


def test_erc20_contract_and_evm_address_compare_case_insensitively() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "change_delay_seconds": 0,
            "rules": [
                {
                    "name": "usdc",
                    "match": {"chain": "ethereum", "asset": USDC.lower()},
                    "approvals": {"custodian": 2},
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                },
                {
                    "name": "default",
                    "match": {},
                    "approvals": {"custodian": 1},
                    "request_ttl_seconds": 60,
                    "approval_ttl_seconds": 60,
                },
            ],
        }
    )
    book = [
        AddressBookEntry(
            chain="ethereum",
            network="mainnet",
            address=ETH_DEST.lower(),
            label="treasury",
            asset=USDC.upper().replace("0X", "0x"),
        )
    ]
    decision = decide(
        facts(chain="ethereum", asset=USDC, destination=ETH_DEST), policy=policy, book=book
    )
    assert decision.rule_name == "usdc"
    assert decision.allowed


def test_base58_and_symbols_stay_case_sensitive() -> None:
    sol = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"
    book = [AddressBookEntry(chain="solana", network="mainnet", address=sol.lower(), label="x")]
    decision = decide(facts(chain="solana", asset="SOL", destination=sol), book=book)
    assert [type(v) for v in decision.violations] == [DestinationNotAllowedError]
    assert decide(facts(asset="btc")).rule_name == "default"


def test_explanation_does_not_depend_on_address_book_order() -> None:
    book = [
        AddressBookEntry(chain="bitcoin", network="mainnet", address=BTC_DEST, label="vault b"),
        AddressBookEntry(chain="bitcoin", network="mainnet", address=BTC_DEST, label="vault a"),
    ]
    forward = decide(facts(), book=book)
    backward = decide(facts(), book=book[::-1])
    assert forward.explanation == backward.explanation
    assert any("as 'vault a'" in line for line in forward.explanation)


def test_allowlist_only_false_skips_the_address_book() -> None:
    doc = btc_policy().to_json()
    doc["rules"][1]["allowlist_only"] = False
    decision = decide(facts(asset="LTC"), policy=parse_policy(doc), book=[])
    assert decision.allowed
    assert any("allowlist_only to false" in line for line in decision.explanation)


# --- facts, expiry, freshness, version ------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, True])
def test_facts_refuse_nonsense_amounts(amount: int) -> None:
    with pytest.raises(InvalidAmountError):
        facts(amount=amount)


def test_now_must_be_integer_seconds() -> None:
    with pytest.raises(TypeError):
        evaluate(btc_policy(), facts(), now=1.5, address_book=[], history=[])  # type: ignore[arg-type]


def test_request_expiry_boundary() -> None:
    check_request_expiry(NOW + 1, NOW)
    with pytest.raises(ExpiredError, match=rf"request expired at {NOW} \(0s ago\)"):
        check_request_expiry(NOW, NOW)


def test_approval_freshness_boundary() -> None:
    check_approval_fresh(approved_at=NOW, approval_ttl_seconds=3600, now=NOW + 3599)
    with pytest.raises(ExpiredError, match=rf"approval expired at {NOW + 3600}"):
        check_approval_fresh(approved_at=NOW, approval_ttl_seconds=3600, now=NOW + 3600)


def test_approval_for_another_policy_version_refused() -> None:
    check_policy_version(3, 3)
    with pytest.raises(PolicyVersionError, match=r"given under policy version 2.*version 3"):
        check_policy_version(2, 3)


# --- policy changes -------------------------------------------------------------------


def test_pending_change_takes_effect_after_the_delay() -> None:
    change = PendingChange.approved(proposed_at=NOW - 60, approved_at=NOW, change_delay_seconds=DAY)
    assert change.effective_at == NOW + DAY
    assert not change.is_effective(NOW + DAY - 1)
    assert change.is_effective(NOW + DAY)


def test_vetoed_change_never_takes_effect() -> None:
    change = PendingChange.approved(proposed_at=NOW, approved_at=NOW, change_delay_seconds=DAY)
    vetoed = change.veto(now=NOW + 10)
    assert vetoed.vetoed
    assert not vetoed.is_effective(NOW + 10 * DAY)
    assert not change.vetoed  # the original is unchanged


def test_veto_after_the_change_took_effect_refused() -> None:
    change = PendingChange.approved(proposed_at=NOW, approved_at=NOW, change_delay_seconds=DAY)
    assert not change.can_veto(NOW + DAY)
    with pytest.raises(ExpiredError, match="veto window closed"):
        change.veto(now=NOW + DAY)


def test_pending_change_times_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="proposed_at <= approved_at <= effective_at"):
        PendingChange(proposed_at=NOW, approved_at=NOW - 1, effective_at=NOW)


def test_policy_successor_must_be_the_next_version() -> None:
    current = default_policy()
    nxt = parse_policy({**current.to_json(), "version": 2})
    check_policy_successor(current, nxt)
    with pytest.raises(PolicyVersionError, match="must have version 2, got 1"):
        check_policy_successor(current, current)
    with pytest.raises(PolicyVersionError, match="must have version 2, got 3"):
        check_policy_successor(current, parse_policy({**current.to_json(), "version": 3}))
