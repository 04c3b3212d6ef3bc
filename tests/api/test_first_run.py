"""A first run read as a person reads it: a delayed change says when it takes effect (in
local time, with its offset) and who may veto it until then; `genesis sign` shows what is
signed, asks first, and says so when the member had signed already."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import World, new_member
from tests.helpers.membership import MEMBER_DELAY, approve, wait_out_delay
from typer.testing import CliRunner

from tandem.cli import main as cli_main
from tandem.client.members import draft_genesis
from tandem.core.audit import key_id
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey

PASSPHRASE = "first run test passphrase"
BTC_ADDRESS = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"


def check_notice(
    notice: dict[str, Any], *, effective_at: int, now: int, veto_by: list[str], command: str
) -> None:
    assert notice["effective_at"] == effective_at
    assert notice["seconds_left"] == effective_at - now
    local = datetime.fromisoformat(notice["effective_at_local"])
    assert local.tzinfo is not None, "local time carries its offset"
    assert int(local.timestamp()) == effective_at
    assert notice["veto_by"] == veto_by
    assert notice["veto_command"] == command


def test_member_change_in_its_delay_says_when_and_who_can_veto(world: World) -> None:
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    assert "pending_change" not in prop  # not approved yet: nothing is waiting
    done = approve(world, "bob", prop["id"])
    now = world.clock()
    check_notice(
        done["pending_change"],
        effective_at=now + MEMBER_DELAY,
        now=now,
        veto_by=["custodian", "manager"],
        command="tandem proposal veto",
    )
    shown = world.client.get(world["olga"], f"/v1/proposals/{prop['id']}")
    assert shown["pending_change"]["effective_at"] == now + MEMBER_DELAY
    listed = {p["id"]: p for p in world.client.get(world["olga"], "/v1/proposals")}
    assert listed[prop["id"]]["pending_change"]["veto_by"] == ["custodian", "manager"]
    wait_out_delay(world)
    after = world.client.get(world["olga"], f"/v1/proposals/{prop['id']}")
    assert "pending_change" not in after, "a change whose delay has passed waits for nothing"


def test_address_book_change_names_custodians_as_its_vetoers(world: World) -> None:
    prop = world.client.policy.propose_address(
        world["alice"], chain="bitcoin", network="testnet", address=BTC_ADDRESS, label="broker"
    )
    done = world.client.members.approve(world["bob"], prop["id"], totp=world.code("bob"))
    now = world.clock()
    check_notice(
        done["pending_change"],
        effective_at=now + 86400,
        now=now,
        veto_by=["custodian"],
        command="tandem policy veto",
    )
    (entry,) = [e for e in world.client.policy.address_book(world["olga"]) if e["address"] == BTC_ADDRESS]
    assert entry["status"] == "pending"
    assert int(datetime.fromisoformat(entry["effective_at_local"]).timestamp()) == entry["effective_at"]


@pytest.fixture
def keystores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    out = {}
    for name, role in (("alice", Role.MANAGER), ("bob", Role.CUSTODIAN)):
        path = tmp_path / f"{name}.keystore"
        path.write_bytes(new_member(name, role).to_keystore(PASSPHRASE, log2_n=14))
        out[name] = path
    return out


def test_cli_approve_prints_when_the_change_takes_effect(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(cli_main, "Client", lambda server: world.client)
    bob = tmp_path / "bob.keystore"
    bob.write_bytes(world["bob"].to_keystore(PASSPHRASE, log2_n=14))
    prop = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    world.clock.advance(30)
    monkeypatch.setenv("TANDEM_TOTP", world.client.members.totp_code(world["bob"]))
    result = CliRunner().invoke(cli_main.app, ["proposal", "approve", prop["id"], "-k", str(bob)])
    assert result.exit_code == 0, result.output
    when = datetime.fromtimestamp(world.clock() + MEMBER_DELAY).astimezone().isoformat(timespec="seconds")
    assert (
        f"takes effect at {when} (in 24 h); until then any custodian or any manager can veto it "
        f"with `tandem proposal veto {prop['id']}`"
    ) in result.output


def draft(
    tmp_path: Path, keystores: dict[str, Path], entity: str = "Example Fund SICAV", **terms: Any
) -> tuple[Path, ServiceKey]:
    from tandem.core.identity import card_from_keystore

    service = ServiceKey.generate()
    doc = draft_genesis(
        deployment="dep_0123456789abcdef",
        entity=entity,
        created_at=1_790_000_000,
        service=service.public_json(),
        cards=[card_from_keystore(p.read_bytes()) for p in keystores.values()],
        **terms,
    )
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps({"genesis": doc, "signatures": {}}))
    return path, service


def sign(path: Path, keystore: Path, *extra: str, answer: str | None = None) -> Any:
    return CliRunner().invoke(
        cli_main.app, ["genesis", "sign", str(path), "-k", str(keystore), *extra], input=answer
    )


def test_genesis_sign_shows_what_is_signed_and_asks(tmp_path: Path, keystores: dict[str, Path]) -> None:
    from tandem.core.identity import card_from_keystore

    path, service = draft(tmp_path, keystores)
    before = path.read_bytes()
    declined = sign(path, keystores["alice"], answer="n\n")
    assert declined.exit_code != 0
    assert "not signed" in declined.output
    assert path.read_bytes() == before, "declining writes nothing"
    assert not (tmp_path / "alice.pin.json").exists(), "declining pins nothing"

    signed = sign(path, keystores["alice"], answer="y\n")
    assert signed.exit_code == 0, signed.output
    out = signed.output
    assert "Example Fund SICAV" in out
    assert key_id(service.sign_public) in out
    for name, ks in keystores.items():
        card = card_from_keystore(ks.read_bytes())
        row = next(line for line in out.splitlines() if f"{name} " in line and card.fingerprint in line)
        assert card.role.value in row
    assert "Policy (the default)" in out
    assert "address-book destinations only" in out
    assert "Address book: empty" in out
    assert "Sign this genesis as alice (manager)?" in out
    assert "signed as alice; 1/2 signatures" in out
    doc = json.loads(path.read_text())
    assert len(doc["signatures"]) == 1

    again = sign(path, keystores["alice"], answer="")
    assert again.exit_code == 0, again.output
    assert "you already signed this genesis; nothing changed" in again.output
    assert "Sign this genesis" not in again.output, "nothing to confirm the second time"
    assert json.loads(path.read_text()) == doc

    scripted = sign(path, keystores["bob"], "--yes")
    assert scripted.exit_code == 0, scripted.output
    assert "Sign this genesis" not in scripted.output
    assert "2/2 signatures" in scripted.output


def test_genesis_sign_shows_the_address_book_and_policy_it_carries(
    tmp_path: Path, keystores: dict[str, Path]
) -> None:
    from tandem.core.policy import default_policy

    policy = default_policy().to_json()
    policy["change_delay_seconds"] = 3600
    book = [{"chain": "bitcoin", "network": "testnet", "address": BTC_ADDRESS, "label": "Exchange deposit"}]
    entity = "Example [bold]Fund[/bold] SICAV"
    path, _ = draft(tmp_path, keystores, entity=entity, policy=policy, address_book=book)
    out = sign(path, keystores["alice"], "--yes").output
    assert entity in out, "what is signed is shown verbatim, never read as markup"
    assert "Policy (the default)" not in out
    assert "policy and address-book changes wait 1 h" in out
    row = next(line for line in out.splitlines() if BTC_ADDRESS in line)
    assert "Exchange deposit" in row
    assert "bitcoin" in row
    assert "testnet" in row
    assert "The address book is empty" not in out
