"""SIGKILL at each named fault point of ceremony execution (THREATS 13): after the crash
there is no key set or a complete one, no lost audit entry, and the chain verifies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlmodel import select

from tandem.core.service_key import ServiceKey
from tandem.services import Tandem
from tandem.store.db import Database
from tandem.store.models import AddressRow, AuditRow, Ceremony, KeyRow, KeySet

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from tests.helpers.faults import sigkill_at
    from tandem.services.base import install_fault_hook
    from tandem.api import create_app
    from tandem.client import Client
    from tandem.client.members import draft_genesis, sign_genesis
    from tandem.core import keygen
    from tandem.core.identity import MemberSecrets
    from tandem.core.roles import Role
    from tandem.core.service_key import ServiceKey
    from tandem.services import Tandem
    from tandem.store.db import Database

    workdir = Path(sys.argv[1])
    install_fault_hook(sigkill_at(sys.argv[3]))
    now = [1_790_000_000]
    key = ServiceKey.generate()
    (workdir / "service.key").write_bytes(key.to_file_bytes())
    db = Database(f"sqlite:///{workdir / 'tandem.db'}")
    db.migrate()
    svc = Tandem(db, key, clock=lambda: now[0])
    svc.audit.startup_check()
    http = TestClient(create_app(service=svc), raise_server_exceptions=False)
    client = Client(http=http, clock=lambda: now[0])
    people = {n: MemberSecrets.generate(name=n, role=r) for n, r in
              (("alice", Role.MANAGER), ("bob", Role.CUSTODIAN), ("olga", Role.AUDITOR))}
    doc = draft_genesis(deployment="dep_crash", entity="Crash Test Fund",
                        created_at=now[0], service=client.deployment()["service"],
                        cards=[m.card() for m in people.values()])
    client.members.submit_genesis(doc, dict(sign_genesis(m, doc) for m in people.values()),
                                  claim_token=svc.members.issue_claim_token())
    for m in people.values():
        client.members.enrol_totp(m)
    definition = (Path(sys.argv[2]) / "ceremonies" / "bitcoin-testnet-cold.toml").read_text()
    mine, theirs = keygen.make_contribution(), keygen.make_contribution()
    view = client.ceremonies.propose(people["alice"], definition, contribution=mine)
    (workdir / "ceremony").write_text(view["id"])
    now[0] += 30
    client.ceremonies.approve(people["bob"], view["id"], contribution=theirs,
                              totp=client.members.totp_code(people["bob"]))
    client.ceremonies.reveal(people["alice"], view["id"], mine)
    client.ceremonies.reveal(people["bob"], view["id"], theirs)  # executes: the fault point fires
    print("survived")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["ceremony.after_keys", "ceremony.after_keyset_row", "ceremony.before_commit"]
)
def test_sigkill_during_execution_leaves_no_partial_keyset(tmp_path: Path, point: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(ROOT), point], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert "survived" not in proc.stdout

    db = Database(f"sqlite:///{tmp_path / 'tandem.db'}")
    key = ServiceKey.from_file_bytes((tmp_path / "service.key").read_bytes())
    svc = Tandem(db, key, clock=lambda: 1_790_000_100)
    svc.audit.startup_check()
    assert svc.runner.sealed_reason is None  # the audit chain and its checkpoint verify
    ceremony_id = (tmp_path / "ceremony").read_text()
    with db.read() as session:
        assert session.exec(select(KeySet)).all() == []
        assert session.exec(select(KeyRow)).all() == []
        assert session.exec(select(AddressRow)).all() == []
        row = session.get(Ceremony, ceremony_id)
        assert row is not None
        assert row.status == "revealing"
        assert row.transcript is None
        kinds = [r.kind for r in session.exec(select(AuditRow)).all()]
    # the first reveal committed and is recorded; the killed one left nothing behind
    assert kinds.count("ceremony.revealed") == 1
    assert "ceremony.executed" not in kinds
    db.dispose()
