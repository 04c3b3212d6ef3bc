"""THREATS 28: a Bitcoin fee far above policy (rate, absolute, share of the amount) is
refused, and the worst-case fee counts against the rule's limits. Each attack goes
through the real client and API; the approving member's own review shows the fee."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scripts.harness import funding_tx, utxo
from tests.adversarial.limits_helpers import refused
from tests.conftest import World
from tests.helpers.withdrawals import Setup, btc_intent, policy_doc, rule, setup
from typer.testing import CliRunner

from tandem.cli import withdrawal_cmds
from tandem.cli.main import app
from tandem.client import withdrawal as cw
from tandem.core.policy import CHAIN_FEE_CAPS
from tandem.core.withdrawal.intent import MAX_UTXOS


def big_utxos(s: Setup, n: int, amount: int = 100_000_000) -> list[dict[str, Any]]:
    """``n`` inputs of ``amount`` each, every one proven by its own funding transaction."""
    return [utxo(funding_tx(s.btc_from, [amount]), 0) for _ in range(n)]


def test_t28_200_inputs_at_10000_sat_per_vbyte_refused(world: World) -> None:
    """The issue's case: the parser allows 10,000 sat/vB and 200 inputs, a fee of over
    1.3 BTC for a 0.001 BTC withdrawal. No rule needed: the chain's caps refuse it."""
    s = setup(world)
    intent = btc_intent(s, amount=100_000, fee_rate=10_000, spend=big_utxos(s, MAX_UTXOS))
    err = refused(
        world, "fee_exceeded", "withdrawal.create", world.client.withdrawals.create, world["alice"], intent
    )
    assert err.http_status == 403
    assert "fee" in err.message
    assert world.client.withdrawals.list(world["olga"]) == []


def test_t28_fee_rate_above_the_chain_cap_refused_even_with_two_inputs(world: World) -> None:
    s = setup(world)
    cap = CHAIN_FEE_CAPS["bitcoin"].max_fee_rate
    assert cap is not None
    intent = btc_intent(s, amount=100_000, fee_rate=cap + 1, spend=big_utxos(s, 2))
    err = refused(
        world, "fee_exceeded", "withdrawal.create", world.client.withdrawals.create, world["alice"], intent
    )
    assert "fee rate" in err.message


def test_t28_rule_caps_the_fee_as_a_share_of_the_amount(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("default", fees={"max_fee_bps": 500})]))
    # ~209 vB at 50 sat/vB is ~10,450 sat: about 21% of 50,000.
    err = refused(
        world,
        "fee_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, amount=50_000, fee_rate=50),
    )
    assert "of the amount" in err.message
    # At 5 sat/vB (~2%) the same withdrawal is fine.
    ok = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000, fee_rate=5))
    assert ok["status"] == "pending"


def test_t28_rule_caps_the_absolute_fee_and_the_rate(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("default", fees={"max_fee": "2000", "max_fee_rate": "20"})]))
    refused(
        world,
        "fee_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, fee_rate=21),
    )
    err = refused(
        world,
        "fee_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, fee_rate=20, spend=big_utxos(s, 12, 10_000)),
    )
    assert "exceeds the limit 2000" in err.message


def test_t28_worst_case_fee_counts_against_max_amount(world: World) -> None:
    """An amount just under max_amount passes on its own; with its fee it does not."""
    s = setup(world, policy=policy_doc(2, [rule("default", max_amount="50500")]))
    err = refused(
        world,
        "limit_exceeded",
        "withdrawal.create",
        world.client.withdrawals.create,
        world["alice"],
        btc_intent(s, amount=50_000, fee_rate=5),
    )
    assert "worst-case fee" in err.message


def test_t28_the_approvers_review_shows_fee_rate_share_and_warns(world: World) -> None:
    s = setup(world)
    # ~209 vB at 40 sat/vB: ~8,360 sat, about 17% of 50,000 (warning above 10%).
    w = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000, fee_rate=40))
    view = world.client.withdrawals.get(world["bob"], w["id"])
    server = view["fee_review"]
    assert server["asset"] == "BTC"
    assert server["rate_unit"] == "sat/vB"
    assert server["warning"] is not None

    # The client computes its own from the raw transaction and the prevouts.
    mine = cw.review(view).fee
    assert mine is not None
    assert mine["fee"] == view["decoded"]["fee"] == w["fee"]
    assert int(mine["rate"]) >= 40
    assert mine["share"].endswith("%")
    assert mine["share_bps"] > 1000
    assert mine["warning"] is not None
    assert "of the amount" in mine["warning"]

    # A server that claims a lower fee share or hides the warning changes nothing here.
    lying = {**view, "fee_review": {**server, "warning": None, "share": "0.01%"}, "fee": "1"}
    assert cw.review(lying).fee == mine

    calm = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000, fee_rate=2))
    review = cw.review(world.client.withdrawals.get(world["bob"], calm["id"])).fee
    assert review is not None
    assert review["warning"] is None


PASSPHRASE = "fee cli passphrase"


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(withdrawal_cmds, "Client", lambda server: world.client)
    (tmp_path / "bob.ks").write_bytes(world["bob"].to_keystore(PASSPHRASE, log2_n=14))
    return CliRunner()


def test_t28_cli_review_prints_the_fee_and_the_warning(world: World, cli: CliRunner, tmp_path: Path) -> None:
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000, fee_rate=40))
    result = cli.invoke(app, ["withdraw", "show", w["id"], "-k", str(tmp_path / "bob.ks")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    sats = int(w["fee"])
    assert f"fee (worst case) │ {('0.' + f'{sats:08d}').rstrip('0')} BTC ({sats:,} sat)" in text
    assert f"fee rate {w['intent']['bitcoin']['fee_rate']} sat/vB" in text
    assert "of the amount" in text
    assert "warning:" in text
