"""`genesis draft` takes the service key from the server's answer; the operator's read-out
id, given with --service-key-id, is checked against it (a server that is not the one set
up cannot slip its own key into the genesis every member then signs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import World, new_member
from typer.testing import CliRunner

from tandem.cli import exit_codes
from tandem.cli import main as cli_main
from tandem.client import Client
from tandem.core.audit import key_id
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey


@pytest.fixture
def to_world(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    class ToWorld(Client):
        def __new__(cls, server: str) -> Client:  # type: ignore[misc]
            return world.client

    monkeypatch.setattr(cli_main, "Client", ToWorld)


def draft(tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    cards = []
    for name, role in (("amy", Role.MANAGER), ("ben", Role.CUSTODIAN)):
        path = tmp_path / f"{name}.card.json"
        path.write_text(json.dumps(new_member(name, role).card().to_json()))
        cards += ["--card", str(path)]
    out = tmp_path / "genesis.json"
    result = CliRunner().invoke(
        cli_main.app,
        ["genesis", "draft", "--entity", "Example Fund", *cards, "--out", str(out), *extra],
        env={"COLUMNS": "200"},
    )
    assert "Traceback" not in result.output
    return result.exit_code, result.output, out


@pytest.mark.usefixtures("to_world")
def test_the_operators_key_id_is_checked(world: World, tmp_path: Path) -> None:
    served = key_id(world.svc.key.sign_public)
    code, out, path = draft(tmp_path, "--service-key-id", served)
    assert code == 0, out
    assert f"service key {served} matches what the operator read out" in out
    doc = json.loads(path.read_text())["genesis"]
    assert doc["service"]["sign_public"] == world.svc.key.sign_public.hex()


@pytest.mark.usefixtures("to_world")
def test_a_server_answering_with_another_key_is_refused_and_nothing_is_written(
    world: World, tmp_path: Path
) -> None:
    operator_read_out = key_id(ServiceKey.generate().sign_public)
    code, out, path = draft(tmp_path, "--service-key-id", operator_read_out)
    assert code == exit_codes.REFUSED, out
    assert f"not {operator_read_out} as the operator read out" in out
    assert "[verification_failed]" in out
    assert not path.exists()


@pytest.mark.usefixtures("to_world")
def test_without_the_option_the_draft_says_to_compare(world: World, tmp_path: Path) -> None:
    code, out, _ = draft(tmp_path)
    assert code == 0, out
    assert f"service key {key_id(world.svc.key.sign_public)} is what the server answered" in out
