"""THREATS 13 against a real server: SIGKILL at each named fault point of ceremony
execution (keygen, reshare, import), approval and release, then a restart without the
fault. After every crash:

- the server starts unsealed and the exported audit log verifies offline against the
  pinned service key (chain, Merkle root, signed checkpoint, every actor signature);
- every entry exported before the crash is still there, in order (a prefix);
- no withdrawal has more than one ``withdrawal.released`` entry; a withdrawal holds a
  signed transaction exactly when it has that entry, the entry's txid is the row's, and
  every idempotent answer recorded for it carries that same transaction;
- a key set exists exactly when an entry says it was made or imported, always with all
  its keys and addresses, and its generation counts its reshares: a crashed ceremony
  left none or a complete one;
- and the interrupted work can then be finished (a reveal retried, a reshare or import
  proposed again, shares given to a new operation key), after which all of the above
  still holds and the release signs exactly once.

``tandem serve`` runs as a subprocess started through ``tests.helpers.faults``, so the
process kills itself with SIGKILL at that point in the middle of a request. Each point is killed
twice, on two independent clones of one template deployment, in parallel. SQLite
always; PostgreSQL too when TANDEM_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import json
import secrets
import signal
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from scripts.harness import (
    DEFINITION,
    KEYS_PER_KEYSET,
    RESHARE,
    Deployment,
    Store,
    TotpSteps,
    build_deployment,
    utxos_paying,
)
from sqlmodel import select
from tests.adversarial.server_harness import Server, verified_export
from tests.conftest import BACKENDS, PG_URL
from tests.helpers.withdrawals import verify_bitcoin

from tandem.client import Client
from tandem.client import ceremony as cc
from tandem.core import ceremony as ccore
from tandem.core import keygen
from tandem.core.canonical import loads_strict
from tandem.errors import RemoteError, ServerUnreachableError
from tandem.store.models import AddressRow, Ceremony, Idempotency, KeyRow, KeySet, Withdrawal

pytestmark = pytest.mark.slow

KILLS_PER_POINT = 2
MAKERS = ("ceremony.executed", "keyset.imported")

# (fault point, flow that reaches it). ceremony.before_commit sits in both executions.
SCENARIOS = [
    ("ceremony.after_keys", "keygen"),
    ("ceremony.after_keyset_row", "keygen"),
    ("ceremony.before_commit", "keygen"),
    ("ceremony.reshare_after_dek", "reshare"),
    ("ceremony.reshare_after_keyset", "reshare"),
    ("ceremony.before_commit", "reshare"),
    ("keyset.import_after_dek", "import"),
    ("withdrawal.approve.before_commit", "approve"),
    ("release.before_sign", "release"),
    ("release.after_sign", "release"),
]


@dataclass
class Template:
    store: Store
    dep: Deployment
    workdir: Path


@pytest.fixture(scope="module", params=BACKENDS)
def template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"t13-{backend}")
    store = Store.new(backend, workdir / "template", pg_admin_url=PG_URL, prefix="tandem_crash_tpl")
    try:
        dep = build_deployment(store, managers=2, custodians=4, export_keyset=True, release_one=True)
        yield Template(store, dep, workdir)
    finally:
        if store.pg is not None:
            store.pg.wait_dropped()
        store.drop()


# --- one deployment, crashed and restarted ------------------------------------------------------


@dataclass
class Run:
    """A clone of the template, and the server currently serving it."""

    store: Store
    dep: Deployment
    totp: TotpSteps = field(default_factory=TotpSteps)
    server: Server | None = None
    client: Client = field(init=False)
    servers: list[Server] = field(default_factory=list)
    pin: Any = None

    def start(self, fault: str | None = None) -> None:
        self.server = Server(self.store, fault_point=fault).start()
        self.servers.append(self.server)
        if self.pin is None:  # this run's members' own pin, not the template's
            self.pin = self.dep.pin.copy()
        self.client = Client(self.server.url, pin=self.pin)

    def stop(self) -> None:
        if self.server is not None:
            self.client.http.close()
            self.server.stop()

    def code(self, name: str) -> str:
        return self.totp.code(self.dep[name])

    def export(self) -> list[str]:
        return verified_export(self.client, self.dep.auditor, self.dep.service_public)

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.log.name} (fault={s.fault_point})\n{s.log_tail(1500)}" for s in self.servers
        )


def crash(run: Run, fatal: Callable[[], Any]) -> None:
    """Make the call that reaches the fault point: the server dies by SIGKILL mid-request
    and the caller gets no answer at all."""
    assert run.server is not None
    try:
        answer = fatal()
    except ServerUnreachableError:
        pass  # the client's word for a connection that died with no answer
    else:
        pytest.fail(f"the fault point was not reached; the server answered {answer!r}"[:500])
    assert run.server.wait_exit(30) == -signal.SIGKILL
    run.client.http.close()


def check_invariants(run: Run, before: list[str]) -> list[str]:
    """Everything THREATS 13 promises after a restart; returns the verified export."""
    assert run.server is not None
    assert run.server.health() == {"status": "ok", "sealed": False, "reason": None}
    lines = run.export()
    assert lines[: len(before)] == before, "an entry committed before the crash was lost or changed"
    entries = [json.loads(line) for line in lines]

    released = Counter(e["data"]["withdrawal"] for e in entries if e["kind"] == "withdrawal.released")
    txids = {
        e["data"]["withdrawal"]: e["data"]["txid"] for e in entries if e["kind"] == "withdrawal.released"
    }
    made = Counter(e["data"]["keyset"] for e in entries if e["kind"] in MAKERS)
    reshares = Counter(e["data"]["keyset"] for e in entries if e["kind"] == "keyset.reshared")

    db = run.store.database()
    try:
        with db.read() as session:
            keysets = {k.id: k for k in session.exec(select(KeySet)).all()}
            keys = Counter(k.keyset for k in session.exec(select(KeyRow)).all())
            addresses = Counter(a.keyset for a in session.exec(select(AddressRow)).all())
            ceremonies = session.exec(select(Ceremony)).all()
            withdrawals = session.exec(select(Withdrawal)).all()
            answers = session.exec(select(Idempotency)).all()
    finally:
        db.dispose()

    # Key sets: none, or complete, and each one accounted for by exactly one entry.
    assert set(keys) <= set(keysets), "key rows without their key set"
    assert set(addresses) <= set(keysets), "address rows without their key set"
    assert set(made) == set(keysets), "a key set without its entry, or an entry without its key set"
    assert max(made.values(), default=1) == 1, "a key set made twice"
    for ks in keysets.values():
        assert (keys[ks.id], addresses[ks.id]) == (KEYS_PER_KEYSET, KEYS_PER_KEYSET), f"{ks.id} incomplete"
        assert ks.generation == 1 + reshares[ks.id], f"{ks.id} generation does not count its reshares"
    for c in ceremonies:
        if c.status in (ccore.EXECUTED, ccore.COMPLETE):
            assert c.keyset in keysets, f"{c.id} is {c.status} without its key set"
            assert c.kind == "import" or c.transcript is not None, f"{c.id} executed without a transcript"
        else:
            assert c.keyset is None, f"{c.id} is {c.status} but names a key set"
            assert c.transcript is None, f"{c.id} is {c.status} but has a transcript"

    # Releases: at most one entry each, and a signature exactly when there is an entry.
    assert max(released.values(), default=1) == 1, f"released twice: {released}"
    by_id = {w.id: w for w in withdrawals}
    assert set(released) <= set(by_id)
    for w in withdrawals:
        signed = w.signed_tx is not None
        assert signed == (w.status == "released") == (w.id in released), (
            f"{w.id}: {w.status}, signed={signed}"
        )
        if signed:
            assert w.txid == txids[w.id]
            ctx = loads_strict(w.context)
            verify_bitcoin(w.signed_tx, ctx["prevouts"], bytes.fromhex(ctx["public_key"]))
    for a in answers:
        doc = loads_strict(a.response)
        if a.status_code == 200:
            assert by_id[doc["id"]].signed_tx == doc["signed_tx"], (
                "an idempotent answer with another signature"
            )
    return lines


# --- flows: stage up to the fault, assert what the crash left, then finish the work -------------


class Flow:
    warm_up = True  # may release a withdrawal on the faulted server before staging

    def __init__(self, run: Run) -> None:
        self.run = run
        self.manager = run.dep["manager-1"]
        self.custodian = run.dep["custodian-1"]

    @property
    def client(self) -> Client:
        return self.run.client

    def stage(self) -> Callable[[], Any]:
        raise NotImplementedError

    def after_crash(self, entries: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        raise NotImplementedError

    def create(self) -> dict[str, Any]:
        return self.client.withdrawals.create(
            self.manager,
            {
                "wallet": self.run.dep.keyset_id,
                "chain": "bitcoin",
                "network": "testnet",
                "asset": "BTC",
                "amount": "30000",
                "from": self.run.dep.addresses[0]["address"],
                "destination": self.run.dep.destination,
                "bitcoin": {
                    "utxos": utxos_paying(self.run.dep.addresses[0]["address"], [80_000]),
                    "fee_rate": 3,
                },
            },
        )

    def release_one_first(self) -> None:
        """A whole withdrawal before the crash: its entries and its signature must survive."""
        wid = self.create()["id"]
        self.client.withdrawals.approve(self.run.dep["custodian-3"], wid, totp=self.run.code("custodian-3"))
        assert self.client.withdrawals.release(self.manager, wid)["status"] == "released"

    def db_keyset(self, keyset_id: str) -> KeySet | None:
        db = self.run.store.database()
        try:
            with db.read() as session:
                row: KeySet | None = session.get(KeySet, keyset_id)
                return row
        finally:
            db.dispose()


class Keygen(Flow):
    """The last reveal executes the ceremony in its own transaction."""

    def stage(self) -> Callable[[], Any]:
        self.id = cc.new_ceremony_id()
        mine, self.theirs = keygen.make_contribution(), keygen.make_contribution()
        self.client.ceremonies.propose(
            self.manager, DEFINITION.read_text(), contribution=mine, ceremony_id=self.id
        )
        self.client.ceremonies.approve(
            self.custodian, self.id, totp=self.run.code("custodian-1"), contribution=self.theirs
        )
        self.client.ceremonies.reveal(self.manager, self.id, mine)
        return lambda: self.client.ceremonies.reveal(self.custodian, self.id, self.theirs)

    def after_crash(self, entries: list[dict[str, Any]]) -> None:
        view = self.client.ceremonies.get(self.run.dep.auditor, self.id)
        assert view["status"] == ccore.REVEALING
        assert not [
            e for e in entries if e["kind"] == "ceremony.executed" and e["data"]["ceremony"] == self.id
        ]

    def recover(self) -> None:
        view = self.client.ceremonies.reveal(self.custodian, self.id, self.theirs)  # the same reveal, again
        assert view["status"] == ccore.EXECUTED
        for member in (self.manager, self.custodian):
            self.client.ceremonies.countersign(member, self.id)
        transcript = self.client.ceremonies.transcript(self.manager, self.id)
        ccore.verify_transcript(transcript).require()
        keyset = self.client.keysets.get(self.run.dep.auditor, transcript["keyset"]["id"])
        assert {a["address"] for a in keyset["addresses"]} == {a["address"] for a in transcript["addresses"]}


class Reshare(Flow):
    """The custodian's approval (quorum) executes the reshare in its transaction."""

    def stage(self) -> Callable[[], Any]:
        self.keyset = self.run.dep.keyset_id
        before = self.db_keyset(self.keyset)
        assert before is not None
        self.before = (before.sealed, before.generation, before.status)
        self.id = cc.new_ceremony_id()
        self.client.ceremonies.propose(
            self.manager, RESHARE.read_text(), ceremony_id=self.id, target_keyset=self.keyset
        )
        return lambda: self.client.ceremonies.approve(
            self.custodian, self.id, totp=self.run.code("custodian-1")
        )

    def after_crash(self, entries: list[dict[str, Any]]) -> None:
        view = self.client.ceremonies.get(self.run.dep.auditor, self.id)
        assert view["status"] == ccore.PROPOSED
        after = self.db_keyset(self.keyset)
        assert after is not None
        assert (after.sealed, after.generation, after.status) == self.before, "the key set changed"

    def recover(self) -> None:
        # The operation key both shares were resealed to died with the process.
        self.client.ceremonies.abort(self.manager, self.id, reason="operation key lost in a crash")
        transcript = self.client.ceremonies.run(
            proposer=self.manager,
            approvers=[self.run.dep["custodian-2"]],
            definition_text=RESHARE.read_text(),
            code=self.run.code,
            target_keyset=self.keyset,
        )
        assert transcript["keyset"]["generation"] == self.before[1] + 1


class Import(Flow):
    """The custodian's approval rebuilds the DEK and restores the exported key set."""

    def stage(self) -> Callable[[], Any]:
        export = self.run.dep.export
        assert export is not None
        self.export: dict[str, Any] = export
        self.keyset = export["keyset"]["id"]
        assert self.db_keyset(self.keyset) is None
        self.id = self.client.keysets.propose_import(self.manager, self.export)["id"]
        return lambda: self.client.keysets.approve_import(
            self.custodian, self.id, export=self.export, totp=self.run.code("custodian-1")
        )

    def after_crash(self, entries: list[dict[str, Any]]) -> None:
        assert self.db_keyset(self.keyset) is None
        view = self.client.ceremonies.get(self.run.dep.auditor, self.id)
        assert view["status"] == ccore.PROPOSED

    def recover(self) -> None:
        self.client.ceremonies.abort(self.manager, self.id, reason="operation key lost in a crash")
        again = self.client.keysets.propose_import(self.manager, self.export)
        done = self.client.keysets.approve_import(
            self.run.dep["custodian-2"],
            again["id"],
            export=self.export,
            totp=self.run.code("custodian-2"),
        )
        assert done["status"] == ccore.COMPLETE
        keyset = self.client.keysets.get(self.run.dep.auditor, self.keyset)
        assert [k["public_key"] for k in keyset["keys"]] == [k["public_key"] for k in self.export["keys"]]


class Withdraw(Flow):
    warm_up = False  # a release on the faulted server would reach the fault
    id: str

    def release_and_retry(self, member_name: str, key: str, envelope: dict[str, Any]) -> None:
        member = self.run.dep[member_name]
        out = self.client.withdrawals.release(member, self.id, idempotency_key=key, envelope=envelope)
        assert out["status"] == "released"
        again = self.client.withdrawals.release(member, self.id, idempotency_key=key, envelope=envelope)
        assert again == out
        view = self.client.withdrawals.get(self.run.dep.auditor, self.id)
        verify_bitcoin(out["signed_tx"], view["prevouts"], bytes.fromhex(view["public_key"]))


class Approve(Withdraw):
    def stage(self) -> Callable[[], Any]:
        self.id = self.create()["id"]
        return lambda: self.client.withdrawals.approve(
            self.custodian, self.id, totp=self.run.code("custodian-1")
        )

    def after_crash(self, entries: list[dict[str, Any]]) -> None:
        view = self.client.withdrawals.get(self.run.dep.auditor, self.id)
        assert (view["status"], view["approvals"]) == ("pending", [])
        assert not [
            e for e in entries if e["kind"] == "withdrawal.approved" and e["data"]["withdrawal"] == self.id
        ]

    def recover(self) -> None:
        # The request's operation key died with the process: a new one, and the
        # manager's share again; the custodian's approval carries its share.
        self.client.withdrawals.renew_operation(self.manager, self.id)
        self.client.withdrawals.contribute_share(self.manager, self.id)
        other = self.run.dep["custodian-2"]
        approved = self.client.withdrawals.approve(other, self.id, totp=self.run.code("custodian-2"))
        assert approved["status"] == "approved"
        self.release_and_retry(
            "custodian-2",
            "after-crash-" + secrets.token_hex(4),
            self.client.withdrawals.release_envelope(other, self.id),
        )


class Release(Withdraw):
    def stage(self) -> Callable[[], Any]:
        self.id = self.create()["id"]
        approved = self.client.withdrawals.approve(self.custodian, self.id, totp=self.run.code("custodian-1"))
        assert approved["status"] == "approved"
        self.key = "crash-" + secrets.token_hex(8)
        self.envelope = self.client.withdrawals.release_envelope(self.custodian, self.id)
        return lambda: self.client.withdrawals.release(
            self.custodian, self.id, idempotency_key=self.key, envelope=self.envelope
        )

    def after_crash(self, entries: list[dict[str, Any]]) -> None:
        view = self.client.withdrawals.get(self.run.dep.auditor, self.id)
        assert (view["status"], view["signed_tx"], view["txid"]) == ("approved", None, None)
        assert not [
            e for e in entries if e["kind"] == "withdrawal.released" and e["data"]["withdrawal"] == self.id
        ]
        # The client's retry of the very same request cannot sign: the operation key is gone.
        with pytest.raises(RemoteError) as err:
            self.client.withdrawals.release(
                self.custodian, self.id, idempotency_key=self.key, envelope=self.envelope
            )
        assert (err.value.http_status, err.value.remote_code) == (409, "operation_key_lost")

    def recover(self) -> None:
        self.client.withdrawals.renew_operation(self.manager, self.id)
        self.client.withdrawals.contribute_share(self.manager, self.id)
        self.client.withdrawals.contribute_share(self.custodian, self.id, totp=self.run.code("custodian-1"))
        # The same request under the same key now signs, once.
        self.release_and_retry("custodian-1", self.key, self.envelope)


FLOWS: dict[str, type[Flow]] = {
    "keygen": Keygen,
    "reshare": Reshare,
    "import": Import,
    "approve": Approve,
    "release": Release,
}


def crash_and_recover(tpl: Template, point: str, flow_name: str, attempt: int) -> None:
    workdir = tpl.workdir / f"{point}-{flow_name}-{attempt}-{secrets.token_hex(3)}"
    run = Run(tpl.store.clone(workdir, prefix="tandem_crash"), tpl.dep)
    try:
        run.start(fault=point)
        flow = FLOWS[flow_name](run)
        if attempt % 2 and flow.warm_up:
            flow.release_one_first()
        fatal = flow.stage()
        before = run.export()
        crash(run, fatal)

        run.start()  # no fault this time
        after = check_invariants(run, before)
        flow.after_crash([json.loads(line) for line in after])
        flow.recover()
        check_invariants(run, after)
        server_log = run.server.log_tail(10**8) if run.server else ""
        assert "unexpected" not in server_log
        assert "Traceback" not in server_log
    except Exception as exc:
        raise AssertionError(
            f"{point} ({flow_name}) kill {attempt}: {exc!r}\n{traceback.format_exc()}\n{run.logs()}"
        ) from exc
    finally:
        run.stop()
        for server in run.servers:
            server.kill()
        run.store.drop(background=True)


@pytest.mark.parametrize(("point", "flow"), SCENARIOS, ids=[f"{p}[{f}]" for p, f in SCENARIOS])
def test_sigkill_at_fault_point_then_restart(template: Template, point: str, flow: str) -> None:
    with ThreadPoolExecutor(max_workers=KILLS_PER_POINT) as pool:
        futures = [pool.submit(crash_and_recover, template, point, flow, n) for n in range(KILLS_PER_POINT)]
        for f in futures:
            f.result()


def test_the_scenarios_cover_eight_distinct_points() -> None:
    assert len({point for point, _ in SCENARIOS}) >= 8
    assert {flow for _, flow in SCENARIOS} == set(FLOWS)
