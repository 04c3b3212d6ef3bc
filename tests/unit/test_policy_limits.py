"""Fees and wallet-level limits as policy data: parsing, defaults, and evaluation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tandem.core.canonical import loads_strict
from tandem.core.policy import (
    CHAIN_FEE_CAPS,
    DEFAULT_FEE_WARN_BPS,
    DEFAULT_RELEASE_TTL_SECONDS,
    AddressBookEntry,
    Fee,
    FeeLimits,
    PastWithdrawal,
    WithdrawalFacts,
    evaluate,
    fee_share_text,
    parse_policy,
    velocity_window_seconds,
)
from tandem.core.roles import Role
from tandem.errors import (
    FeeExceededError,
    FloatNotAllowedError,
    InputError,
    LimitExceededError,
    UnknownFieldError,
    VelocityExceededError,
    WalletLimitExceededError,
)

NOW = 1_700_000_000
WALLET = "ks_ab12"
DEST = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
BOOK = [AddressBookEntry(chain="bitcoin", network="mainnet", address=DEST, label="vault")]


def doc(rule_extra: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {
        "version": 2,
        "change_delay_seconds": 0,
        "rules": [
            {
                "name": "default",
                "match": {},
                "approvals": {"custodian": 1},
                "allowlist_only": True,
                "request_ttl_seconds": 86400,
                "approval_ttl_seconds": 3600,
                **(rule_extra or {}),
            }
        ],
        **top,
    }


def facts(amount: int = 100_000, fee: Fee | None = None, chain: str = "bitcoin") -> WithdrawalFacts:
    asset = "BTC" if chain == "bitcoin" else "ETH"
    return WithdrawalFacts(
        wallet=WALLET, chain=chain, network="mainnet", asset=asset, amount=amount, destination=DEST, fee=fee
    )


def btc_fee(amount: int, rate: int = 5) -> Fee:
    return Fee(amount=amount, asset="BTC", rate=rate)


def decide(
    policy_doc: dict[str, Any], f: WithdrawalFacts, history: list[PastWithdrawal] | None = None
) -> Any:
    return evaluate(parse_policy(policy_doc), f, now=NOW, address_book=BOOK, history=history or [])


# --- parsing -------------------------------------------------------------------------------


def test_old_documents_keep_their_shape_and_hash() -> None:
    plain = parse_policy(doc())
    assert plain.to_json() == doc()
    assert plain.wallet_limits == ()
    assert plain.rules[0].fees is None


def test_fees_wallet_limits_and_release_ttl_round_trip() -> None:
    d = doc(
        {
            "fees": {"max_fee": "20000", "max_fee_rate": "50", "max_fee_bps": 200, "warn_bps": 100},
            "release_ttl_seconds": 600,
        },
        wallet_limits=[
            {
                "name": "btc-day",
                "match": {"asset": "BTC"},
                "period_seconds": 86400,
                "max_amount": "500000",
                "max_count": 10,
                "escalate": {"above": "200000", "approvals": {"custodian": 2}, "delay_seconds": 3600},
            }
        ],
    )
    policy = parse_policy(d)
    assert policy.to_json() == d
    assert parse_policy(loads_strict(json.dumps(policy.to_json()))) == policy
    assert policy.rules[0].fees == FeeLimits(max_fee=20_000, max_fee_rate=50, max_fee_bps=200, warn_bps=100)
    assert policy.wallet_limits[0].escalate is not None
    assert dict(policy.wallet_limits[0].escalate.approvals) == {Role.CUSTODIAN: 2}
    assert velocity_window_seconds(policy) == 86400
    assert policy.hash() != parse_policy(doc()).hash()


@pytest.mark.parametrize(
    ("rule_extra", "top", "error", "where"),
    [
        ({"fees": {"max_fee": 100}}, {}, InputError, "fees.max_fee"),
        ({"fees": {"max_fee": "1.5"}}, {}, InputError, "fees.max_fee"),
        ({"fees": {"max_fee_bps": 0.5}}, {}, FloatNotAllowedError, "fees.max_fee_bps"),
        ({"fees": {"max_fee_bps": 10_001}}, {}, InputError, "basis points"),
        ({"fees": {"tip": "1"}}, {}, UnknownFieldError, "tip"),
        ({"release_ttl_seconds": 0}, {}, InputError, "release_ttl_seconds"),
        ({}, {"wallet_limits": {}}, InputError, "wallet_limits must be a list"),
        ({}, {"wallet_limits": [{"name": "x", "period_seconds": 60}]}, InputError, "limits nothing"),
        (
            {},
            {"wallet_limits": [{"name": "x", "period_seconds": 0, "max_count": 1}]},
            InputError,
            "period_seconds",
        ),
        (
            {},
            {
                "wallet_limits": [
                    {"name": "x", "period_seconds": 60, "max_count": 1, "match": {"min_amount": "1"}}
                ]
            },
            UnknownFieldError,
            "min_amount",
        ),
        (
            {},
            {"wallet_limits": [{"name": "x", "period_seconds": 60, "escalate": {"above": "1"}}]},
            InputError,
            "approvals or a delay",
        ),
        (
            {},
            {
                "wallet_limits": [
                    {
                        "name": "x",
                        "period_seconds": 60,
                        "escalate": {"above": "1", "approvals": {"auditor": 1}},
                    }
                ]
            },
            InputError,
            "auditor",
        ),
        (
            {},
            {"wallet_limits": [{"name": "x", "period_seconds": 60, "max_count": 1}] * 2},
            InputError,
            "duplicate wallet limit name",
        ),
    ],
)
def test_malformed_fee_and_wallet_limit_fields_refused(
    rule_extra: dict[str, Any], top: dict[str, Any], error: type[Exception], where: str
) -> None:
    with pytest.raises(error, match=where):
        parse_policy(doc(rule_extra, **top))


def test_chain_caps_are_published_and_sane() -> None:
    assert CHAIN_FEE_CAPS["bitcoin"].max_fee == 5_000_000
    assert CHAIN_FEE_CAPS["bitcoin"].max_fee_rate == 2_000
    assert CHAIN_FEE_CAPS["ethereum"].max_fee == 2 * 10**17
    assert CHAIN_FEE_CAPS["ethereum"].max_fee_rate == 10**12
    assert CHAIN_FEE_CAPS["ethereum"].max_priority_fee == 10**11
    with pytest.raises(ValueError, match="basis points"):
        FeeLimits(max_fee_bps=20_000)


def test_fee_share_text_is_exact() -> None:
    assert fee_share_text(630, 1000) == "63.00%"
    assert fee_share_text(1, 3) == "33.33%"
    assert fee_share_text(1045, 50_000) == "2.09%"


# --- evaluating ------------------------------------------------------------------------------


def test_decision_carries_release_ttl_and_warn_threshold() -> None:
    plain = decide(doc(), facts())
    assert plain.release_ttl_seconds == DEFAULT_RELEASE_TTL_SECONDS
    assert plain.fee_warn_bps == DEFAULT_FEE_WARN_BPS
    tuned = decide(doc({"release_ttl_seconds": 600, "fees": {"warn_bps": 50}}), facts())
    assert tuned.to_json()["release_ttl_seconds"] == 600
    assert tuned.to_json()["fee_warn_bps"] == 50


def test_fee_above_the_chain_cap_refused_without_any_rule_fees() -> None:
    d = decide(doc(), facts(fee=btc_fee(5_000_001)))
    assert [type(v) for v in d.violations] == [FeeExceededError]
    d = decide(doc(), facts(fee=btc_fee(1000, rate=2_001)))
    assert "fee rate 2001 sat/vB" in d.violations[0].message
    eth = Fee(amount=10**15, asset="ETH", rate=10**9, priority_rate=10**11 + 1)
    d = decide(doc(), facts(amount=10**16, fee=eth, chain="ethereum"))
    assert "priority fee" in d.violations[0].message


def test_rule_fees_tighten_the_caps() -> None:
    rule = {"fees": {"max_fee": "2000", "max_fee_bps": 100}}
    assert decide(doc(rule), facts(fee=btc_fee(1000))).allowed
    over = decide(doc(rule), facts(fee=btc_fee(2001)))
    assert {v.details["what"] for v in over.violations} == {"fee", "fee share"}
    assert any(line.startswith("fee: at most 2001 BTC") for line in over.explanation)


def test_fee_counts_against_max_amount_and_velocity() -> None:
    assert decide(doc({"max_amount": "100000"}), facts()).allowed
    over = decide(doc({"max_amount": "100000"}), facts(fee=btc_fee(1)))
    assert isinstance(over.violations[0], LimitExceededError)
    velocity = {"velocity": {"amount": "200000", "period_seconds": 3600}}
    past = [PastWithdrawal(wallet=WALLET, asset="BTC", amount=100_000, time=NOW - 10)]
    assert decide(doc(velocity), facts(), past).allowed
    fast = decide(doc(velocity), facts(fee=btc_fee(1)), past)
    assert isinstance(fast.violations[0], VelocityExceededError)


def test_a_fee_in_another_asset_does_not_count_against_the_amount() -> None:
    token = WithdrawalFacts(
        wallet=WALLET,
        chain="ethereum",
        network="mainnet",
        asset="0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        amount=100,
        destination=DEST,
        fee=Fee(amount=10**15, asset="ETH", rate=10**9, priority_rate=10**9),
    )
    assert token.counted_amount == 100


def _limits(**limit: Any) -> dict[str, Any]:
    return doc(wallet_limits=[{"name": "w", "period_seconds": 3600, **limit}])


def _past(n: int, amount: int = 10_000, age: int = 10) -> list[PastWithdrawal]:
    return [PastWithdrawal(wallet=WALLET, asset="BTC", amount=amount, time=NOW - age) for _ in range(n)]


def test_wallet_count_and_total_apply_whichever_rule_matched() -> None:
    assert decide(_limits(max_count=3), facts(), _past(2)).allowed
    many = decide(_limits(max_count=3), facts(), _past(3))
    assert isinstance(many.violations[0], WalletLimitExceededError)
    assert "4 withdrawals" in many.violations[0].message
    # Outside the window, other wallets and other assets do not count.
    others = [
        *_past(3, age=3600),
        PastWithdrawal(wallet="ks_other", asset="BTC", amount=1, time=NOW),
        PastWithdrawal(wallet=WALLET, asset="ETH", amount=1, time=NOW),
    ]
    assert decide(_limits(max_count=1), facts(), others).allowed
    total = decide(_limits(max_amount="120000"), facts(), _past(3))
    assert "130000" in total.violations[0].message


def test_cumulative_threshold_raises_quorum_and_delay() -> None:
    escalate = {"above": "125000", "approvals": {"custodian": 2, "manager": 1}, "delay_seconds": 600}
    below = decide(_limits(escalate=escalate), facts(), _past(2))
    assert dict(below.required) == {Role.CUSTODIAN: 1}
    assert below.time_lock_until is None
    above = decide(_limits(escalate=escalate), facts(), _past(3))
    assert dict(above.required) == {Role.CUSTODIAN: 2, Role.MANAGER: 1}
    assert above.time_lock_until == NOW + 600
    assert above.allowed
    # A wallet limit that does not match the facts changes nothing.
    other = _limits(escalate=escalate, match={"asset": "ETH"})
    assert dict(decide(other, facts(), _past(3)).required) == {Role.CUSTODIAN: 1}
