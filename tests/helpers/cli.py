"""Driving the CLI in tests: one invocation helper and one way to point it at a test world."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import World
from typer.testing import CliRunner

from tandem.cli import common, withdrawal_cmds
from tandem.cli import main as cli_main


def invoke(
    *args: str, input: str | None = None, columns: int = 200, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run ``tandem ARGS``; no traceback may reach the output, and nothing may escape
    but the exit."""
    result = CliRunner().invoke(
        cli_main.app, list(args), input=input, env={"COLUMNS": str(columns), **(env or {})}
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def wire(
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    passphrase: str,
    *,
    keep_totp_seed: bool = True,
    world_clock: bool = False,
) -> World:
    """Point every CLI command at ``world``'s server and write each member's keystore
    to ``tmp_path/<name>.keystore`` under ``passphrase``."""
    monkeypatch.setenv("TANDEM_PASSPHRASE", passphrase)
    monkeypatch.delenv("TANDEM_TOTP", raising=False)
    monkeypatch.delenv("TANDEM_KEEP_TOTP_SEED", raising=False)
    monkeypatch.setattr(cli_main, "Client", lambda server: world.client)
    monkeypatch.setattr(withdrawal_cmds, "Client", lambda server: world.client)
    monkeypatch.setattr(common, "client", lambda server: world.client)
    if world_clock:
        monkeypatch.setattr(withdrawal_cmds, "_now", world.clock)
    for name in world.members:
        data = world[name].to_keystore(passphrase, log2_n=14, keep_totp_seed=keep_totp_seed)
        (tmp_path / f"{name}.keystore").write_bytes(data)
    return world


def ks(tmp_path: Path, name: str) -> list[str]:
    """The ``-k`` option for the keystore :func:`wire` wrote for ``name``."""
    return ["-k", str(tmp_path / f"{name}.keystore")]
