"""The `tandem ceremony`, `tandem keyset` and `tandem verify transcript` commands, driven
against the test server (the CLI's client factory is pointed at it)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.conftest import World
from typer.testing import CliRunner

from tandem.cli import common, exit_codes
from tandem.cli.main import app
from tandem.localtime import local_iso

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery"


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(common, "client", lambda server: world.client)
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    for name in ("alice", "bob", "olga"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "keystore.json").write_bytes(world[name].to_keystore(PASSPHRASE, log2_n=14))
    return CliRunner()


def invoke(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def ks(tmp_path: Path, name: str) -> list[str]:
    return ["--keystore", str(tmp_path / name / "keystore.json")]


def test_validate_offline_names_the_field(tmp_path: Path) -> None:
    runner = CliRunner()
    code, out = invoke(runner, "ceremony", "validate", str(ROOT / "ceremonies/bitcoin-cold.toml"))
    assert code == 0, out
    assert "valid keygen ceremony 'bitcoin-cold'" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(
        (ROOT / "ceremonies/bitcoin-cold.toml")
        .read_text()
        .replace('network = "mainnet"', 'network = "mainet"')
    )
    code, out = invoke(runner, "ceremony", "validate", str(bad))
    assert code == exit_codes.BAD_INPUT
    assert "ceremony.chains[0].network" in out
    assert "refused" in out


def test_validate_output_is_never_broken_across_lines(tmp_path: Path) -> None:
    """A long path must not push the definition hash onto a line of its own: output
    is read by scripts and copied by people, whatever the terminal width."""
    deep = tmp_path / ("a-rather-long-folder-name-" * 4)
    deep.mkdir()
    target = deep / "bitcoin-cold.toml"
    target.write_text((ROOT / "ceremonies/bitcoin-cold.toml").read_text())
    result = CliRunner().invoke(app, ["ceremony", "validate", str(target)], env={"COLUMNS": "40"})
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(str(target))
    assert "valid keygen ceremony 'bitcoin-cold'" in first
    assert re.search(r"definition hash [0-9a-f]{64}", first), first


def test_validate_against_the_deployment(cli: CliRunner, tmp_path: Path) -> None:
    three = tmp_path / "three.toml"
    three.write_text(
        (ROOT / "ceremonies/bitcoin-cold.toml").read_text().replace("custodian = 1", "custodian = 3")
    )
    code, out = invoke(cli, "ceremony", "validate", str(three))
    assert code == 0, out  # offline it is well formed
    code, out = invoke(
        cli, "ceremony", "validate", str(three), "--server", "http://test", *ks(tmp_path, "olga")
    )
    assert code == exit_codes.BAD_INPUT
    assert "ceremony.approvals.custodian" in out


def test_full_ceremony_through_the_cli(cli: CliRunner, world: World, tmp_path: Path) -> None:
    definition = str(ROOT / "ceremonies/solana-cold.toml")
    code, out = invoke(cli, "ceremony", "propose", definition, *ks(tmp_path, "alice"))
    assert code == 0, out
    [ceremony] = world.svc.ceremonies.list_ceremonies()["items"]
    cid = ceremony["id"]
    # the contribution waits beside the keystore, readable only by its owner
    state_file = tmp_path / "alice" / f"contrib-{cid}-{world['alice'].member_id}.json"
    assert state_file.exists()
    assert state_file.stat().st_mode & 0o077 == 0

    code, out = invoke(cli, "ceremony", "show", cid, *ks(tmp_path, "bob"), "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["digest_computed_locally"] == shown["digest"]
    # Read by a person: names and local times, the digest computed here.
    code, out = invoke(cli, "ceremony", "show", cid, *ks(tmp_path, "bob"))
    assert code == 0, out
    assert f"proposer alice ({world['alice'].member_id}), expires at {local_iso(shown['expires_at'])}" in out
    assert shown["digest"] in out
    assert "approvals: none yet" in out

    # a reveal before the approvals is refused with the missing count
    code, out = invoke(cli, "ceremony", "reveal", cid, *ks(tmp_path, "alice"))
    assert code == 1
    assert "custodian 0/1" in out
    assert state_file.exists()  # kept for the real reveal

    world.clock.advance(30)
    code, out = invoke(cli, "ceremony", "approve", cid, "--totp-from-keystore", *ks(tmp_path, "bob"))
    assert code == 0, out
    assert "revealing" in out
    for name in ("alice", "bob"):
        code, out = invoke(cli, "ceremony", "reveal", cid, *ks(tmp_path, name))
        assert code == 0, out
    assert "executed" in out
    assert not state_file.exists()
    for name in ("alice", "bob"):
        code, out = invoke(cli, "ceremony", "countersign", cid, *ks(tmp_path, name))
        assert code == 0, out
    assert "complete" in out

    transcript = tmp_path / "transcript.json"
    code, out = invoke(cli, "ceremony", "transcript", cid, "--out", str(transcript), *ks(tmp_path, "olga"))
    assert code == 0, out
    code, out = invoke(cli, "verify", "transcript", str(transcript))
    assert code == 0, out
    assert "transcript verifies" in out

    doc = json.loads(transcript.read_text())
    doc["addresses"][0]["segregation"] = "client-omnibus"
    transcript.write_text(json.dumps(doc))
    code, out = invoke(cli, "verify", "transcript", str(transcript))
    assert code == 1
    assert "segregation" in out

    code, out = invoke(cli, "keyset", "list", *ks(tmp_path, "olga"))
    assert code == 0, out
    keyset_id = doc["keyset"]["id"]
    assert keyset_id in out
    export = tmp_path / "export.json"
    code, out = invoke(cli, "keyset", "export", keyset_id, "--out", str(export), *ks(tmp_path, "alice"))
    assert code == 0, out
    assert json.loads(export.read_text())["keyset"]["id"] == keyset_id
    code, out = invoke(cli, "keyset", "import", str(export), *ks(tmp_path, "alice"))
    assert code == exit_codes.CONFLICT
    assert "already present" in out


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for group, commands in (
        (
            "ceremony",
            (
                "validate",
                "propose",
                "approve",
                "reject",
                "abort",
                "reveal",
                "countersign",
                "show",
                "list",
                "transcript",
            ),
        ),
        ("keyset", ("list", "show", "export", "import", "approve-import")),
        ("verify", ("transcript",)),
    ):
        for command in commands:
            result = runner.invoke(app, [group, command, "--help"])
            assert result.exit_code == 0, (group, command, result.output)
            assert "Usage" in result.output
