"""Lists name people and read in local time; --json keeps the raw values; a table piped
to a file keeps every id and digest on its row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import World, new_member
from tests.helpers.cli import wire
from tests.helpers.withdrawals import BTC_DEST, STRANGER_BTC, STRANGER_ETH, allow
from typer.testing import CliRunner

from tandem.cli import exit_codes
from tandem.cli import main as cli_main
from tandem.core.roles import Role
from tandem.localtime import local_iso

PASSPHRASE = "cli json and tables passphrase"


def run(*args: str, columns: int = 50) -> tuple[int, str]:
    result = CliRunner().invoke(cli_main.app, list(args), env={"COLUMNS": str(columns)})
    assert "Traceback" not in result.output
    return result.exit_code, result.output


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE)


def test_proposal_list_names_people_and_local_times(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    ks = ["-k", str(tmp_path / "olga.keystore")]
    status, out = run("proposal", "list", *ks)
    assert status == exit_codes.OK, out
    (row,) = [line for line in out.splitlines() if prop["id"] in line]
    assert f"alice ({world['alice'].member_id})" in row
    assert local_iso(prop["created_at"]) in row
    assert "none yet; 0 of 1 (1 custodian)" in row
    status, out = run("proposal", "list", *ks, "--json")
    assert status == exit_codes.OK, out
    (raw,) = [p for p in json.loads(out) if p["id"] == prop["id"]]
    assert raw["proposer"] == world["alice"].member_id
    assert raw["created_at"] == prop["created_at"]


def test_member_list_rows_are_whole_when_piped(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    status, out = run("member", "list", "-k", str(tmp_path / "olga.keystore"), columns=30)
    assert status == exit_codes.OK, out
    for name, member in world.members.items():
        (row,) = [line for line in out.splitlines() if member.member_id in line]
        assert name in row
    status, out = run("member", "list", "-k", str(tmp_path / "olga.keystore"), "--json")
    assert {m["id"] for m in json.loads(out)} == {m.member_id for m in world.members.values()}


def test_an_audit_entry_reads_by_name_and_local_time(
    cli_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tandem.cli import audit_cmds

    world = cli_world
    monkeypatch.setattr(audit_cmds, "Client", lambda server: world.client)
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    entries = [json.loads(line) for line in world.client.audit.export(world["olga"])[0]]
    (index,) = [e["index"] for e in entries if e["kind"] == "member.proposed" and prop["id"] in json.dumps(e)]
    status, out = run("audit", "inclusion", str(index), "-k", str(tmp_path / "olga.keystore"))
    assert status == exit_codes.OK, out
    entry = entries[index]
    assert f"by alice ({world['alice'].member_id}) at {local_iso(entry['time'])}" in out
    status, out = run("audit", "inclusion", str(index), "-k", str(tmp_path / "olga.keystore"), "--json")
    assert json.loads(out)["entry"]["time"] == entry["time"]


def test_list_commands_follow_every_page_and_limit_shows_the_first(
    cli_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers.keysets import make_keyset

    from tandem.store import pages

    world = cli_world
    for name in ("nina", "nora", "nell"):
        world.client.members.propose_add(world["alice"], new_member(name, Role.CUSTODIAN).card())
    for _ in range(3):
        make_keyset(world)
    for address in (BTC_DEST, STRANGER_BTC, STRANGER_ETH):
        chain, network = ("ethereum", "sepolia") if address.startswith("0x") else ("bitcoin", "testnet")
        allow(world, chain=chain, network=network, address=address, label=f"to {address[:8]}")
    monkeypatch.setattr(pages, "DEFAULT_LIMIT", 2)  # every list answers in pages of two
    ks = ["-k", str(tmp_path / "olga.keystore")]
    everyone = {m.member_id for m in world.members.values()}
    assert len(everyone) > 2
    status, out = run("member", "list", *ks, "--json")
    assert status == exit_codes.OK, out
    assert {m["id"] for m in json.loads(out)} == everyone
    for command in (("proposal", "list"), ("keyset", "list"), ("addressbook", "list")):
        status, out = run(*command, *ks, "--json")
        assert status == exit_codes.OK, out
        every = [p["id"] for p in json.loads(out)]
        assert len(every) >= 3, command
        status, out = run(*command, *ks, "--json", "--limit", "3")
        assert status == exit_codes.OK, out
        assert [p["id"] for p in json.loads(out)] == every[:3], command
        status, out = run(*command, *ks, "--limit", "0")
        assert status != exit_codes.OK, out
