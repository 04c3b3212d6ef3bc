"""What the console renders without a browser: amounts in coins and tokens by integer
arithmetic, the policy diff, time left, CSV cells a spreadsheet will not run."""

from __future__ import annotations

from tandem import humanize
from tandem.console.app import _csv_cell, _safe_next, normal_fingerprint, normal_totp
from tandem.console.pages import policy_diff, time_left


def test_amounts_in_the_units_a_person_reads() -> None:
    assert humanize.measure("50000", "BTC", network="testnet").text == "0.0005 BTC"
    assert humanize.measure("50000", "BTC", network="testnet").base == "50,000 sat"
    assert humanize.measure("2100000000000000", "BTC", network="mainnet").text == "21,000,000 BTC"
    assert humanize.measure(10**15, "ETH", network="sepolia").text == "0.001 ETH"
    assert humanize.measure(1, "ETH", network="sepolia").text == "0.000000000000000001 ETH"
    usdc = humanize.measure("1234567", "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238", network="sepolia")
    assert usdc.text == "1.234567 USDC"
    assert usdc.known
    # The same contract address on another network is not that token: base units, said so.
    other = humanize.measure("1234567", "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238", network="mainnet")
    assert not other.known
    assert "base units of token" in other.text
    assert "1,234,567" in other.text


def test_policy_diff_marks_every_changed_line() -> None:
    old = {"version": 1, "rules": [{"name": "default", "approvals": {"custodian": 1}}]}
    new = {"version": 2, "rules": [{"name": "default", "approvals": {"custodian": 2}}]}
    diff = policy_diff(old, new)
    assert ("del", '  "version": 1') in diff
    assert ("add", '  "version": 2') in diff
    assert ("del", '        "custodian": 1') in diff
    assert ("add", '        "custodian": 2') in diff
    assert all(kind in ("same", "add", "del") for kind, _ in diff)
    assert not [line for kind, line in policy_diff(old, old) if kind != "same"]


def test_time_left_and_inputs() -> None:
    assert time_left(1000, 1000) == "expired"
    assert time_left(1000 + 59, 1000) == "1 min"
    assert time_left(1000 + 3 * 3600 + 120, 1000) == "3 h 2 min"
    assert time_left(1000 + 86400 + 7200, 1000) == "1 d 2 h"
    assert normal_fingerprint(" 7855 551E-ba3c 772a ") == "7855-551e-ba3c-772a"
    assert normal_totp("123 456") == "123456"
    assert _csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _csv_cell("withdrawal wd_1") == "withdrawal wd_1"
    for target in ("//evil.example/", "http://evil.example/", "", None, "/\\evil"):
        assert _safe_next(target) == "/"
    assert _safe_next("/withdrawals/wd_1") == "/withdrawals/wd_1"


def test_a_destination_is_labelled_by_the_entry_for_its_asset() -> None:
    from tandem.console.pages import Directory

    addr, usdc = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
    d = Directory()
    d.labels[("ethereum", "mainnet", addr)] = [
        {"label": "Prime broker", "asset": None},
        {"label": "Prime broker USDC", "asset": usdc},
    ]
    assert d.label("ethereum", "mainnet", addr, "ETH") == "Prime broker"
    assert d.label("ethereum", "mainnet", addr, usdc.lower()) == "Prime broker USDC"
