"""Shared fixtures. Every database test runs on SQLite, and on PostgreSQL when
TANDEM_TEST_POSTGRES_URL is set (CI sets it, and then a connection failure is an
error, never a skip)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.helpers.claim import claim_token_of

from tandem.api import create_app
from tandem.client import Client
from tandem.client.members import draft_genesis, sign_genesis
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.services import Tandem
from tandem.store.db import Database

T0 = 1_790_000_000  # a fixed "now" (2026-09-21); tests move it forward explicitly
PG_URL = os.environ.get("TANDEM_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", "postgres"] if PG_URL else ["sqlite"]
__all__ = ["claim_token_of"]  # re-exported for the tests that build their own services


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_database(backend: str, tmp_path: Path) -> Database:
    """A fresh, migrated database of its own (for tests that need a private one)."""
    if backend == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'tandem.db'}")
    else:
        db = Database(PG_URL, schema="t_" + secrets.token_hex(6))
        db.create_schema()
    db.migrate()
    return db


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once per worker; each test gets a copy (migrations run for real here,
    and test_migrations checks they match the tables)."""
    path = tmp_path_factory.mktemp("template") / "tandem.db"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    db.dispose()
    return path


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """One migrated schema per worker; each test starts from emptied tables."""
    if not PG_URL:
        yield ""
        return
    db = Database(PG_URL, schema="t_" + secrets.token_hex(6))
    db.create_schema()
    db.migrate()
    db.dispose()
    yield str(db.schema)
    db.drop_schema()


def _empty_tables(db: Database) -> None:
    from sqlalchemy import text
    from sqlmodel import SQLModel

    names = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with db.writer.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def db(backend: str, tmp_path: Path, sqlite_template: Path, pg_schema: str) -> Iterator[Database]:
    if backend == "sqlite":
        import shutil

        shutil.copyfile(sqlite_template, tmp_path / "tandem.db")
        database = Database(f"sqlite:///{tmp_path / 'tandem.db'}")
    else:
        database = Database(PG_URL, schema=pg_schema)
        _empty_tables(database)
    yield database
    database.dispose()


@pytest.fixture
def service_key() -> ServiceKey:
    return ServiceKey.generate()


@pytest.fixture
def svc(db: Database, service_key: ServiceKey, clock: FakeClock) -> Tandem:
    service = Tandem(db, service_key, clock=clock)
    service.audit.startup_check()
    claim_token_of(service)
    return service


@pytest.fixture
def http(svc: Tandem) -> Iterator[TestClient]:
    with TestClient(create_app(service=svc), raise_server_exceptions=False) as tc:
        yield tc


@pytest.fixture
def client(http: TestClient, clock: FakeClock) -> Client:
    return Client(http=http, clock=clock)


@dataclass
class World:
    """A deployment with two managers, two custodians and an auditor, all TOTP-enrolled."""

    client: Client
    clock: FakeClock
    svc: Tandem
    members: dict[str, MemberSecrets] = field(default_factory=dict)
    deployment: str = ""

    def __getitem__(self, name: str) -> MemberSecrets:
        return self.members[name]

    def code(self, name: str) -> str:
        """A fresh TOTP code: steps the clock to the next 30 s window first."""
        self.clock.advance(30)
        return self.client.members.totp_code(self.members[name])


def new_member(name: str, role: Role) -> MemberSecrets:
    return MemberSecrets.generate(name=name, role=role)


@pytest.fixture
def world(client: Client, clock: FakeClock, svc: Tandem) -> World:
    return build_world(client, clock, svc)


def build_world(client: Client, clock: FakeClock, svc: Tandem) -> World:
    """Genesis with two managers, two custodians and an auditor, all TOTP-enrolled."""
    people = {
        "alice": new_member("alice", Role.MANAGER),
        "mark": new_member("mark", Role.MANAGER),
        "bob": new_member("bob", Role.CUSTODIAN),
        "cora": new_member("cora", Role.CUSTODIAN),
        "olga": new_member("olga", Role.AUDITOR),
    }
    info = client.deployment()
    doc = draft_genesis(
        deployment="dep_" + secrets.token_hex(8),
        entity="Example Fund SICAV",
        created_at=clock(),
        service=info["service"],
        cards=[m.card() for m in people.values()],
    )
    signatures = dict(sign_genesis(m, doc) for m in people.values())
    # Submitting pins the client to this genesis (every member here signed it).
    result = client.members.submit_genesis(doc, signatures, claim_token=claim_token_of(svc))
    for m in people.values():
        client.members.enrol_totp(m)
    return World(
        client=client, clock=clock, svc=svc, members=people, deployment=result["deployment"]
    )


@pytest.fixture(scope="session", autouse=True)
def whole_run_secret_scan() -> Iterator[None]:
    """THREATS 16 over the whole run: every key, share, TOTP seed and passphrase a test
    creates is searched for (hex, base64, base32, WIF forms) in every HTTP response,
    log record, error text and repr the run produced. Each xdist worker scans what it ran."""
    from tests.adversarial.secret_scan import WholeRunScan

    scan = WholeRunScan()
    scan.start()
    yield
    hits = scan.finish()
    assert not hits, "secrets leaked:\n" + "\n".join(hits[:50])
