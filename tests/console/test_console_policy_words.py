"""A policy in sentences beside its JSON: durations in hours, amounts in coins where the
rule names its asset, and nothing at all for a document that does not parse."""

from __future__ import annotations

from tests.helpers.withdrawals import policy_doc, rule

from tandem.console.policy_words import duration, policy_words


def test_durations_read_in_days_hours_and_minutes() -> None:
    assert duration(86400) == "24 h"
    assert duration(172800) == "2 days"
    assert duration(5400) == "1 h 30 min"
    assert duration(45) == "45 s"
    assert duration(0) == "0 s"


def test_each_rule_says_what_it_covers_and_needs() -> None:
    doc = policy_doc(
        2,
        [
            rule("large", custodians=2, match={"min_amount": "1000000"}, allowlist_only=True),
            rule("default", custodians=1, allowlist_only=True),
        ],
        delay=86400,
    )
    lines = policy_words(doc)
    assert lines[0].startswith("Version 2.")
    assert "“large”: covers withdrawals of at least 1,000,000 base units of the asset" in lines[1]
    assert "needs 2 custodians to approve" in lines[1]
    assert "only to address-book destinations" in lines[1]
    assert "a request stays open 24 h, an approval counts for 1 h" in lines[1]
    assert "“default”: covers every withdrawal no rule above covers" in lines[2]
    assert "needs 1 custodian to approve" in lines[2]
    assert "waits 24 h after approval" in lines[-1]


def test_an_amount_is_in_coins_when_the_rule_names_asset_and_network() -> None:
    doc = policy_doc(
        3,
        [rule("btc", custodians=1, match={"asset": "BTC", "network": "testnet", "min_amount": "50000"})],
        delay=3600,
    )
    assert "of at least 0.0005 BTC" in policy_words(doc)[1]


def test_a_document_that_does_not_parse_has_no_words() -> None:
    assert policy_words({"version": 1}) == []
    assert policy_words("not a policy") == []
