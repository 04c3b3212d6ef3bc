"""A real Tandem server for the benchmarks and for the crash and concurrency tests
(THREATS 11-13): ``tandem serve`` as a subprocess on a free loopback port, against a
data directory (service key, SQLite file) or a PostgreSQL database of its own.

Setting a deployment up through the real API over a real socket costs a server start
per database, so :func:`build_deployment` builds one *template* in-process (the same
service object and HTTP app the server runs, behind a ``TestClient``) and every test
clones it: a file copy for SQLite, ``CREATE DATABASE ... TEMPLATE`` for PostgreSQL.

The template is built on a clock set two hours back. The server then runs on the real
clock, so every TOTP step the set-up used is long past and each member can use the
steps now-1, now and now+1 straight away (:class:`TotpSteps`). The destination of the
withdrawals is allow-listed in the genesis document itself: an initial address book
signed by every initial member takes effect at once, with no 24 h cool-down.

Bitcoin inputs come from :func:`funding_tx`: a funding transaction paying the wallet, as a
node or block explorer would show it, so that intents carry the previous transactions that
prove each input's amount and script (tandem never takes an amount on anyone's word).

It lives beside the scripts, not in ``tests/``: the benchmarks import it without the test
suite, and the tests import it from here, so there is one copy. It runs servers from this
checkout (its ceremony definitions, its ``src``), so it is not part of the installed
package. No pytest import here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tandem.client.members import draft_genesis, sign_genesis
from tandem.core.chains import bitcoin as btc
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.core.totp import STEP_SECONDS, code_at

ROOT = Path(__file__).resolve().parents[1]
TANDEM = [sys.executable, "-m", "tandem.cli"]
DEFINITION = ROOT / "ceremonies" / "bitcoin-testnet-cold.toml"
RESHARE = ROOT / "ceremonies" / "reshare.toml"
KEYS_PER_KEYSET = 2  # bitcoin-testnet-cold makes two keys, one P2WPKH address each
SETUP_BACKDATE_SECONDS = 2 * 3600
# Variables of the developer's shell that would point a test server somewhere else.
_SERVER_ENV_DROP = ("TANDEM_FAULT_POINT", "TANDEM_DATABASE_URL", "TANDEM_SERVICE_KEY_FILE", "TANDEM_DATA_DIR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- where a deployment's state lives ------------------------------------------------------


def _pg_url(admin_url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(admin_url.replace("postgresql+psycopg://", "postgresql://", 1))
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


class PostgresAdmin:
    """Creates and drops whole databases on the server of ``admin_url`` (one per test
    deployment, so a server under test sees nothing of any other test)."""

    _lock = threading.Lock()  # CREATE DATABASE ... TEMPLATE wants the template to itself

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url.replace("postgresql+psycopg://", "postgresql://", 1)
        self._dropper: ThreadPoolExecutor | None = None
        self._dropping: list[Future[None]] = []

    def _execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # identifiers: our own prefixes and generated hex

    def create(self, prefix: str, *, template: str | None = None) -> tuple[str, str]:
        import psycopg

        name = f"{prefix}_{secrets.token_hex(6)}"
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        with self._lock:
            for attempt in range(50):
                try:
                    self._execute(sql)
                    break
                except psycopg.errors.ObjectInUse:
                    # A backend of the template's last user may still be exiting.
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
        return name, _pg_url(self.admin_url, name)

    def drop(self, name: str, *, background: bool = False) -> None:
        """``background``: a DROP DATABASE waits for a checkpoint; let the caller go on
        and collect the outcome in :meth:`wait_dropped`."""
        if not background:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        with self._lock:
            if self._dropper is None:
                self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-drop")
            self._dropping.append(self._dropper.submit(self.drop, name))

    def wait_dropped(self) -> None:
        with self._lock:
            pending, self._dropping = self._dropping, []
        for f in pending:
            f.result()


@dataclass
class Store:
    """One deployment's state: a data directory (service key; the SQLite file) and, on
    PostgreSQL, a database of its own."""

    backend: str
    data_dir: Path
    pg: PostgresAdmin | None = None
    pg_name: str | None = None
    pg_url: str | None = None

    @classmethod
    def new(cls, backend: str, data_dir: Path, *, pg_admin_url: str = "", prefix: str = "tandem_t") -> Store:
        data_dir.mkdir(parents=True, exist_ok=True)
        if backend == "sqlite":
            return cls("sqlite", data_dir)
        if backend != "postgres" or not pg_admin_url:
            raise ValueError(f"unknown backend {backend!r} (postgres needs an admin URL)")
        admin = PostgresAdmin(pg_admin_url)
        name, url = admin.create(prefix)
        return cls("postgres", data_dir, admin, name, url)

    @property
    def database_url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.data_dir / 'tandem.db'}"
        assert self.pg_url is not None
        return self.pg_url

    def database(self) -> Any:
        from tandem.store.db import Database

        return Database(self.database_url)

    def clone(self, data_dir: Path, *, prefix: str = "tandem_t") -> Store:
        """An independent copy (nothing may have the source open for writing)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.data_dir / "service.key", data_dir / "service.key")
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                src = self.data_dir / f"tandem.db{suffix}"
                if src.exists():
                    shutil.copy2(src, data_dir / src.name)
            return Store("sqlite", data_dir)
        assert self.pg is not None
        name, url = self.pg.create(prefix, template=self.pg_name)
        return Store("postgres", data_dir, self.pg, name, url)

    def drop(self, *, background: bool = False) -> None:
        if self.pg is not None and self.pg_name is not None:
            self.pg.drop(self.pg_name, background=background)
            self.pg_name = None

    def service_public(self) -> bytes:
        from tandem.core.service_key import ServiceKey

        return ServiceKey.from_file_bytes((self.data_dir / "service.key").read_bytes()).sign_public


# --- the server process -----------------------------------------------------------------


class ServerError(RuntimeError):
    pass


class Server:
    """``tandem serve`` in a subprocess, running this checkout's code (a subclass may
    start it some other way: :meth:`command`)."""

    def __init__(
        self,
        store: Store,
        *,
        port: int | None = None,
        log: Path | None = None,
    ) -> None:
        self.store = store
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or store.data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SERVER_ENV_DROP}
        env["TANDEM_DATA_DIR"] = str(self.store.data_dir)
        if self.store.backend == "postgres":
            env["TANDEM_DATABASE_URL"] = self.store.database_url
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
        return env

    def serve_args(self) -> list[str]:
        return ["serve", "--host", "127.0.0.1", "--port", str(self.port)]

    def command(self) -> list[str]:
        return [*TANDEM, *self.serve_args()]

    def start(self, timeout: float = 90.0) -> Server:
        for _attempt in range(3):
            try:
                return self._start(timeout)
            except ServerError:
                # free_port() cannot reserve the port: another process may have taken it.
                if "address already in use" not in self.log_tail().lower():
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        return self._start(timeout)

    def _start(self, timeout: float) -> Server:
        with self.log.open("ab") as log:
            # cwd is the data dir, so a stray .env in the checkout is not read.
            self.proc = subprocess.Popen(  # noqa: S603 - our own command line, no shell
                self.command(),
                env=self.env(),
                cwd=self.store.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.url}/v1/health", timeout=2)
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"server did not answer /v1/health within {timeout} s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/v1/health", timeout=10).json()
        return result

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """Graceful stop (SIGINT, as Ctrl-C); SIGKILL if it hangs."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.proc.returncode

    def kill(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- Bitcoin inputs ------------------------------------------------------------------------


def funding_tx(
    address: str, amounts: Sequence[int], *, network: str = "testnet", witness: bool = False
) -> btc.Transaction:
    """A transaction (from a random outpoint) with one output of each amount to ``address``.

    With ``witness`` it carries a witness stack, as most real funding transactions do; its
    txid is the same either way."""
    script = btc.address_to_script(address, network)
    source = btc.TxInput(os.urandom(32).hex(), 0)
    stacks = ((b"\x30" * 71 + b"\x01", b"\x02" * 33),) if witness else ()
    return btc.Transaction(2, (source,), tuple(btc.TxOutput(a, script) for a in amounts), 0, stacks)


def utxo(tx: btc.Transaction, vout: int) -> dict[str, Any]:
    """An intent's entry for output ``vout`` of ``tx``."""
    return {"txid": tx.txid, "vout": vout, "prev_tx": tx.serialize(include_witness=False).hex()}


def utxos_paying(address: str, amounts: Sequence[int], *, network: str = "testnet") -> list[dict[str, Any]]:
    """Intent entries for fresh outputs of the given amounts, all paid to ``address``."""
    tx = funding_tx(address, amounts, network=network)
    return [utxo(tx, i) for i in range(len(amounts))]


# --- second factor on the real clock ------------------------------------------------------


class TotpSteps:
    """Fresh TOTP codes against a server on ``clock``: each step is accepted once per
    member and only within one step of the server's now, so each member has at most
    three codes (now-1, now, now+1) before it must wait for the next step, and two when
    the current step has less than ``margin`` seconds left (a code for now-1 must reach
    the server before the step turns)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        *,
        margin: float = 12.0,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.margin = margin
        self.waited = 0.0
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def code(self, member: MemberSecrets) -> str:
        while True:
            with self._lock:
                now = self.clock()
                now_step = int(now) // STEP_SECONDS
                earliest = now_step - 1 if now % STEP_SECONDS < STEP_SECONDS - self.margin else now_step
                step = max(earliest, self._last.get(member.member_id, earliest - 1) + 1)
                if step <= now_step + 1:
                    self._last[member.member_id] = step
                    return code_at(member.totp_secret, step)
                wait = STEP_SECONDS - now % STEP_SECONDS + 0.1
            self.sleep(wait)
            self.waited += wait


# --- a deployment to clone -----------------------------------------------------------------


class _SetupClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Deployment:
    """What the test side knows of a template deployment (members' secrets included)."""

    deployment_id: str
    service_public: bytes
    members: dict[str, MemberSecrets]
    keyset_id: str
    addresses: list[dict[str, str]]  # key_id, address, public_key (hex)
    destination: str
    setup_clock_end: int
    export: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The members' genesis pin, with the template's key set: what each member's machine
    # trusts; pass it to every Client (``Client(url, pin=dep.pin)``).
    pin: Any = None

    def __getitem__(self, name: str) -> MemberSecrets:
        return self.members[name]

    def of_role(self, role: Role) -> list[MemberSecrets]:
        return [m for m in self.members.values() if m.role is role]

    @property
    def auditor(self) -> MemberSecrets:
        return self.of_role(Role.AUDITOR)[0]


@contextlib.contextmanager
def in_process(
    store: Store, clock: _SetupClock, key: Any, *, claim_token: str | None = None
) -> Iterator[Any]:
    """The server's own app and service on ``store``, behind a TestClient. ``claim_token``:
    the one-time token genesis must present (what `tandem init` would have printed)."""
    from fastapi.testclient import TestClient

    from tandem.api import create_app
    from tandem.client import Client
    from tandem.services import Tandem
    from tandem.services.claim import ClaimGate

    db = store.database()
    db.migrate()
    svc = Tandem(db, key, clock=clock)
    if claim_token is not None:
        svc.members.use_claim(ClaimGate.for_token(claim_token))
    svc.audit.startup_check()
    try:
        with TestClient(create_app(service=svc), raise_server_exceptions=True) as http:
            yield Client(http=http, clock=clock)
    finally:
        db.dispose()


def build_deployment(
    store: Store,
    *,
    managers: int = 2,
    custodians: int = 4,
    export_keyset: bool = False,
    release_one: bool = False,
) -> Deployment:
    """Genesis (with the destination allow-listed), every member's TOTP enrolment and a
    real key ceremony (``bitcoin-testnet-cold``), through the API on a back-dated clock.

    With ``release_one``, one withdrawal is created, approved and released, so every
    clone starts with a signature and its entries to keep. With ``export_keyset``, a
    second ceremony runs on a throw-away clone and its key set is exported: an export of
    a key set the template does not hold, for import tests (what a deployment restored
    from an older backup would face).
    """
    from tandem.core.chains.secp256k1 import public_key as secp_public
    from tandem.core.service_key import ServiceKey

    key = ServiceKey.generate()
    key_file = store.data_dir / "service.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.to_file_bytes())
    clock = _SetupClock(int(time.time()) - SETUP_BACKDATE_SECONDS)
    people: dict[str, MemberSecrets] = {}
    for i in range(1, managers + 1):
        people[f"manager-{i}"] = MemberSecrets.generate(name=f"manager-{i}", role=Role.MANAGER)
    for i in range(1, custodians + 1):
        people[f"custodian-{i}"] = MemberSecrets.generate(name=f"custodian-{i}", role=Role.CUSTODIAN)
    people["auditor"] = MemberSecrets.generate(name="auditor", role=Role.AUDITOR)
    dest_key = (int.from_bytes(os.urandom(32), "big") % (2**255) + 1).to_bytes(32, "big")
    destination = btc.p2wpkh_address(secp_public(dest_key), "testnet")

    def code(name: str) -> str:
        clock.now += STEP_SECONDS  # a step nobody has used yet
        return code_at(people[name].totp_secret, clock.now // STEP_SECONDS)

    claim_token = secrets.token_urlsafe(24)
    with in_process(store, clock, key, claim_token=claim_token) as client:
        doc = draft_genesis(
            deployment="dep_" + secrets.token_hex(8),
            entity="Crash Test Fund SICAV",
            created_at=clock(),
            service=client.deployment()["service"],
            cards=[m.card() for m in people.values()],
            address_book=[
                {"chain": "bitcoin", "network": "testnet", "address": destination, "label": "cold vault"}
            ],
        )
        result = client.members.submit_genesis(
            doc, dict(sign_genesis(m, doc) for m in people.values()), claim_token=claim_token
        )
        pin = client.pin
        for m in people.values():
            client.members.enrol_totp(m)
        transcript = client.ceremonies.run(
            proposer=people["manager-1"],
            approvers=[people["custodian-1"]],
            definition_text=DEFINITION.read_text(),
            code=code,
        )
        if release_one:
            intent = {
                "wallet": transcript["keyset"]["id"],
                "chain": "bitcoin",
                "network": "testnet",
                "asset": "BTC",
                "amount": "25000",
                "from": transcript["addresses"][0]["address"],
                "destination": destination,
                "bitcoin": {
                    "utxos": utxos_paying(transcript["addresses"][0]["address"], [50_000]),
                    "fee_rate": 2,
                },
            }
            wid = client.withdrawals.create(people["manager-1"], intent)["id"]
            client.withdrawals.approve(people["custodian-1"], wid, totp=code("custodian-1"))
            client.withdrawals.release(people["custodian-1"], wid)
    keys = {k["key_id"]: k["public_key"] for k in transcript["keys"]}
    dep = Deployment(
        deployment_id=result["deployment"],
        service_public=key.sign_public,
        members=people,
        keyset_id=transcript["keyset"]["id"],
        addresses=[
            {"key_id": a["key_id"], "address": a["address"], "public_key": keys[a["key_id"]]}
            for a in transcript["addresses"]
        ],
        destination=destination,
        setup_clock_end=clock.now,
        pin=pin,
    )
    if export_keyset:
        fork = store.clone(store.data_dir.parent / (store.data_dir.name + "-fork"), prefix="tandem_fork")
        try:
            with in_process(fork, clock, key) as client:
                client.pin = pin
                other = client.ceremonies.run(
                    proposer=people["manager-1"],
                    approvers=[people["custodian-1"]],
                    definition_text=DEFINITION.read_text(),
                    code=code,
                )
                dep.export = client.keysets.export(people["manager-1"], other["keyset"]["id"])
        finally:
            fork.drop()
            shutil.rmtree(fork.data_dir, ignore_errors=True)
    dep.setup_clock_end = clock.now
    return dep
