"""What a person reads about a withdrawal: amounts in BTC beside the satoshis, members by
name, the destination's address-book label, local ISO-8601 times, rows never wrapped
when piped, raw values under --json; a released one shows its txid and writes its signed
transaction again; a release whose operation key is gone prints the commands that
recover it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import World
from tests.helpers.cli import invoke, ks, wire
from tests.helpers.withdrawals import BTC_DEST, btc_intent, create_approved, setup, verify_bitcoin

from tandem.cli import exit_codes
from tandem.localtime import local_iso

PASSPHRASE = "cli withdrawal output passphrase"


def run(*args: str, columns: int = 80) -> tuple[int, str]:
    return invoke(*args, columns=columns)


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE, world_clock=True)


def test_list_and_show_read_as_a_person_reads(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    s = setup(world)
    w = create_approved(world, btc_intent(s, amount=50_000))
    label = next(
        e["label"] for e in world.client.policy.address_book(world["olga"]) if e["address"] == BTC_DEST
    )

    status, out = run("withdraw", "list", *ks(tmp_path, "olga"), columns=60)
    assert status == exit_codes.OK, out
    (row,) = [line for line in out.splitlines() if w["id"] in line]
    # Piped: the whole row on one line, however narrow the terminal would be.
    assert w["fingerprint"] in row
    assert f"{BTC_DEST} ({label})" in row
    assert "0.0005 BTC (50,000 sat)" in row
    assert f"alice ({world['alice'].member_id})" in row
    assert local_iso(w["created_at"]) in row

    status, out = run("withdraw", "list", *ks(tmp_path, "olga"), "--json")
    assert status == exit_codes.OK, out
    (raw,) = json.loads(out)
    assert raw["intent"]["amount"] == "50000"
    assert raw["requester"] == world["alice"].member_id
    assert raw["created_at"] == w["created_at"]

    status, out = run("withdraw", "show", w["id"], *ks(tmp_path, "olga"))
    assert status == exit_codes.OK, out
    assert f"approved by  bob ({world['bob'].member_id}) (custodian) at" in out
    assert f"requested by alice ({world['alice'].member_id}) at {local_iso(w['created_at'])}" in out
    assert "txid" not in out
    # The decoded table, as the approver reads it: the chain's units, the label, the rule.
    table = out[: out.index("request ")]
    assert "0.0005 BTC (50,000 sat)" in table
    assert f"{BTC_DEST} ({label})" in table
    assert " BTC (" in table.split("fee (worst case)")[1].splitlines()[0]
    assert "needs 1 custodian approval" in out
    assert "{" not in out

    status, out = run("withdraw", "show", w["id"], *ks(tmp_path, "olga"), "--json")
    assert status == exit_codes.OK, out
    doc = json.loads(out)
    assert doc["fingerprint_computed_locally"] == w["fingerprint"]
    assert doc["expires_at"] == w["expires_at"]


def test_show_on_a_released_withdrawal_gives_the_txid_and_the_signed_tx_again(
    cli_world: World, tmp_path: Path
) -> None:
    world = cli_world
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    early = tmp_path / "early.json"
    status, out = run("withdraw", "show", w["id"], *ks(tmp_path, "olga"), "--out", str(early))
    assert status == exit_codes.CONFLICT, out
    assert "no signed transaction to write yet" in out
    assert not early.exists()

    released = world.client.withdrawals.release(world["bob"], w["id"])
    again = tmp_path / "again.json"
    status, out = run("withdraw", "show", w["id"], *ks(tmp_path, "olga"), "--out", str(again))
    assert status == exit_codes.OK, out
    assert f"txid         {released['txid']}" in out
    doc = json.loads(again.read_text())
    assert doc["txid"] == released["txid"]
    assert doc["signed_tx"] == released["signed_tx"]
    verify_bitcoin(doc["signed_tx"], w["prevouts"], s.keyset.keys[0][1])


def test_a_release_after_a_restart_prints_the_commands_that_recover_it(
    cli_world: World, tmp_path: Path
) -> None:
    from tandem.services.keyuse import OperationKeys

    world = cli_world
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    world.svc.keys.operations = OperationKeys()  # what a restart does to the signer's memory
    bob = str(tmp_path / "bob.keystore")
    status, out = run("withdraw", "release", w["id"], "-k", bob)
    assert status == exit_codes.CONFLICT, out
    assert "[operation_key_lost, HTTP 409]" in out
    assert "The approvals of this request still stand" in out
    renew = f"tandem withdraw contribute {w['id']} --renew -k {bob}"
    other = f"tandem withdraw contribute {w['id']} -k MANAGER.keystore"
    release = f"tandem withdraw release {w['id']} -k {bob}"
    for line in (renew, other, release):
        assert line in out

    # The printed commands, run as printed (the manager's keystore for MANAGER.keystore),
    # bring the request to its release without new approvals.
    world.clock.advance(30)
    status, out = run("withdraw", "contribute", w["id"], "--renew", "-k", bob, "--totp-from-keystore")
    assert status == exit_codes.OK, out
    status, out = run("withdraw", "contribute", w["id"], *ks(tmp_path, "alice"))
    assert status == exit_codes.OK, out
    status, out = run("withdraw", "release", w["id"], "-k", bob)
    assert status == exit_codes.OK, out
    verify_bitcoin(json.loads(out)["signed_tx"], w["prevouts"], s.keyset.keys[0][1])


def test_the_recovery_is_chosen_by_the_error_code_not_by_its_words(
    cli_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's wording may change (or be translated); the stable code decides. A
    lost key worded without "operation" still prints the recovery, and a sealed server
    whose message mentions an operation does not."""
    from tandem.errors import OperationKeyLostError, SealedError
    from tandem.services.keyuse import OperationKeys

    world = cli_world
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    bob = str(tmp_path / "bob.keystore")

    def lost(self: OperationKeys, operation_id: str) -> None:
        raise OperationKeyLostError("der Signierer hat diesen Schlüssel nicht mehr")

    monkeypatch.setattr(OperationKeys, "get", lost)
    status, out = run("withdraw", "release", w["id"], "-k", bob)
    assert status == exit_codes.CONFLICT, out
    assert "[operation_key_lost, HTTP 409]" in out
    assert f"tandem withdraw contribute {w['id']} --renew -k {bob}" in out

    def sealed(self: OperationKeys, operation_id: str) -> None:
        raise SealedError("signing is sealed while the operation log is checked")

    monkeypatch.setattr(OperationKeys, "get", sealed)
    status, out = run("withdraw", "release", w["id"], "-k", bob)
    assert status == exit_codes.SERVER_ERROR, out
    assert "[sealed, HTTP 503]" in out
    assert "--renew" not in out


def test_amounts_read_in_the_chain_s_units() -> None:
    from tandem import humanize

    assert humanize.amount("50000", "BTC") == "0.0005 BTC (50,000 sat)"
    assert humanize.amount(10**15, "ETH") == "0.001 ETH (1,000,000,000,000,000 wei)"
    usdc = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"
    assert humanize.amount("2500000", usdc, network="sepolia") == "2.5 USDC (2,500,000 base units)"
    unknown = humanize.amount("7", "0x" + "ab" * 20, network="sepolia")
    assert unknown.startswith("7 base units of token 0xabab")


def test_an_approval_after_a_restart_is_refused_with_the_commands_that_recover_it(
    cli_world: World, tmp_path: Path
) -> None:
    """A custodian's share sealed to an operation key the server lost could never be
    opened: the approval is refused (nothing stands that cannot be released) and the
    commands that bring the request back are printed, then work as printed."""
    from tandem.services.keyuse import OperationKeys

    world = cli_world
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    world.svc.keys.operations = OperationKeys()
    bob = str(tmp_path / "bob.keystore")
    world.clock.advance(30)
    status, out = run("withdraw", "approve", w["id"], "-k", bob, "--totp-from-keystore")
    assert status == exit_codes.CONFLICT, out
    assert "[operation_key_lost, HTTP 409]" in out
    assert "Nothing was approved" in out
    assert f"tandem withdraw contribute {w['id']} --renew -k MANAGER.keystore" in out
    assert f"tandem withdraw approve {w['id']} -k {bob}" in out
    assert world.client.withdrawals.get(world["olga"], w["id"])["approvals"] == []

    status, out = run("withdraw", "contribute", w["id"], "--renew", *ks(tmp_path, "alice"))
    assert status == exit_codes.OK, out
    world.clock.advance(30)
    status, out = run("withdraw", "approve", w["id"], "-k", bob, "--totp-from-keystore")
    assert status == exit_codes.OK, out
    status, out = run("withdraw", "release", w["id"], "-k", bob)
    assert status == exit_codes.OK, out
    verify_bitcoin(json.loads(out)["signed_tx"], w["prevouts"], s.keyset.keys[0][1])


def test_a_proposal_reads_as_a_person_reads_it_and_raw_under_json(cli_world: World, tmp_path: Path) -> None:
    """`proposal show`: the kind in words, names and local times, the digest computed here;
    --json keeps the raw answer with that digest beside it."""
    from tests.conftest import new_member

    from tandem.client.members import proposal_digest
    from tandem.core.roles import Role

    world = cli_world
    p = world.client.members.propose_add(world["alice"], new_member("dana", Role.CUSTODIAN).card())
    status, out = run("proposal", "show", p["id"], *ks(tmp_path, "bob"), columns=200)
    assert status == exit_codes.OK, out
    assert f"proposal     {p['id']}: Membership: add a member (member.add); pending" in out
    assert f"proposed by  alice ({world['alice'].member_id}) at {local_iso(p['created_at'])}" in out
    assert "approved by  nobody yet" in out
    assert "approvals    0 of 1 (1 custodian)" in out
    assert f"digest       {proposal_digest(p)} (computed here" in out
    assert '"name": "dana"' in out
    assert str(p["created_at"]) not in out.replace(local_iso(p["created_at"]), "")

    status, out = run("proposal", "show", p["id"], *ks(tmp_path, "bob"), "--json")
    assert status == exit_codes.OK, out
    raw = json.loads(out)
    assert raw["created_at"] == p["created_at"]
    assert raw["digest_computed_locally"] == proposal_digest(p)
