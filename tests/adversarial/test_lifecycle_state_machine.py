"""A Hypothesis state machine over the whole withdrawal lifecycle, in process.

Random interleavings of create / approve (by the right and the wrong people, with
reused TOTP codes) / release (early, twice) / cancel / replayed approval envelopes /
clock jumps (past approval and request expiry) / policy changes / membership changes /
proof challenges, with the custody invariants checked after every step:

* exactly-once release: a released withdrawal has one ``withdrawal.released`` audit
  entry and a signed transaction; no withdrawal has more than one such entry;
* quorum: every release had approvals by distinct, non-requester members of each
  required role, at least the count its stored decision demands;
* nonces: ``usednonce`` holds each nonce once; no (member, TOTP step) succeeded twice;
* the audit chain verifies (``verify_chain`` and ``verify_export`` with the signed
  checkpoint);
* policy: a withdrawal is decided under a version already in force when it was made,
  and a proposed version comes into force only after the change delay.

Default size is modest (``./scripts/test``); ``TANDEM_DEEP=1`` runs a bigger search.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlmodel import select
from tests.conftest import FakeClock, World, new_member
from tests.conftest import build_world as build_fixture_world
from tests.helpers.withdrawals import (
    DELAY,
    Setup,
    btc_intent,
    eth_intent,
    fresh_sessions,
    policy_doc,
    setup,
)
from tests.helpers.withdrawals import rule as policy_rule

from tandem.api import create_app
from tandem.client import Client
from tandem.core import audit as audit_core
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.errors import Error, RemoteError
from tandem.services import Tandem
from tandem.store.db import Database
from tandem.store.models import (
    Approval,
    AuditRow,
    Member,
    PolicyRow,
    Proposal,
    UsedNonce,
    Withdrawal,
)

DEEP = os.environ.get("TANDEM_DEEP") == "1"
PEOPLE = ("alice", "mark", "bob", "cora", "olga")
CUSTODIANS = ("bob", "cora")
MANAGERS = ("alice", "mark")


class RecordingClient(Client):
    """A Client that remembers the last POST body (to replay an approval envelope)."""

    last_post: tuple[str, Any] | None = None

    def request(self, method: str, path: str, **kw: Any) -> Any:
        if method == "POST":
            self.last_post = (path, kw.get("json_body"))
        return super().request(method, path, **kw)


def build_world(directory: str) -> World:
    """The ``world`` fixture's deployment, built by hand (no pytest fixtures here)."""
    clock = FakeClock()
    db = Database(f"sqlite:///{directory}/t.db")
    db.migrate()
    svc = Tandem(db, ServiceKey.generate(), clock=clock)
    svc.audit.startup_check()
    http = TestClient(create_app(service=svc), raise_server_exceptions=False)
    client = RecordingClient(http=http, clock=clock)
    return build_fixture_world(client, clock, svc)


def refused_cleanly(exc: Error) -> None:
    """A refusal is fine; a server crash (HTTP 5xx) is not."""
    if isinstance(exc, RemoteError):
        assert exc.http_status < 500, f"server error: {exc.remote_code} {exc.message}"
        event(f"refused: {exc.remote_code}")
    else:
        event(f"refused locally: {type(exc).__name__}")


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tandem-sm-")
        self.world = build_world(self.dir)
        # Two custodians must approve (so quorum is more than "anyone said yes").
        self.setup: Setup = setup(
            self.world, policy=policy_doc(2, [policy_rule("two", custodians=2)], delay=DELAY)
        )
        self.wids: list[str] = []
        self.approvals: list[tuple[str, dict[str, Any]]] = []  # (path, body) that succeeded
        self.totp_ok: set[tuple[str, int]] = set()  # (member, step) accepted
        self.last_code: dict[str, tuple[int, str]] = {}  # member -> (step, code) last accepted
        self.eth_nonce = 100
        self.extra_members = 0

    def teardown(self) -> None:
        self.world.client.http.close()  # type: ignore[attr-defined]
        self.world.svc.db.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers -----------------------------------------------------------------------

    @property
    def c(self) -> RecordingClient:
        client = self.world.client
        assert isinstance(client, RecordingClient)
        return client

    def status(self, wid: str) -> str:
        with self.world.svc.db.read() as s:
            row = s.get(Withdrawal, wid)
            assert row is not None
            return row.status

    def code(self, who: str) -> tuple[int, str]:
        code = self.world.code(who)
        return self.world.clock() // 30, code

    def totp_accepted(self, who: str, step: int, code: str) -> None:
        assert (who, step) not in self.totp_ok, f"TOTP step {step} of {who} accepted twice"
        self.totp_ok.add((who, step))
        self.last_code[who] = (step, code)

    # --- rules ---------------------------------------------------------------------------

    @rule(chain=st.sampled_from(["bitcoin", "ethereum"]), who=st.sampled_from(PEOPLE))
    def create(self, chain: str, who: str) -> None:
        fresh_sessions(self.world)
        if chain == "bitcoin":
            intent = btc_intent(self.setup)
        else:
            self.eth_nonce += 1
            intent = eth_intent(self.setup, nonce=self.eth_nonce)
        try:
            created = self.c.withdrawals.create(self.world[who], intent)
        except Error as exc:
            refused_cleanly(exc)
            return
        assert who in MANAGERS, f"{who} ({self.world[who].role}) created a withdrawal"
        assert created["status"] == "pending"
        event("created")
        self.wids.append(created["id"])

    @rule(
        chain=st.sampled_from(["bitcoin", "ethereum"]),
        first=st.sampled_from(CUSTODIANS),
        release_by=st.sampled_from([None, *PEOPLE]),
    )
    def create_and_approve_all(self, chain: str, first: str, release_by: str | None) -> None:
        """The happy path, so releases happen often enough to test exactly-once."""
        before = len(self.wids)
        self.create(chain, "alice")
        if len(self.wids) == before:
            return
        wid = self.wids[-1]
        for who in (first, "cora" if first == "bob" else "bob"):
            self.approve_one(wid, who, reused=False)
        if release_by is not None:
            self.release_one(wid, release_by, twice=True)

    @precondition(lambda self: self.wids)
    @rule(
        data=st.data(),
        who=st.sampled_from(CUSTODIANS * 3 + PEOPLE),
        reuse_code=st.booleans(),
    )
    def approve(self, data: st.DataObject, who: str, reuse_code: bool) -> None:
        fresh_sessions(self.world)
        wid = data.draw(st.sampled_from(self.wids), label="withdrawal")
        self.approve_one(wid, who, reused=reuse_code and who in self.last_code)

    def approve_one(self, wid: str, who: str, *, reused: bool) -> None:
        step, code = self.last_code[who] if reused else self.code(who)
        before = self.status(wid)
        try:
            self.c.withdrawals.approve(self.world[who], wid, totp=code)
        except Error as exc:
            refused_cleanly(exc)
            return
        assert not reused, f"a reused TOTP code of {who} was accepted"
        assert who in CUSTODIANS, f"{who} ({self.world[who].role}) approved a withdrawal"
        assert before in ("pending", "approved"), f"approved a {before} withdrawal"
        self.totp_accepted(who, step, code)
        assert self.c.last_post is not None
        self.approvals.append(self.c.last_post)
        event("approved")

    @precondition(lambda self: self.approvals)
    @rule(data=st.data(), fresh_totp=st.booleans())
    def replay_approval(self, data: st.DataObject, fresh_totp: bool) -> None:
        fresh_sessions(self.world)
        path, body = data.draw(st.sampled_from(self.approvals), label="approval")
        if fresh_totp:
            actor = body["envelope"]["action"]["actor"]
            who = next(n for n, m in self.world.members.items() if m.member_id == actor)
            body = {**body, "totp": self.world.code(who)}
        try:
            self.c.request("POST", path, json_body=body)
        except Error as exc:
            refused_cleanly(exc)
            return
        raise AssertionError(f"a used approval envelope was accepted again at {path}")

    @precondition(lambda self: self.wids)
    @rule(data=st.data(), who=st.sampled_from(PEOPLE), twice=st.booleans())
    def release(self, data: st.DataObject, who: str, twice: bool) -> None:
        fresh_sessions(self.world)
        wid = data.draw(st.sampled_from(self.wids), label="withdrawal")
        self.release_one(wid, who, twice=twice)

    def release_one(self, wid: str, who: str, *, twice: bool) -> None:
        for _ in range(2 if twice else 1):
            before = self.status(wid)
            try:
                out = self.c.withdrawals.release(self.world[who], wid)
            except Error as exc:
                refused_cleanly(exc)
                continue
            assert before == "approved", f"released a withdrawal that was {before}"
            assert who != "olga", "an auditor released a withdrawal"
            assert out["status"] == "released"
            event("released")

    @precondition(lambda self: self.wids)
    @rule(data=st.data(), who=st.sampled_from(PEOPLE), reject=st.booleans())
    def close(self, data: st.DataObject, who: str, reject: bool) -> None:
        fresh_sessions(self.world)
        wid = data.draw(st.sampled_from(self.wids), label="withdrawal")
        before = self.status(wid)
        try:
            if reject:
                self.c.withdrawals.reject(self.world[who], wid, reason="no")
            else:
                self.c.withdrawals.cancel(self.world[who], wid)
        except Error as exc:
            refused_cleanly(exc)
            return
        assert before in ("pending", "approved"), f"closed a withdrawal that was {before}"
        assert self.status(wid) in ("rejected", "cancelled")
        if not reject:
            assert who in MANAGERS, f"{who} cancelled a withdrawal"

    @rule(seconds=st.sampled_from([0, 31, 600, 3601, DELAY + 1, 2 * DELAY]))
    def advance(self, seconds: int) -> None:
        self.world.clock.advance(seconds)
        fresh_sessions(self.world)

    @rule(custodians=st.sampled_from([1, 2]), approver=st.sampled_from(PEOPLE), go=st.integers(0, 2))
    def change_policy(self, custodians: int, approver: str, go: int) -> None:
        if go:  # rarer: every change makes pending requests' approvals stale
            return
        fresh_sessions(self.world)
        try:
            current = self.c.policy.show(self.world["olga"])
            version = int(current.get("version", current.get("policy", {}).get("version", 0)))
            doc = policy_doc(version + 1, [policy_rule(f"c{custodians}", custodians=custodians)], delay=DELAY)
            prop = self.c.policy.propose(self.world["alice"], doc)
            step, code = self.code(approver)
            self.c.members.approve(self.world[approver], prop["id"], totp=code)
        except Error as exc:
            refused_cleanly(exc)
            return
        assert approver in CUSTODIANS, f"{approver} approved a policy change"
        event("policy proposed+approved")
        self.totp_accepted(approver, step, code)

    @rule(approver=st.sampled_from(PEOPLE))
    def add_auditor(self, approver: str) -> None:
        fresh_sessions(self.world)
        self.extra_members += 1
        card = new_member(f"aud{self.extra_members}x{secrets.token_hex(2)}", Role.AUDITOR).card()
        try:
            prop = self.c.members.propose_add(self.world["alice"], card)
            step, code = self.code(approver)
            self.c.members.approve(self.world[approver], prop["id"], totp=code)
        except Error as exc:
            refused_cleanly(exc)
            return
        assert approver in CUSTODIANS, f"{approver} approved a membership change"
        event("member added")
        self.totp_accepted(approver, step, code)

    @rule(issuer=st.sampled_from(PEOPLE))
    def proof(self, issuer: str) -> None:
        fresh_sessions(self.world)
        try:
            view = self.c.proofs.issue(self.world[issuer], statement="Q", scope={"kind": "all"})
        except Error as exc:
            refused_cleanly(exc)
            return
        assert issuer in ("bob", "cora", "olga"), f"{issuer} issued a challenge"
        try:
            self.c.proofs.contribute(self.world["alice"], view["id"])
            step, code = self.code("bob")
            done = self.c.proofs.contribute(self.world["bob"], view["id"], totp=code)
        except Error as exc:
            refused_cleanly(exc)
            return
        self.totp_accepted("bob", step, code)
        assert done["bundle_hash"], done
        event("proof bundle")

    # --- invariants ---------------------------------------------------------------------

    def _audit_entries(self) -> list[dict[str, Any]]:
        lines, checkpoint = self.world.svc.audit.export()
        audit_core.verify_export(lines, checkpoint, self.world.svc.key.sign_public, workers=1)
        entries = [json.loads(line) for line in lines]
        audit_core.verify_chain(entries)
        return entries

    @invariant()
    def audit_chain_and_exactly_once(self) -> None:
        entries = self._audit_entries()
        released: dict[str, int] = {}
        for e in entries:
            if e["kind"] == "withdrawal.released":
                wid = e["data"]["withdrawal"]
                released[wid] = released.get(wid, 0) + 1
        assert all(n == 1 for n in released.values()), released
        with self.world.svc.db.read() as s:
            rows = s.exec(select(Withdrawal)).all()
            for row in rows:
                if row.status == "released":
                    assert released.get(row.id) == 1, row.id
                    assert row.signed_tx
                    assert row.txid
                else:
                    assert row.id not in released, f"{row.id} is {row.status} but has a release entry"
                    assert row.signed_tx is None

    @invariant()
    def quorum_for_every_release(self) -> None:
        with self.world.svc.db.read() as s:
            roles = {m.id: m.role for m in s.exec(select(Member)).all()}
            for row in s.exec(select(Withdrawal).where(Withdrawal.status == "released")).all():
                required: dict[str, int] = json.loads(row.decision)["required"]
                approvals = s.exec(select(Approval).where(Approval.subject == row.id)).all()
                by_role: dict[str, set[str]] = {}
                for a in approvals:
                    assert a.member != row.requester, f"{row.id}: requester approved"
                    assert roles[a.member] == a.role
                    if row.released_at is not None:
                        assert a.created_at <= row.released_at
                    by_role.setdefault(a.role, set()).add(a.member)
                for role, count in required.items():
                    got = len(by_role.get(role, set()))
                    assert got >= count, f"{row.id} released with {got}/{count} {role} approvals"

    @invariant()
    def nonces_and_totp_once(self) -> None:
        with self.world.svc.db.read() as s:
            nonces = [n.nonce for n in s.exec(select(UsedNonce)).all()]
            assert len(nonces) == len(set(nonces))
            for name, m in self.world.members.items():
                row = s.get(Member, m.member_id)
                assert row is not None
                mine = [step for (who, step) in self.totp_ok if who == name]
                if mine:
                    # The server's last accepted step never goes back below one we saw accepted.
                    assert row.totp_last_step is not None
                    assert row.totp_last_step >= max(mine) - 1
            # Every audit entry with an accepted envelope: that envelope's nonce was recorded.
            recorded = set(nonces)
            for r in s.exec(select(AuditRow)).all():
                entry = json.loads(r.line)
                env = entry.get("envelope")
                if env and entry["outcome"] == "ok" and env["action"]["type"] != "session.open":
                    assert env["action"]["nonce"] in recorded, entry["kind"]

    @invariant()
    def policy_in_force_only_after_delay(self) -> None:
        now = self.world.clock()
        with self.world.svc.db.read() as s:
            policies = {p.version: p for p in s.exec(select(PolicyRow)).all()}
            for p in policies.values():
                if p.proposal and p.proposal != "genesis":
                    prop = s.get(Proposal, p.proposal)
                    assert prop is not None
                    assert prop.approved_at is not None
                    assert p.effective_at >= prop.approved_at + DELAY, p.version
            for row in s.exec(select(Withdrawal)).all():
                pol = policies[row.policy_version]
                assert pol.effective_at <= row.created_at <= now, row.id
                newer_in_force = [
                    v
                    for v, p in policies.items()
                    if v > row.policy_version and p.effective_at <= row.created_at
                ]
                assert not newer_in_force, f"{row.id} decided under v{row.policy_version}, newer in force"


LifecycleMachine.TestCase.settings = settings(
    max_examples=60 if DEEP else 10,
    stateful_step_count=30 if DEEP else 15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = LifecycleMachine.TestCase
