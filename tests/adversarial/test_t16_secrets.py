"""THREATS 16: no private key, TOTP seed or passphrase appears in any log line,
response, exception text, repr, audit entry or table over a whole membership story
(genesis, enrolment, proposals, approvals, refusals of every kind, export)."""

from __future__ import annotations

import base64
import json
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from tests.adversarial.secret_scan import Needle, WholeRunScan, forms_of_bytes, scan, secret_needles
from tests.conftest import FakeClock, claim_token_of, make_database

from tandem.api import create_app
from tandem.client import Client
from tandem.client.members import draft_genesis, proposal_digest, sign_genesis
from tandem.core import totp
from tandem.core.audit import verify_export
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets, b64
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.errors import Error, RemoteError
from tandem.services import Tandem

PASSPHRASE = "Tr0ub4dor&3-horse-staple-battery"


# --- the scanner itself ----------------------------------------------------------------------


def test_scanner_finds_every_form_and_only_those() -> None:
    m = MemberSecrets.generate(name="alice", role=Role.MANAGER)
    needles = secret_needles(m, passphrases=[PASSPHRASE])
    seed = bytes(m._sign)
    planted = {
        "hex": f"key={seed.hex()}",
        "HEX": f"KEY={seed.hex().upper()}",
        "b64": json.dumps({"k": b64(seed)}),
        "b64-inside-longer-blob": base64.b64encode(b"xy" + seed + b"tail").decode(),
        "b64url": base64.urlsafe_b64encode(b"q" + seed).decode(),
        "b32": base64.b32encode(seed).decode().lower(),
        "totp": f"otpauth://totp/x?secret={m.totp_secret}",
        "totp-lower": m.totp_secret.lower(),
        "passphrase": f"passphrase was {PASSPHRASE}",
        "raw-bytes": b"\x00prefix" + bytes(m.seal_private_key) + b"suffix",
    }
    hits = scan(planted, needles)
    for where in planted:
        assert any(h.startswith(where + ":") for h in hits), f"missed {where}"
    clean = {"public": json.dumps(m.card().to_json()), "repr": repr(m), "id": m.member_id}
    assert scan(clean, needles) == []


def test_scanner_refuses_needles_too_short_to_be_reliable() -> None:
    with pytest.raises(ValueError, match="too short"):
        secret_needles(passphrases=["short"])
    assert len(forms_of_bytes("x", os.urandom(32))) > 10
    assert isinstance(forms_of_bytes("x", b"0" * 32)[0], Needle)


# --- the story -----------------------------------------------------------------------------


class Recorder:
    """Collects every blob a secret must never reach."""

    def __init__(self) -> None:
        self.blobs: dict[str, str | bytes] = {}
        self.n = 0

    def add(self, where: str, blob: str | bytes) -> None:
        self.n += 1
        self.blobs[f"{self.n:04d} {where}"] = blob

    def exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where} str", str(exc))
        self.add(f"{where} repr", repr(exc))
        self.add(f"{where} traceback", "".join(traceback.format_exception(exc)))
        if isinstance(exc, Error):
            self.add(f"{where} diagnostics", exc.diagnostics())
            self.add(f"{where} to_dict", json.dumps(exc.to_dict(), default=str))


def _record_http(http: TestClient, rec: Recorder) -> None:
    original = http.request

    def recording(method: str, url: Any, **kwargs: Any) -> httpx.Response:
        response = original(method, url, **kwargs)
        body = kwargs.get("content") or kwargs.get("json")
        if body is not None:
            rec.add(f"request {method} {url}", body if isinstance(body, bytes) else json.dumps(body))
        rec.add(f"response {method} {url} {response.status_code}", response.content)
        rec.add(f"headers {method} {url}", "\n".join(f"{k}: {v}" for k, v in response.headers.items()))
        return response

    http.request = recording  # type: ignore[method-assign]


def _expect_refusal(rec: Recorder, where: str, fn: Any) -> str:
    try:
        fn()
    except (RemoteError, Error) as exc:
        rec.exception(where, exc)
        return exc.remote_code if isinstance(exc, RemoteError) else exc.code
    raise AssertionError(f"{where}: expected a refusal")


def _dump_tables(svc: Tandem, rec: Recorder) -> None:
    engine = svc.db.writer
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).fetchall()
            rec.add(f"table {table}", "\n".join(repr(tuple(r)) for r in rows))


@pytest.fixture
def story_service(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[Tandem, FakeClock]]:
    # DEBUG everywhere *before* the engines exist, so SQL statements and their
    # parameters are logged (and scanned) too.
    caplog.set_level(logging.DEBUG)
    # SQLAlchemy pins its own logger to WARNING unless told otherwise.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    db = make_database(backend, tmp_path)
    clock = FakeClock()
    svc = Tandem(db, ServiceKey.generate(), clock=clock)
    svc.audit.startup_check()
    yield svc, clock
    db.drop_schema()
    db.dispose()


def test_no_secret_reaches_any_output(  # noqa: PLR0915 - one story through every flow
    story_service: tuple[Tandem, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    svc, clock = story_service
    rec = Recorder()
    people = {
        "alice": MemberSecrets.generate(name="alice", role=Role.MANAGER),
        "mark": MemberSecrets.generate(name="mark", role=Role.MANAGER),
        "bob": MemberSecrets.generate(name="bob", role=Role.CUSTODIAN),
        "cora": MemberSecrets.generate(name="cora", role=Role.CUSTODIAN),
        "olga": MemberSecrets.generate(name="olga", role=Role.AUDITOR),
    }
    nina = MemberSecrets.generate(name="nina", role=Role.CUSTODIAN)

    with TestClient(create_app(service=svc), raise_server_exceptions=False) as http:
        _record_http(http, rec)
        c = Client(http=http, clock=clock)

        def post(path: str, body: Any) -> httpx.Response:
            return http.post(path, content=canonical(body), headers={"Content-Type": "application/json"})

        def code(name: str) -> str:
            clock.advance(30)
            return c.members.totp_code(people[name])

        # genesis and enrolment
        doc = draft_genesis(
            deployment="dep_" + os.urandom(8).hex(),
            entity="Example Fund SICAV",
            created_at=clock(),
            service=c.deployment()["service"],
            cards=[m.card() for m in people.values()],
        )
        c.members.submit_genesis(
            doc, dict(sign_genesis(m, doc) for m in people.values()), claim_token=claim_token_of(svc)
        )
        for m in people.values():
            c.members.enrol_totp(m)

        # keystores, as a member's machine uses them
        for m in people.values():
            data = m.to_keystore(PASSPHRASE, log2_n=14)
            rec.add(f"keystore-card {m.name}", json.dumps(json.loads(data)["card"]))
            MemberSecrets.from_keystore(data, PASSPHRASE)
            _expect_refusal(
                rec,
                "keystore wrong passphrase",
                lambda d=data: MemberSecrets.from_keystore(d, PASSPHRASE[:-1]),
            )

        # the happy path
        for person in people.values():
            c.get(person, "/v1/members")
        prop = c.members.propose_add(people["alice"], nina.card())
        c.members.approve(people["bob"], prop["id"], totp=code("bob"))
        removal = c.members.propose_remove(people["bob"], people["mark"].member_id)
        c.members.reject(people["alice"], removal["id"], reason="not now")
        c.get(people["olga"], "/v1/proposals")
        c.get(people["olga"], f"/v1/proposals/{prop['id']}")

        # refusals of every family
        pending = c.members.propose_add(
            people["mark"], MemberSecrets.generate(name="nell", role=Role.AUDITOR).card()
        )
        digest = proposal_digest(pending)
        bad = f"{(int(c.members.totp_code(people['cora'])) + 1) % 1_000_000:06d}"
        _expect_refusal(
            rec,
            "wrong totp",
            lambda: c.request(
                "POST",
                f"/v1/proposals/{pending['id']}/approve",
                json_body={
                    "envelope": c.sign(
                        people["cora"], "proposal.approve", {"proposal": pending["id"], "digest": digest}
                    ),
                    "totp": bad,
                },
            ),
        )
        _expect_refusal(
            rec, "self approval", lambda: c.members.approve(people["mark"], pending["id"], totp=code("mark"))
        )
        _expect_refusal(
            rec,
            "auditor proposes",
            lambda: c.members.propose_add(
                people["olga"], MemberSecrets.generate(name="zed", role=Role.AUDITOR).card()
            ),
        )
        _expect_refusal(
            rec,
            "duplicate key",
            lambda: c.members.propose_add(
                people["alice"],
                MemberSecrets(
                    name="bobby",
                    role=Role.CUSTODIAN,
                    sign_seed=bytes(people["bob"]._sign),
                    seal_private=os.urandom(32),
                    totp_secret=people["bob"].totp_secret,
                ).card(),
            ),
        )
        env = c.sign(people["cora"], "proposal.approve", {"proposal": pending["id"], "digest": digest})
        c.request(
            "POST",
            f"/v1/proposals/{pending['id']}/approve",
            json_body={"envelope": env, "totp": code("cora")},
        )
        _expect_refusal(
            rec,
            "replay",
            lambda: c.request(
                "POST",
                f"/v1/proposals/{pending['id']}/approve",
                json_body={"envelope": env, "totp": code("cora")},
            ),
        )
        edited = json.loads(json.dumps(env))
        edited["action"]["body"]["digest"] = "0" * 64
        _expect_refusal(
            rec,
            "bad signature",
            lambda: c.request(
                "POST",
                f"/v1/proposals/{pending['id']}/approve",
                json_body={"envelope": edited, "totp": code("cora")},
            ),
        )
        _expect_refusal(
            rec,
            "garbage sealed seed",
            lambda: c.request(
                "POST",
                "/v1/totp/enrol",
                json_body={
                    "envelope": c.sign(
                        people["olga"], "member.totp_enrol", {"sealed_secret": b64(os.urandom(96))}
                    ),
                    "confirm_code": "123456",
                    "totp": code("olga"),
                },
            ),
        )
        _expect_refusal(
            rec,
            "seed swap without old code",
            lambda: c.members.enrol_totp(
                MemberSecrets(
                    name="olga",
                    role=Role.AUDITOR,
                    sign_seed=bytes(people["olga"]._sign),
                    seal_private=bytes(people["olga"].seal_private_key),
                    totp_secret=nina.totp_secret,
                )
            ),
        )
        for raw in (b"{not json", b'{"envelope":{},"envelope":{}}', b'{"envelope":1.5}', b"[" * 200):
            rec.add("raw refusal", post("/v1/sessions", raw.decode()).text)  # type: ignore[arg-type]
        rec.add(
            "unknown field",
            post("/v1/sessions", {"envelope": {}, "totp_secret": people["bob"].totp_secret[:3]}).text,
        )
        rec.add("no session", http.get("/v1/members").text)
        rec.add("bad session", http.get("/v1/members", headers={"Authorization": "Bearer nope"}).text)

        # brute force to a lock-out, then the operator unlock
        target = c.members.propose_add(
            people["alice"], MemberSecrets.generate(name="nora", role=Role.AUDITOR).card()
        )
        tdig = proposal_digest(target)
        for _ in range(totp.LOCK_AFTER + 6):
            clock.advance(61)
            _expect_refusal(
                rec,
                "brute force",
                lambda: c.request(
                    "POST",
                    f"/v1/proposals/{target['id']}/approve",
                    json_body={
                        "envelope": c.sign(
                            people["bob"], "proposal.approve", {"proposal": target["id"], "digest": tdig}
                        ),
                        "totp": "000000" if c.members.totp_code(people["bob"]) != "000000" else "111111",
                    },
                ),
            )
        svc.members.unlock_totp(people["bob"].member_id)

        # service-level refusals, exceptions caught where they are raised
        _expect_refusal(
            rec,
            "service wrong totp",
            lambda: svc.proposals.decide_proposal(
                c.sign(people["bob"], "proposal.approve", {"proposal": target["id"], "digest": tdig}),
                totp="000001",
                approve=True,
            ),
        )
        _expect_refusal(rec, "service unseal", lambda: svc.key.unseal(os.urandom(80)))

        # audit: export, proofs, offline verification
        c._sessions.clear()
        lines, checkpoint = c.audit.export(people["olga"])
        verify_export(lines, checkpoint, svc.key.sign_public)
        for line in lines:
            rec.add("audit line", line)
        rec.add("checkpoint", json.dumps(checkpoint))
        rec.add("inclusion", json.dumps(c.get(people["olga"], "/v1/audit/inclusion/3")))
        rec.add(
            "consistency", json.dumps(c.get(people["olga"], "/v1/audit/consistency", old=2, new=len(lines)))
        )
        rec.add("deployment", json.dumps(c.deployment(refresh=True)))
        rec.add("health", http.get("/v1/health").text)

    # reprs of everything that holds or touches a secret
    for m in [*people.values(), nina]:
        rec.add(f"repr {m.name}", repr(m))
        rec.add(f"str {m.name}", str(m))
        rec.add(f"repr card {m.name}", repr(m.card()))
    rec.add("repr service key", repr(svc.key))
    rec.add("repr service", repr(svc))
    rec.add("repr members", repr(svc.members.list_members()))
    _dump_tables(svc, rec)

    # every log record, formatted, with any exception text
    loggers = {r.name.split(".")[0] for r in caplog.records}
    assert {"sqlalchemy", "httpx"} <= loggers, (
        f"DEBUG logging missed sources; the scan would be vacuous: {loggers}"
    )
    for r in caplog.records:
        rec.add(f"log {r.name}", r.getMessage() + "\n" + (r.exc_text or "") + "\n" + repr(r.args))
    rec.add("log text", caplog.text)

    needles = secret_needles(*people.values(), nina, svc.key, passphrases=[PASSPHRASE])
    hits = scan(rec.blobs, needles)
    assert hits == [], "secrets leaked:\n" + "\n".join(hits[:50])
    assert len(rec.blobs) > 200  # the story really ran


# --- the whole-run collector -------------------------------------------------------------------


def test_whole_run_collector_sees_keys_logs_responses_and_errors(http: TestClient, clock: FakeClock) -> None:
    """``WholeRunScan`` (for the root conftest) records what a run creates and emits; a
    genesis-and-refusals story through it is clean, and a planted leak is caught."""
    watch = WholeRunScan()
    watch.start()
    try:
        people = [
            MemberSecrets.generate(name=n, role=r)
            for n, r in [("alice", Role.MANAGER), ("bob", Role.CUSTODIAN), ("olga", Role.AUDITOR)]
        ]
        c = Client(http=http, clock=clock)
        doc = draft_genesis(
            deployment="dep_" + os.urandom(8).hex(),
            entity="E",
            created_at=clock(),
            service=c.deployment()["service"],
            cards=[m.card() for m in people],
        )
        c.members.submit_genesis(
            doc,
            dict(sign_genesis(m, doc) for m in people),
            claim_token=claim_token_of(http.app.state.service),
        )
        for m in people:
            c.members.enrol_totp(m)
        data = people[0].to_keystore(PASSPHRASE, log2_n=14)
        with pytest.raises(Error):
            MemberSecrets.from_keystore(data, PASSPHRASE + "x")
        with pytest.raises(RemoteError):
            c.members.propose_add(people[2], MemberSecrets.generate(name="zed", role=Role.AUDITOR).card())
        c._sessions.clear()
        c.audit.export(people[2])
    finally:
        clean = watch.finish()
    assert len(watch.holders) >= 4
    assert PASSPHRASE in watch.passphrases
    assert any(k.split(" ", 1)[1].startswith("response") for k in watch.blobs)
    assert any(k.split(" ", 1)[1].startswith("error") for k in watch.blobs)
    assert clean == []

    leaky = WholeRunScan()
    leaky.start()
    try:
        m = MemberSecrets.generate(name="mallory", role=Role.MANAGER)
        logging.getLogger("tandem.test").warning("collected: %s", m.member_id)
        # Planted straight into the collector, not logged, so that a scan wired around
        # the whole run (see WholeRunScan) does not see this deliberate leak.
        leaky.add("planted", f"oops {m.totp_secret}")
    finally:
        hits = leaky.finish()
    assert any("mallory.totp_secret" in h for h in hits)
    assert any(k.split(" ", 1)[1].startswith("log tandem.test") for k in leaky.blobs)
