"""A sealed service says so where orchestrators look: /v1/health answers 503 with the
stable code of the start-up check that sealed it, and the server log carries one ERROR
line naming the bad entry (index and kind), never an entry body or key material."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from tests.conftest import World
from tests.helpers.keysets import make_keyset
from tests.helpers.servers import serve

from tandem.api import create_app
from tandem.core.canonical import canonical
from tandem.services import Tandem
from tandem.store.models import AuditHead, AuditRow

TANDEM = [sys.executable, "-m", "tandem.cli"]


def restart(world: World) -> Tandem:
    svc = Tandem(world.svc.db, world.svc.key, clock=world.clock)
    svc.audit.startup_check()
    return svc


def test_sound_log_answers_200(world: World) -> None:
    with TestClient(create_app(service=restart(world))) as http:
        r = http.get("/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "sealed": False, "reason": None}


def test_tampered_entry_answers_503_and_logs_the_entry(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with world.svc.db.read() as s:
        n = s.get(AuditHead, 1).size
        row = s.get(AuditRow, n - 2)
        assert row is not None
        kind, line = row.kind, row.line
    entry = json.loads(line)
    entry["data"]["tampered"] = True
    with world.svc.db.write() as s:
        s.exec(
            text("UPDATE auditrow SET line = :l WHERE seq = :q").bindparams(
                l=canonical(entry).decode(), q=n - 2
            )
        )

    with caplog.at_level(logging.ERROR, logger="tandem"):
        svc = restart(world)
    with TestClient(create_app(service=svc), raise_server_exceptions=False) as http:
        r = http.get("/v1/health")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "sealed"
    assert body["sealed"] is True
    assert body["code"] == "audit_verification_failed"
    assert f"entry {n - 2}" in body["reason"]

    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "[audit_verification_failed]" in message
    assert f"audit entry {n - 2} (kind {kind})" in message
    # The entry body and the service's secrets stay out of the log.
    assert '"tampered"' not in message
    assert world.svc.key.sign_seed.hex() not in message


def test_mixed_networks_answers_503_with_its_code(world: World, caplog: pytest.LogCaptureFixture) -> None:
    bad = make_keyset(world, chains=(("bitcoin", "mainnet"), ("bitcoin", "testnet")))
    with caplog.at_level(logging.ERROR, logger="tandem"):
        svc = restart(world)
    with TestClient(create_app(service=svc), raise_server_exceptions=False) as http:
        r = http.get("/v1/health")
    assert (r.status_code, r.json()["code"]) == (503, "mixed_networks")
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "[mixed_networks]" in errors[0]
    assert f"in key set {bad.id}" in errors[0]


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["TANDEM_DATA_DIR"] = str(data)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path("src").resolve()), env.get("PYTHONPATH", "")]))
    return env


def test_real_server_on_a_tampered_database(tmp_path: Path) -> None:
    """`tandem serve` over a SQLite file holding a row the audit head does not count:
    health is 503 and stderr names the entry."""
    data = tmp_path / "data"
    env = _env(data)
    subprocess.run([*TANDEM, "init", "--data-dir", str(data)], env=env, check=True, capture_output=True)
    import sqlite3

    with sqlite3.connect(data / "tandem.db") as conn:
        conn.execute(
            "INSERT INTO auditrow (seq, hash, kind, line) VALUES (0, ?, 'withdrawal.release', ?)",
            ("00" * 32, '{"kind":"withdrawal.release"}'),
        )
    log = tmp_path / "server.log"
    proc, port = serve(env, log)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
        assert r.status_code == 503
        assert r.json()["code"] == "audit_verification_failed"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    output = log.read_text()
    lines = [ln for ln in output.splitlines() if ln.startswith("ERROR") and "sealed" in ln]
    assert len(lines) == 1, output
    assert "audit entry 0 (kind withdrawal.release)" in lines[0]
    key = (data / "service.key").read_bytes()
    assert key not in output.encode()
