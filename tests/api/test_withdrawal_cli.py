"""The `tandem withdraw|policy|bundle|offline-sign` commands, driven through Typer against
the in-process server of the ``world`` fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import World
from tests.helpers.withdrawals import BTC_DEST, btc_intent, setup, verify_bitcoin
from typer.testing import CliRunner

from tandem.cli import withdrawal_cmds
from tandem.cli.main import app
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role

PASSPHRASE = "cli test passphrase"


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(withdrawal_cmds, "Client", lambda server: world.client)
    monkeypatch.setattr(withdrawal_cmds, "_now", world.clock)
    for name in ("alice", "bob", "cora"):
        (tmp_path / f"{name}.ks").write_bytes(world[name].to_keystore(PASSPHRASE, log2_n=14))
    return CliRunner()


def run(cli: CliRunner, *args: str, ok: bool = True) -> str:
    result = cli.invoke(app, list(args))
    assert (result.exit_code == 0) is ok, result.output
    return result.output


def test_cli_request_review_approve_release(world: World, cli: CliRunner, tmp_path: Path) -> None:
    s = setup(world)
    intent_file = tmp_path / "intent.json"
    intent_file.write_text(json.dumps(btc_intent(s)))
    run(cli, "withdraw", "create", str(intent_file), "-k", str(tmp_path / "alice.ks"))
    (w,) = world.client.withdrawals.list(world["olga"])
    out = run(cli, "withdraw", "show", w["id"], "-k", str(tmp_path / "bob.ks"))
    assert w["fingerprint"] in out

    world.clock.advance(30)
    out = run(
        cli,
        "withdraw",
        "approve",
        w["id"],
        "-k",
        str(tmp_path / "bob.ks"),
        "--totp-from-keystore",
        "--fingerprint",
        "0000-0000-0000-0000",
        ok=False,
    )
    assert "refused" in out
    assert "do not approve; call the requester back on a number you already know" in out
    assert "needs 1 custodian approval" in out  # the quorum in words, not a dict
    world.clock.advance(30)
    out = run(
        cli,
        "withdraw",
        "approve",
        w["id"],
        "-k",
        str(tmp_path / "bob.ks"),
        "--totp-from-keystore",
        "--fingerprint",
        w["fingerprint"],
    )
    assert "your approval is recorded; the request is now approved" in out

    out = run(cli, "policy", "show", "--withdrawal", w["id"], "-k", str(tmp_path / "bob.ks"))
    assert "matched" in out

    retry, tx = tmp_path / "retry.json", tmp_path / "tx.json"
    args = (
        "withdraw",
        "release",
        w["id"],
        "-k",
        str(tmp_path / "cora.ks"),
        "--retry-file",
        str(retry),
        "--out",
        str(tx),
    )
    run(cli, *args)
    first = json.loads(tx.read_text())
    run(cli, *args)  # the same signed request again: the first answer, no second signature
    assert json.loads(tx.read_text()) == first
    verify_bitcoin(
        first["signed_tx"],
        world.client.withdrawals.get(world["olga"], w["id"])["prevouts"],
        s.keyset.keys[0][1],
    )
    run(cli, "withdraw", "release", w["id"], "-k", str(tmp_path / "cora.ks"), ok=False)


def test_cli_review_never_cuts_an_address_short(world: World, cli: CliRunner, tmp_path: Path) -> None:
    """In a narrow terminal the approver still sees the whole destination and change
    address: a cell that does not fit is folded, never ended with an ellipsis."""
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    result = cli.invoke(
        app, ["withdraw", "show", created["id"], "-k", str(tmp_path / "bob.ks")], env={"COLUMNS": "40"}
    )
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    flat = "".join(ch for ch in result.output if ch not in "│┃ \n")
    assert BTC_DEST in flat
    source = next(a["address"] for a in s.keyset.addresses if a["chain"] == "bitcoin")
    assert source in flat  # "from", where the change returns as well


def test_cli_offline_bundle_round_trip(world: World, cli: CliRunner, tmp_path: Path) -> None:
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    world.client.withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    signer = MemberSecrets.generate(name="cold signer", role=Role.CUSTODIAN)
    (tmp_path / "cold.ks").write_bytes(signer.to_keystore(PASSPHRASE, log2_n=14))
    (tmp_path / "cold.card").write_text(json.dumps(signer.card().to_json()))
    bundle, result = tmp_path / "bundle.json", tmp_path / "result.json"
    run(
        cli,
        "bundle",
        "export",
        created["id"],
        "--signer-card",
        str(tmp_path / "cold.card"),
        "--out",
        str(bundle),
        "-k",
        str(tmp_path / "alice.ks"),
    )
    out = run(
        cli,
        "offline-sign",
        str(bundle),
        "--signer-key",
        str(tmp_path / "cold.ks"),
        "--out",
        str(result),
        ok=False,
    )
    assert "custodian" in out
    run(cli, "bundle", "add-share", str(bundle), "-k", str(tmp_path / "cora.ks"))
    run(cli, "offline-sign", str(bundle), "--signer-key", str(tmp_path / "cold.ks"), "--out", str(result))
    run(cli, "bundle", "import", str(result), "-k", str(tmp_path / "bob.ks"))
    done = world.client.withdrawals.get(world["olga"], created["id"])
    assert done["status"] == "released"
    verify_bitcoin(done["signed_tx"], done["prevouts"], s.keyset.keys[0][1])
