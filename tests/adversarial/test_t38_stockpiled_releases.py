"""THREATS 38: stockpiled releases. Velocity counted requests by creation time, so
requests made in separate windows could all be approved, released together and
broadcast at once. Now velocity counts at release (what was released in the window,
plus this one); every release has a lifetime; and its end is recorded by a signed
action (broadcast with its txid, confirmed, abandoned), each an audit entry. A release
nobody recorded within its lifetime reads as ``lapsed``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.adversarial.limits_helpers import count_ok, refused
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.withdrawals import (
    btc_intent,
    create_approved,
    eth_intent,
    fresh_sessions,
    policy_doc,
    rule,
    setup,
)
from typer.testing import CliRunner

from tandem.cli import withdrawal_cmds
from tandem.cli.main import app

HOUR = 3600
LONG = {"request_ttl_seconds": 7 * 86400, "approval_ttl_seconds": 7 * 86400}


def test_t38_requests_from_separate_windows_cannot_be_released_together(world: World) -> None:
    velocity = {"amount": "150000", "period_seconds": HOUR}
    s = setup(world, policy=policy_doc(2, [rule("capped", velocity=velocity, **LONG)]))
    stock = []
    for _ in range(3):  # each passes velocity at creation: alone in its hour
        stock.append(create_approved(world, btc_intent(s, amount=60_000)))
        world.clock.advance(HOUR + 1)
        fresh_sessions(world)
    assert [w["status"] for w in stock] == ["approved"] * 3
    assert world.client.withdrawals.release(world["bob"], stock[0]["id"])["status"] == "released"
    assert world.client.withdrawals.release(world["bob"], stock[1]["id"])["status"] == "released"
    err = refused(
        world,
        "velocity_exceeded",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        stock[2]["id"],
    )
    assert "already left wallet" in err.message
    assert count_ok(world, "withdrawal.released") == 2
    # Recording a broadcast does not take a release out of the window: it left.
    world.client.withdrawals.record_broadcast(world["bob"], stock[0]["id"], txid=_txid(world, stock[0]["id"]))
    refused(
        world,
        "velocity_exceeded",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        stock[2]["id"],
    )


def _txid(world: World, wid: str) -> str:
    txid = world.client.withdrawals.get(world["olga"], wid)["txid"]
    assert isinstance(txid, str)
    return txid


def test_t38_every_release_has_a_lifetime_and_lapses_unrecorded(world: World) -> None:
    s = setup(world, policy=policy_doc(2, [rule("default", release_ttl_seconds=600)]))
    w = create_approved(world, btc_intent(s))
    out = world.client.withdrawals.release(world["bob"], w["id"])
    assert out["release_expires_at"] == out["released_at"] + 600
    assert out["needs_attention"] is False
    released = [e for e in audit_entries(world) if e["kind"] == "withdrawal.released"]
    assert released[-1]["data"]["release_expires_at"] == out["release_expires_at"]
    world.clock.advance(600)
    fresh_sessions(world)
    view = world.client.withdrawals.get(world["olga"], w["id"])
    assert view["status"] == "lapsed"
    assert view["needs_attention"] is True
    assert [x["id"] for x in world.client.withdrawals.list(world["olga"], status="lapsed")] == [w["id"]]
    # A lapsed release can still be recorded: it is what the operator must do next.
    world.client.withdrawals.record_broadcast(world["cora"], w["id"], txid=out["txid"])
    assert world.client.withdrawals.get(world["olga"], w["id"])["status"] == "broadcast"


def test_t38_broadcast_must_name_the_released_transaction(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    out = world.client.withdrawals.release(world["bob"], w["id"])
    err = refused(
        world,
        "txid_mismatch",
        "withdrawal.broadcast",
        world.client.withdrawals.record_broadcast,
        world["bob"],
        w["id"],
        txid="ab" * 32,
    )
    assert out["txid"] in err.message
    refused(
        world,
        "invalid_input",
        "withdrawal.broadcast",
        world.client.withdrawals.record_broadcast,
        world["bob"],
        w["id"],
        txid="nope",
    )
    done = world.client.withdrawals.record_broadcast(world["bob"], w["id"], txid=out["txid"].upper())
    assert done["status"] == "broadcast"
    assert done["broadcast_at"] == world.clock()
    confirmed = world.client.withdrawals.confirm(world["cora"], w["id"])
    assert confirmed["status"] == "confirmed"
    kinds = [e["kind"] for e in audit_entries(world)]
    assert kinds.count("withdrawal.broadcast") == 1
    assert kinds.count("withdrawal.confirmed") == 1
    # A confirmed release is final.
    refused(
        world,
        "invalid_state",
        "withdrawal.abandon",
        world.client.withdrawals.abandon,
        world["bob"],
        w["id"],
        reason="x",
    )


def test_t38_ends_are_recorded_only_for_a_release_and_only_by_the_sides(world: World) -> None:
    s = setup(world)
    w = create_approved(world, eth_intent(s))
    refused(
        world,
        "invalid_state",
        "withdrawal.confirm",
        world.client.withdrawals.confirm,
        world["bob"],
        w["id"],
    )
    refused(
        world,
        "invalid_state",
        "withdrawal.abandon",
        world.client.withdrawals.abandon,
        world["bob"],
        w["id"],
        reason="x",
    )
    world.client.withdrawals.release(world["bob"], w["id"])
    refused(
        world,
        "role_not_allowed",
        "withdrawal.abandon",
        world.client.withdrawals.abandon,
        world["olga"],
        w["id"],
        reason="x",
    )
    refused(
        world,
        "invalid_input",
        "withdrawal.abandon",
        world.client.withdrawals.abandon,
        world["bob"],
        w["id"],
        reason="",
    )
    done = world.client.withdrawals.abandon(world["bob"], w["id"], reason="stuck, replaced by a higher fee")
    assert done["status"] == "abandoned"
    entry = [e for e in audit_entries(world) if e["kind"] == "withdrawal.abandoned"][-1]
    assert entry["data"]["reason"] == "stuck, replaced by a higher fee"
    refused(
        world,
        "invalid_state",
        "withdrawal.broadcast",
        world.client.withdrawals.record_broadcast,
        world["bob"],
        w["id"],
        txid=done["txid"],
    )


PASSPHRASE = "limits cli passphrase"


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(withdrawal_cmds, "Client", lambda server: world.client)
    for name in ("bob", "cora"):
        (tmp_path / f"{name}.ks").write_bytes(world[name].to_keystore(PASSPHRASE, log2_n=14))
    return CliRunner()


def test_t38_cli_records_broadcast_confirm_and_abandon(world: World, cli: CliRunner, tmp_path: Path) -> None:
    s = setup(world)
    first = create_approved(world, btc_intent(s))
    second = create_approved(world, eth_intent(s))
    out1 = world.client.withdrawals.release(world["bob"], first["id"])
    world.client.withdrawals.release(world["bob"], second["id"])
    bob = str(tmp_path / "bob.ks")

    def run(*args: str, ok: bool = True) -> str:
        result = cli.invoke(app, list(args))
        assert (result.exit_code == 0) is ok, result.output
        return result.output

    assert "is not the transaction released" in run(
        "withdraw", "broadcast-recorded", first["id"], "--txid", "00" * 32, "-k", bob, ok=False
    )
    assert "broadcast" in run(
        "withdraw", "broadcast-recorded", first["id"], "--txid", out1["txid"], "-k", bob
    )
    run("withdraw", "confirm", first["id"], "-k", str(tmp_path / "cora.ks"))
    run("withdraw", "abandon", second["id"], "--reason", "never sent", "-k", bob)
    statuses = {w["id"]: w["status"] for w in world.client.withdrawals.list(world["olga"])}
    assert statuses == {first["id"]: "confirmed", second["id"]: "abandoned"}
