"""`tandem withdraw approve-batch`: several requests, each decoded and shown on the
member's machine as `withdraw approve` shows it, one read-back confirmation, ONE TOTP
code, a result per request, and exit status 1 when any was refused. Against a real
in-process server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import World
from tests.helpers.audit import audit_entries, refusals
from tests.helpers.cli import invoke, ks, wire
from tests.helpers.withdrawals import btc_intent, policy_doc, rule, setup

from tandem.cli import exit_codes

PASSPHRASE = "cli approve-batch passphrase"


@pytest.fixture
def cli_world(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return wire(world, tmp_path, monkeypatch, PASSPHRASE, world_clock=True)


def requests(world: World, s: Any, n: int, by: str = "alice") -> list[dict[str, Any]]:
    return [world.client.withdrawals.create(world[by], btc_intent(s, amount=40_000 + i)) for i in range(n)]


def status_of(world: World, wid: str) -> str:
    return str(world.client.withdrawals.get(world["olga"], wid)["status"])


def test_three_requests_reviewed_confirmed_and_approved_with_one_code(
    cli_world: World, tmp_path: Path
) -> None:
    world = cli_world
    s = setup(world)
    created = requests(world, s, 3)
    ids = [w["id"] for w in created]
    world.clock.advance(30)
    status, out = invoke(
        "withdraw", "approve-batch", *ids, *ks(tmp_path, "bob"), "--totp-from-keystore", input="y\n"
    )
    assert status == exit_codes.OK, out
    # Each request's own review, as `withdraw approve` prints it, before the one question.
    question = out.index("Approve these 3 requests?")
    for n, w in enumerate(created, 1):
        assert f"{n}/3" in out[:question]
        assert f"request {w['id']}" in out[:question]
        assert w["fingerprint"] in out[:question]
    assert out.count("decoded here from the raw transaction") == 3
    assert "3 approved, 0 refused" in out
    assert all(status_of(world, wid) == "approved" for wid in ids)
    # One code checked and spent for the three.
    batch = [e for e in audit_entries(world) if e["kind"] == "withdrawal.batch_verified"]
    assert len(batch) == 1
    assert batch[0]["data"]["withdrawals"] == ids


def test_any_refused_item_makes_the_exit_status_1(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    s = setup(world, policy=policy_doc(2, [rule("default", custodians=1, managers=1)]))
    mine = requests(world, s, 1, by="alice")[0]
    theirs = requests(world, s, 1, by="mark")[0]
    world.clock.advance(30)
    status, out = invoke(
        "withdraw",
        "approve-batch",
        mine["id"],
        theirs["id"],
        *ks(tmp_path, "alice"),
        "--totp-from-keystore",
        "--yes",
        "--json",
    )
    assert status == exit_codes.REFUSED, out
    assert '"self_approval"' in out
    assert status_of(world, mine["id"]) == "pending"
    given = world.client.withdrawals.get(world["olga"], theirs["id"])["approvals"]
    assert [a["member"] for a in given] == [world["alice"].member_id]
    assert len(refusals(world, "self_approval")) == 1

    # The same outcome read as a person reads it.
    other = requests(world, s, 1, by="mark")[0]
    world.clock.advance(30)
    status, out = invoke(
        "withdraw",
        "approve-batch",
        mine["id"],
        other["id"],
        *ks(tmp_path, "alice"),
        "--totp-from-keystore",
        "--yes",
    )
    assert status == exit_codes.REFUSED, out
    assert "1 approved, 1 refused" in out
    assert "[self_approval]" in out


def test_declining_or_a_wrong_fingerprint_approves_nothing(cli_world: World, tmp_path: Path) -> None:
    world = cli_world
    s = setup(world)
    first, second = requests(world, s, 2)
    ids = [first["id"], second["id"]]
    before = len(audit_entries(world))
    world.clock.advance(30)
    status, out = invoke(
        "withdraw", "approve-batch", *ids, *ks(tmp_path, "bob"), "--totp-from-keystore", input="n\n"
    )
    assert status == exit_codes.BAD_INPUT, out
    assert "nothing approved" in out
    status, out = invoke(
        "withdraw",
        "approve-batch",
        *ids,
        *ks(tmp_path, "bob"),
        "--totp-from-keystore",
        "--yes",
        "--fingerprint",
        f"{second['id']}=0000-0000-0000-0000",
    )
    assert status == exit_codes.REFUSED, out
    assert "fingerprint" in out
    assert all(status_of(world, wid) == "pending" for wid in ids)
    assert not [e for e in audit_entries(world)[before:] if e["kind"] == "withdrawal.approved"]

    status, out = invoke("withdraw", "approve-batch", first["id"], first["id"], *ks(tmp_path, "bob"), "--yes")
    assert status == exit_codes.BAD_INPUT, out
    status, out = invoke("withdraw", "approve-batch", *ids, *ks(tmp_path, "olga"), "--yes")
    assert status == exit_codes.REFUSED, out
    assert "auditors read and verify" in out
