"""THREATS 23: a fresh server is claimed by whoever posts genesis first.

``tandem init`` prints a one-time claim token and keeps only its hash; genesis must
present it (header ``X-Tandem-Claim-Token``). Without it, or with another, genesis is
refused with a stable code, nothing is created, and the refusal is recorded: in the
fixed-size tally of the claim file until a deployment (and its log) exists, then as one
``deployment.claim.refused`` entry written by the genesis that succeeds.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from tests.conftest import FakeClock, claim_token_of, new_member
from typer.testing import CliRunner

from tandem.api import create_app
from tandem.cli.main import app as cli_app
from tandem.client import Client
from tandem.client.members import draft_genesis, sign_genesis
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import RemoteError
from tandem.services import Tandem
from tandem.settings import Settings
from tandem.store.models import Deployment, Member


def _people() -> list[MemberSecrets]:
    return [
        new_member("alice", Role.MANAGER),
        new_member("bob", Role.CUSTODIAN),
        new_member("olga", Role.AUDITOR),
    ]


def _signed_genesis(http: TestClient, clock: FakeClock, people: list[MemberSecrets]) -> dict[str, Any]:
    doc = draft_genesis(
        deployment="dep_" + secrets.token_hex(8),
        entity="Example Fund SICAV",
        created_at=clock(),
        service=http.get("/v1/deployment").json()["service"],
        cards=[m.card() for m in people],
    )
    return {"genesis": doc, "signatures": dict(sign_genesis(m, doc) for m in people)}


def _post(http: TestClient, body: dict[str, Any], token: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Tandem-Claim-Token"] = token
    return http.post("/v1/genesis", content=canonical(body), headers=headers)


def _nothing_created(svc: Tandem, http: TestClient) -> None:
    assert "deployment" not in http.get("/v1/deployment").json()
    with svc.db.read() as s:
        assert s.exec(select(Deployment)).all() == []
        assert s.exec(select(Member)).all() == []


def _log(http: TestClient, clock: FakeClock, member: MemberSecrets) -> list[dict[str, Any]]:
    client = Client(http=http, clock=clock)
    lines, _ = client.audit.export(member)
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (None, "claim_token_required"),
        ("", "claim_token_required"),
        ("tclaim_" + "A" * 32, "claim_token_invalid"),
        ("x" * 10_000, "claim_token_invalid"),
    ],
    ids=["missing", "empty", "wrong", "oversized"],
)
def test_genesis_without_the_claim_token_refused(
    svc: Tandem, http: TestClient, clock: FakeClock, token: str | None, code: str
) -> None:
    people = _people()
    body = _signed_genesis(http, clock, people)
    response = _post(http, body, token)
    assert response.status_code == 403, response.text
    assert response.json()["code"] == code
    if token:
        assert token[:20] not in response.text  # never echoed back
    _nothing_created(svc, http)
    assert svc.members.claim.refusals() == {
        "count": 1,
        "codes": {code: 1},
        "first_at": clock(),
        "last_at": clock(),
    }

    # The rightful claimant still can; the log then holds the refusal, in fixed size.
    accepted = _post(http, body, claim_token_of(svc))
    assert accepted.status_code == 201, accepted.text
    entries = _log(http, clock, people[2])
    (refused,) = [e for e in entries if e["kind"] == "deployment.claim.refused"]
    assert refused["outcome"] == "refused"
    assert refused["code"] == "claim_token_invalid"
    assert refused["data"] == {"count": 1, "codes": {code: 1}, "first_at": clock(), "last_at": clock()}
    assert entries[0]["kind"] == "deployment.genesis"
    text = json.dumps(entries)
    assert claim_token_of(svc) not in text
    if token:
        assert token[:20] not in text


def test_many_claim_attempts_grow_nothing_beyond_one_fixed_size_entry(
    svc: Tandem, http: TestClient, clock: FakeClock
) -> None:
    people = _people()
    body = _signed_genesis(http, clock, people)
    for i in range(40):
        clock.advance(1)
        assert _post(http, body, "wrong-" + "z" * i).json()["code"] == "claim_token_invalid"
    _nothing_created(svc, http)
    assert _post(http, body, claim_token_of(svc)).status_code == 201
    refused = [e for e in _log(http, clock, people[2]) if e["outcome"] == "refused"]
    assert len(refused) == 1
    assert refused[0]["data"]["count"] == 40
    assert len(canonical(refused[0])) < 1200


def test_the_claim_token_is_used_once(svc: Tandem, http: TestClient, clock: FakeClock) -> None:
    people = _people()
    token = claim_token_of(svc)
    assert _post(http, _signed_genesis(http, clock, people), token).status_code == 201
    assert svc.members.claim.issued is False
    # A second genesis with the same token: the server is taken, and says so (audited).
    again = _post(http, _signed_genesis(http, clock, _people()), token)
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"
    entries = _log(http, clock, people[2])
    assert [e["code"] for e in entries if e["kind"] == "deployment.genesis.refused"] == ["conflict"]
    assert token not in json.dumps(entries)


def test_a_service_with_no_claim_issued_refuses_every_genesis(
    db: Any, service_key: Any, clock: FakeClock
) -> None:
    svc = Tandem(db, service_key, clock=clock)
    svc.audit.startup_check()
    with TestClient(create_app(service=svc), raise_server_exceptions=False) as http:
        response = _post(http, _signed_genesis(http, clock, _people()), "anything")
        assert response.status_code == 403
        assert response.json()["code"] == "claim_token_invalid"
        assert "tandem init" in response.json()["message"]
        _nothing_created(svc, http)


def test_tandem_init_prints_the_token_once_and_keeps_only_its_hash(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runner = CliRunner()
    first = runner.invoke(cli_app, ["init", "--data-dir", str(data)])
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    token = next(lines[i + 1].strip() for i, line in enumerate(lines) if line.startswith("claim token"))
    assert token.startswith("tclaim_")
    claim_file = (data / "claim.json").read_text()
    assert token not in claim_file
    assert (data / "claim.json").stat().st_mode & 0o077 == 0
    again = runner.invoke(cli_app, ["init", "--data-dir", str(data)])
    assert again.exit_code == 0
    assert token not in again.output
    assert "issued already" in again.output

    # The server built from that data directory (as `tandem serve` builds it) honours it.
    clock = FakeClock()
    with TestClient(create_app(Settings(data_dir=data)), raise_server_exceptions=False) as http:
        svc = http.app.state.service  # type: ignore[attr-defined]
        svc.runner.clock = clock
        people = _people()
        body = _signed_genesis(http, clock, people)
        assert _post(http, body, "not-it").json()["code"] == "claim_token_invalid"
        assert json.loads((data / "claim.json").read_text())["refused"] == {"claim_token_invalid": 1}
        client = Client(http=http, clock=clock)
        result = client.members.submit_genesis(body["genesis"], body["signatures"], claim_token=token)
        assert result["deployment"] == body["genesis"]["deployment"]
    stored = json.loads((data / "claim.json").read_text())
    assert stored["token_sha256"] is None
    assert stored["consumed_at"] == clock()


def test_genesis_submit_cli_needs_the_token(tmp_path: Path, svc: Tandem, http: TestClient, clock: FakeClock,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from tandem.cli import main as cli_main

    people = _people()
    file = tmp_path / "genesis.json"
    file.write_text(json.dumps(_signed_genesis(http, clock, people)))
    monkeypatch.setattr(cli_main, "Client", lambda server: Client(http=http, clock=clock))
    monkeypatch.delenv("TANDEM_CLAIM_TOKEN", raising=False)
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["genesis", "submit", str(file)])
    assert refused.exit_code == 1
    assert "claim_token_required" in refused.output
    _nothing_created(svc, http)
    ok = runner.invoke(
        cli_app, ["genesis", "submit", str(file)], env={"TANDEM_CLAIM_TOKEN": claim_token_of(svc)}
    )
    assert ok.exit_code == 0, ok.output
    assert claim_token_of(svc) not in ok.output
    with pytest.raises(RemoteError):
        Client(http=http, clock=clock).members.submit_genesis(
            json.loads(file.read_text())["genesis"], {}, claim_token=claim_token_of(svc)
        )
