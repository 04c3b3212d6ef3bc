"""Consistent verbs: `verify audit` beside the other offline checks, `bundle offline-sign`
beside the other bundle steps, `cancel` for calling off a ceremony as a withdrawal, and
proposals named alike (`addressbook propose-add`); the old names still run, unlisted."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import World
from typer.testing import CliRunner

from tandem.cli import audit_cmds, exit_codes
from tandem.cli import main as cli_main

PASSPHRASE = "cli verbs passphrase"
RENAMED = (
    (("verify", "audit"), ("audit", "verify")),
    (("bundle", "offline-sign"), ("offline-sign",)),
    (("ceremony", "cancel"), ("ceremony", "abort")),
    (("addressbook", "propose-add"), ("addressbook", "add")),
    (("addressbook", "propose-remove"), ("addressbook", "remove")),
)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli_main.app, list(args), env={"COLUMNS": "200"})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_new_names_are_listed_and_old_ones_still_run_unlisted() -> None:
    for new, old in RENAMED:
        listed_new = run(*new[:-1], "--help")[1].split("Commands:")[1].split("Exit status:")[0]
        listed_old = run(*old[:-1], "--help")[1].split("Commands:")[1].split("Exit status:")[0]
        assert new[-1] in [line.split()[0] for line in listed_new.splitlines() if line.strip()], new
        assert old[-1] not in [line.split()[0] for line in listed_old.splitlines() if line.strip()], old
        new_help, old_help = run(*new, "--help")[1], run(*old, "--help")[1]
        assert new_help.split("\n", 1)[1] == old_help.split("\n", 1)[1], (new, old)


@pytest.fixture
def exported(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(audit_cmds, "Client", lambda server: world.client)
    keystore = tmp_path / "olga.keystore"
    keystore.write_bytes(world["olga"].to_keystore(PASSPHRASE, log2_n=14))
    status, out = run("audit", "export", "--out", str(tmp_path / "export"), "-k", str(keystore))
    assert status == exit_codes.OK, out
    return tmp_path / "export" / "audit.jsonl"


def test_verify_audit_and_its_old_name_verify_the_same_export(exported: Path) -> None:
    status, new = run("verify", "audit", str(exported))
    assert status == exit_codes.OK, new
    status, old = run("audit", "verify", str(exported))
    assert status == exit_codes.OK, old
    assert new == old
    lines = exported.read_text().splitlines()
    exported.write_text("\n".join([*lines[:2], lines[3], lines[2], *lines[4:]]) + "\n")
    status, out = run("verify", "audit", str(exported))
    assert status == exit_codes.REFUSED, out
