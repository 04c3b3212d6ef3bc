"""THREATS 39: the approving CLI signs exactly the view it displayed, never a second fetch.

The attacker holds the network path (or the server). It answers the first GET of the
thing being approved truthfully, so the member reads what it expects, and every later
GET of it with something else: another withdrawal, proposal, ceremony or challenge.
A command that fetches again after printing would sign what the member never saw.

Each approving command runs here through Typer against the in-process server, behind
a transport that lies from the second GET on. The command succeeds, its signature
covers the view it printed, and the lie is never read because there is no second
fetch. A reviewed view that is not the object named on the command line is refused
by the client before anything is signed or sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api.test_ceremony import custom_definition
from tests.conftest import World, new_member
from tests.helpers.keysets import make_keyset
from tests.helpers.withdrawals import btc_intent, setup
from typer.testing import CliRunner

from tandem.cli import common, main, proof_cmds, withdrawal_cmds
from tandem.cli.main import app
from tandem.client import Client
from tandem.client import ceremony as cc
from tandem.client.members import proposal_digest
from tandem.core import keygen
from tandem.core import withdrawal as wcore
from tandem.core.roles import Role
from tandem.errors import VerificationError

PASSPHRASE = "t39 passphrase"


class SecondFetchLies:
    """A transport in the middle: forwards everything, but answers every GET of
    ``path`` after the first with the server's answer for ``other_path``; records what
    was posted."""

    def __init__(self, inner: Any, *, path: str, other_path: str) -> None:
        self.inner = inner
        self.path = path
        self.other_path = other_path
        self.gets = 0
        self.lies_told = 0
        self.posts: list[tuple[str, Any]] = []

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if method == "GET" and path == self.path:
            self.gets += 1
            if self.gets > 1:
                self.lies_told += 1
                other = self.inner.request(method, self.other_path, **kwargs)
                return httpx.Response(200, json=other.json())
        if method == "POST" and kwargs.get("content") is not None:
            self.posts.append((path, json.loads(kwargs["content"])))
        response: httpx.Response = self.inner.request(method, path, **kwargs)
        return response


@pytest.fixture
def keystores(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(withdrawal_cmds, "_now", world.clock)
    for name in ("alice", "bob", "cora"):
        (tmp_path / f"{name}.ks").write_bytes(world[name].to_keystore(PASSPHRASE, log2_n=14))
    return tmp_path


def behind_proxy(
    world: World, monkeypatch: pytest.MonkeyPatch, *, path: str, other_path: str
) -> SecondFetchLies:
    proxy = SecondFetchLies(world.client.http, path=path, other_path=other_path)
    client = Client(http=proxy, clock=world.clock, pin=world.client.pin)  # type: ignore[arg-type]
    for module in (withdrawal_cmds, main, proof_cmds):
        monkeypatch.setattr(module, "Client", lambda server: client)
    monkeypatch.setattr(common, "client", lambda server: client)
    return proxy


def run(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(app, list(args))
    assert (result.exit_code == 0) is ok, result.output
    return result.output


def test_withdraw_approve_signs_the_request_it_printed(
    world: World, keystores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = setup(world)
    shown = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=30_000))
    other = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=90_000))
    proxy = behind_proxy(
        world, monkeypatch, path=f"/v1/withdrawals/{shown['id']}", other_path=f"/v1/withdrawals/{other['id']}"
    )
    world.clock.advance(30)
    out = run("withdraw", "approve", shown["id"], "-k", str(keystores / "bob.ks"), "--totp-from-keystore")

    assert shown["fingerprint"] in out
    assert other["fingerprint"] not in out
    assert (proxy.gets, proxy.lies_told) == (1, 0)
    ((path, posted),) = [p for p in proxy.posts if p[0].endswith("/approve")]
    assert path == f"/v1/withdrawals/{shown['id']}/approve"
    signed = posted["envelope"]["action"]["body"]
    assert (signed["withdrawal"], signed["intent_hash"], signed["tx_digest"]) == (
        shown["id"],
        shown["intent_hash"],
        shown["tx_digest"],
    )
    assert wcore.fingerprint(signed["intent_hash"]) == shown["fingerprint"]
    assert world.client.withdrawals.get(world["olga"], shown["id"])["status"] == "approved"
    assert world.client.withdrawals.get(world["olga"], other["id"])["approvals"] == []


def test_proposal_approve_signs_the_proposal_it_printed(
    world: World, keystores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    other = world.client.members.propose_add(world["alice"], new_member("eve", Role.CUSTODIAN).card())
    proxy = behind_proxy(
        world, monkeypatch, path=f"/v1/proposals/{shown['id']}", other_path=f"/v1/proposals/{other['id']}"
    )
    world.clock.advance(30)
    out = run("proposal", "approve", shown["id"], "-k", str(keystores / "bob.ks"), "--totp-from-keystore")

    digest = proposal_digest(shown)
    assert digest in out  # the digest computed locally is printed before signing
    assert (proxy.gets, proxy.lies_told) == (1, 0)
    ((_path, posted),) = [p for p in proxy.posts if p[0].endswith("/approve")]
    assert posted["envelope"]["action"]["body"] == {"proposal": shown["id"], "digest": digest}
    # The approval counted for the proposal that was shown, and only for it.
    assert world.client.get(world["olga"], f"/v1/proposals/{shown['id']}")["status"] == "approved"
    assert world.client.get(world["olga"], f"/v1/proposals/{other['id']}")["status"] == "pending"


def test_ceremony_approve_signs_the_ceremony_it_printed(
    world: World, keystores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = world.client.ceremonies.propose(
        world["alice"], custom_definition(), contribution=keygen.make_contribution()
    )
    other = world.client.ceremonies.propose(
        world["alice"], custom_definition(expiry=7200), contribution=keygen.make_contribution()
    )
    proxy = behind_proxy(
        world, monkeypatch, path=f"/v1/ceremonies/{shown['id']}", other_path=f"/v1/ceremonies/{other['id']}"
    )
    world.clock.advance(30)
    out = run(
        "ceremony",
        "approve",
        shown["id"],
        "-k",
        str(keystores / "bob.ks"),
        "--totp-from-keystore",
        "--state-dir",
        str(keystores / "state"),
    )

    view = world.client.ceremonies.get(world["olga"], shown["id"])
    assert cc.local_digest(view) in out
    assert (proxy.gets, proxy.lies_told) == (1, 0)
    ((_path, posted),) = [p for p in proxy.posts if p[0].endswith("/approve")]
    body = posted["envelope"]["action"]["body"]
    assert (body["ceremony"], body["digest"]) == (shown["id"], cc.local_digest(view))
    assert world["bob"].member_id in view["approvals"]
    assert world.client.ceremonies.get(world["olga"], other["id"])["approvals"] == []


def test_proof_contribute_seals_to_the_challenge_it_printed(
    world: World, keystores: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_keyset(world)
    shown = world.client.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    other = world.client.proofs.issue(world["olga"], statement="Q4", scope={"kind": "all"})
    proxy = behind_proxy(
        world, monkeypatch, path=f"/v1/proofs/{shown['id']}", other_path=f"/v1/proofs/{other['id']}"
    )
    run("proof", "contribute", shown["id"], "-k", str(keystores / "alice.ks"))

    assert (proxy.gets, proxy.lies_told) == (1, 0)
    ((_path, posted),) = [p for p in proxy.posts if p[0].endswith("/contributions")]
    body = posted["envelope"]["action"]["body"]
    assert body["challenge"] == shown["id"]
    assert body["operation"] == shown["keysets"][0]["operation"]["statement"]["operation"]
    after = world.client.proofs.get(world["olga"], shown["id"])
    assert after["keysets"][0]["contributed"] == ["manager"]
    assert world.client.proofs.get(world["olga"], other["id"])["keysets"][0]["contributed"] == []


def test_a_reviewed_view_of_another_object_is_refused_before_signing(world: World) -> None:
    """The client functions take the reviewed view; one that is not the object named
    is refused locally, and nothing is sent."""
    s = setup(world)
    a = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=30_000))
    b = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=90_000))
    view_b = world.client.withdrawals.get(world["bob"], b["id"])
    proxy = SecondFetchLies(world.client.http, path="-", other_path="-")
    client = Client(http=proxy, clock=world.clock, pin=world.client.pin)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="reviewed"):
        client.withdrawals.approve(world["bob"], a["id"], totp=world.code("bob"), view=view_b)
    p1 = world.client.members.propose_add(world["alice"], new_member("nina", Role.CUSTODIAN).card())
    p2 = world.client.members.propose_add(world["alice"], new_member("eve", Role.CUSTODIAN).card())
    with pytest.raises(VerificationError, match="reviewed"):
        client.members.approve(world["bob"], p1["id"], totp=world.code("bob"), proposal=p2)
    assert [p for p in proxy.posts if not p[0].endswith("/sessions")] == []
    for w in (a, b):
        assert world.client.withdrawals.get(world["olga"], w["id"])["approvals"] == []
