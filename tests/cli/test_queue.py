"""`tandem queue`: what waits for this member, by name, with approvals and time left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import World, new_member
from tests.helpers.cli import wire
from tests.helpers.withdrawals import btc_intent, setup
from typer.testing import CliRunner

from tandem.cli import exit_codes
from tandem.cli import main as cli_main
from tandem.core.roles import Role

PASSPHRASE = "cli queue passphrase"


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE)


def test_the_queue_shows_what_waits_for_a_custodian(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000))
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    result = CliRunner().invoke(cli_main.app, ["queue", "-k", str(tmp_path / "bob.keystore")])
    assert result.exit_code == exit_codes.OK, result.output
    (row,) = [line for line in result.output.splitlines() if created["id"] in line]
    assert "0.0005 BTC" in row
    assert "alice" in row
    assert "0/1" in row
    assert "yours to decide" in row
    assert created["fingerprint"] in row
    (prow,) = [line for line in result.output.splitlines() if prop["id"] in line]
    assert "add member nina as custodian" in prow

    raw = CliRunner().invoke(cli_main.app, ["queue", "-k", str(tmp_path / "bob.keystore"), "--json"])
    doc = json.loads(raw.output)
    assert [w["id"] for w in doc["withdrawals"]] == [created["id"]]
    assert prop["id"] in [p["id"] for p in doc["proposals"]]
