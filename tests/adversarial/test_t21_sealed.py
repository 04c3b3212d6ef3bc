"""THREATS 21: if the audit chain does not verify at start-up, every signing endpoint is
sealed (503 ``sealed``) until an operator resolves it; once the log verifies again a
new start-up check unseals."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import select
from tests.conftest import World

from tandem.api import create_app
from tandem.api.deps import api_routes
from tandem.core.canonical import canonical
from tandem.errors import SealedError
from tandem.services import Tandem
from tandem.services.base import Call
from tandem.store.models import AuditHead, AuditRow, CheckpointRow


def restart(world: World) -> Tandem:
    """A fresh service over the same database and key, as after a process restart."""
    svc = Tandem(world.svc.db, world.svc.key, clock=world.clock)
    svc.audit.startup_check()
    return svc


def app_with_signing_probe(svc: Tandem) -> FastAPI:
    """The real app plus one route that goes through Runner.run(signing=True),
    standing in for the ceremony/withdrawal/proof signing routes."""
    app = create_app(service=svc)

    @app.post("/test/sign")
    def sign_probe(body: dict[str, Any]) -> dict[str, Any]:
        return svc.runner.run(
            "test.sign", body["envelope"], lambda call: {"signed": True}, types="session.open", signing=True
        )

    return app


@pytest.fixture
def http_for() -> Iterator[Callable[[Tandem], TestClient]]:
    clients: list[TestClient] = []

    def make(svc: Tandem) -> TestClient:
        tc = TestClient(app_with_signing_probe(svc), raise_server_exceptions=False)
        tc.__enter__()
        clients.append(tc)
        return tc

    yield make
    for tc in clients:
        tc.__exit__(None, None, None)


def line_of(world: World, seq: int) -> str:
    with world.svc.db.read() as s:
        row = s.get(AuditRow, seq)
        assert row is not None
        return row.line


def set_line(world: World, seq: int, line: str) -> None:
    with world.svc.db.write() as s:
        s.exec(text("UPDATE auditrow SET line = :line WHERE seq = :seq").bindparams(line=line, seq=seq))


def sign_request(world: World, who: str = "olga") -> dict[str, Any]:
    return {"envelope": world.client.sign(world[who], "session.open", {})}


# Real signing routes (Runner.run(signing=True) checks the seal before anything
# else), exercised when they exist in this build of the app.
REAL_SIGNING_ROUTES = [
    ("/v1/withdrawals/operations", "alice", "withdrawal.prepare", {"keyset": "ks_missing"})
]


def real_signing_responses(world: World, http: TestClient) -> list[Any]:
    paths = {r.path for r in api_routes(http.app)}
    out = []
    for path, who, type_, body in REAL_SIGNING_ROUTES:
        if path in paths:
            env = world.client.sign(world[who], type_, body)
            out.append(http.post(path, content=canonical({"envelope": env})))
    return out


def assert_sealed(world: World, svc: Tandem, http: TestClient) -> None:
    assert svc.runner.sealed_reason is not None
    health = http.get("/v1/health").json()
    assert health["status"] == "sealed"
    assert health["sealed"] is True
    assert health["reason"]
    assert http.get("/v1/deployment").json()["sealed"] is True
    response = http.post("/test/sign", json=sign_request(world))
    assert response.status_code == 503
    assert response.json()["code"] == "sealed"
    with pytest.raises(SealedError) as err:
        svc.runner.run(
            "test.sign",
            sign_request(world)["envelope"],
            lambda call: None,
            types="session.open",
            signing=True,
        )
    assert err.value.status == 503
    for real in real_signing_responses(world, http):
        assert (real.status_code, real.json()["code"]) == (503, "sealed"), real.text


def assert_unsealed(world: World, svc: Tandem, http: TestClient) -> None:
    assert svc.runner.sealed_reason is None
    health = http.get("/v1/health").json()
    assert (health["status"], health["sealed"]) == ("ok", False)
    response = http.post("/test/sign", json=sign_request(world))
    assert response.status_code == 200, response.text
    assert response.json() == {"signed": True}
    for real in real_signing_responses(world, http):
        assert real.status_code != 503, real.text


def test_probe_route_signs_when_the_log_is_sound(world: World, http_for: Any) -> None:
    svc = restart(world)
    assert_unsealed(world, svc, http_for(svc))


@pytest.mark.parametrize("seq", [0, 1, "last"])
def test_edited_row_seals_and_restoring_it_unseals(world: World, http_for: Any, seq: Any) -> None:
    with world.svc.db.read() as s:
        n = s.get(AuditHead, 1).size
    i = n - 1 if seq == "last" else seq
    original = line_of(world, i)
    entry = json.loads(original)
    entry["data"]["tampered"] = True
    set_line(world, i, canonical(entry).decode())

    svc = restart(world)
    http = http_for(svc)
    assert_sealed(world, svc, http)
    assert f"entry {i}" in svc.runner.sealed_reason

    set_line(world, i, original)
    svc.audit.startup_check()
    assert_unsealed(world, svc, http)


def test_sql_level_string_edit_seals(world: World, http_for: Any) -> None:
    """The literal attack: UPDATE auditrow SET line = replace(line, ...)."""
    original = line_of(world, 1)
    with world.svc.db.write() as s:
        s.exec(
            text("UPDATE auditrow SET line = replace(line, :old, :new) WHERE seq = 1").bindparams(
                old='"outcome":"ok"', new='"outcome":"OK"'
            )
        )
    assert line_of(world, 1) != original
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))


def test_deleted_last_row_seals(world: World, http_for: Any) -> None:
    with world.svc.db.read() as s:
        n = s.get(AuditHead, 1).size
    with world.svc.db.write() as s:
        s.exec(text("DELETE FROM auditrow WHERE seq = :seq").bindparams(seq=n - 1))
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))


def test_deleted_middle_row_seals(world: World, http_for: Any) -> None:
    with world.svc.db.write() as s:
        s.exec(text("DELETE FROM auditrow WHERE seq = 2"))
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))


def test_rows_swapped_seals(world: World, http_for: Any) -> None:
    a, b = line_of(world, 2), line_of(world, 3)
    set_line(world, 2, b)
    set_line(world, 3, a)
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))


def test_whole_chain_rewritten_without_the_key_seals(world: World, http_for: Any) -> None:
    """Re-hash everything after an edit: the chain is consistent, the signed
    checkpoint is not."""
    from tandem.core import audit

    with world.svc.db.read() as s:
        rows = list(s.exec(select(AuditRow).order_by(AuditRow.seq)).all())
    prev = audit.GENESIS_PREV
    with world.svc.db.write() as s:
        for row in rows:
            entry = json.loads(row.line)
            if row.seq == 1:
                entry["data"]["tampered"] = True
            entry["prev"] = prev
            entry.pop("hash")
            entry["hash"] = audit.entry_hash(entry)
            prev = entry["hash"]
            s.exec(
                text("UPDATE auditrow SET line = :line, hash = :h WHERE seq = :seq").bindparams(
                    line=canonical(entry).decode(), h=entry["hash"], seq=row.seq
                )
            )
        s.exec(text("UPDATE audithead SET last_hash = :h WHERE id = 1").bindparams(h=prev))
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))


def test_unparseable_row_seals_rather_than_crashing(world: World, http_for: Any) -> None:
    set_line(world, 1, "{this is not json")
    svc = Tandem(world.svc.db, world.svc.key, clock=world.clock)
    svc.audit.startup_check()  # must not raise: the server still starts, sealed
    assert_sealed(world, svc, http_for(svc))


def test_checkpoint_with_a_bad_signature_seals_rather_than_crashing(world: World, http_for: Any) -> None:
    with world.svc.db.read() as s:
        row = s.exec(select(CheckpointRow).order_by(CheckpointRow.tree_size.desc())).first()
        assert row is not None
        doc, size = json.loads(row.doc), row.tree_size
    doc["checkpoint"]["time"] += 1  # still well-formed, signature now wrong
    with world.svc.db.write() as s:
        s.exec(
            text("UPDATE checkpointrow SET doc = :d WHERE tree_size = :n").bindparams(
                d=canonical(doc).decode(), n=size
            )
        )
    svc = Tandem(world.svc.db, world.svc.key, clock=world.clock)
    svc.audit.startup_check()
    assert_sealed(world, svc, http_for(svc))


def test_key_use_refuses_while_sealed(world: World) -> None:
    svc = restart(world)
    svc.runner.sealed_reason = "audit chain does not verify at start-up: test"
    with svc.db.write() as s:
        call = Call(session=s, now=world.clock(), deployment=svc.runner.deployment(s))
        with (
            pytest.raises(SealedError) as err,
            svc.keys.private_keys(call, keyset_id="ks_x", operation="op_x", key_ids=["k"]),
        ):
            pass
    assert err.value.code == "sealed"


def test_membership_still_works_while_sealed_and_reads_stay_open(world: World, http_for: Any) -> None:
    """Only signing is sealed: an operator and the auditor can still read the log to
    find the fault."""
    original = line_of(world, 1)
    entry = json.loads(original)
    entry["time"] += 1
    set_line(world, 1, canonical(entry).decode())
    svc = restart(world)
    http = http_for(svc)
    assert_sealed(world, svc, http)
    from tandem.client import Client

    reader = Client(http=http, clock=world.clock)
    assert reader.get(world["olga"], "/v1/members")
    assert reader.get(world["olga"], "/v1/audit/checkpoint")
    # A signing route stays sealed however many times it is tried.
    for _ in range(3):
        assert http.post("/test/sign", json=sign_request(world, "alice")).status_code == 503


def test_whole_chain_rewritten_and_checkpoints_deleted_seals(world: World, http_for: Any) -> None:
    """Without the service key the attacker cannot sign a checkpoint for a rewritten
    chain, so it deletes them all. A non-empty log with no checkpoint must not verify."""
    from tandem.core import audit

    with world.svc.db.read() as s:
        rows = list(s.exec(select(AuditRow).order_by(AuditRow.seq)).all())
    prev = audit.GENESIS_PREV
    acc = audit.MerkleAccumulator()
    with world.svc.db.write() as s:
        for row in rows:
            entry = json.loads(row.line)
            if row.seq == 1:
                entry["data"]["tampered"] = True
            entry["prev"] = prev
            entry.pop("hash")
            entry["hash"] = audit.entry_hash(entry)
            prev = entry["hash"]
            acc.append(bytes.fromhex(prev))
            s.exec(
                text("UPDATE auditrow SET line = :line, hash = :h WHERE seq = :seq").bindparams(
                    line=canonical(entry).decode(), h=entry["hash"], seq=row.seq
                )
            )
        s.exec(
            text("UPDATE audithead SET last_hash = :h, state = :st WHERE id = 1").bindparams(
                h=prev, st=canonical(acc.state()).decode()
            )
        )
        s.exec(text("DELETE FROM checkpointrow"))
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))
