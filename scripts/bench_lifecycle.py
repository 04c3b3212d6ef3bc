"""Withdrawal lifecycle benchmark: create, approve, release over HTTP against
``tandem serve`` (uvicorn, a subprocess) with 1 and with 16 concurrent clients, beside
the in-process floor: the same calls with the same bodies on the service object
(``tandem.services.Tandem``, same database backend, a fake clock), with no HTTP, also
with 1 and 16 concurrent callers, measured in the same run.

One lifecycle is five server calls: ``prepare`` (operation key) and ``create`` by a
manager, ``view`` (the raw request the approving client decodes itself) and
``approve`` (signature + TOTP + resealed share) by a custodian, ``release`` (signs the
Bitcoin testnet P2WPKH spend). Per-call latencies time the server call only, the same
way in both modes; the client-side work (signing actions, decoding the transaction,
resealing shares) runs between calls, untimed, but is inside the lifecycles-per-second
figures of both modes. Each approval needs a TOTP code no one used before; the server
runs on the real clock and accepts a member's step now-1, now or now+1 once each, so
the deployment has several custodians per client (``custodians``), none approves more
than twice per database, and the bench never waits for a step (``*_totp_wait_s`` says
if it did).

Run through ``scripts/bench`` (``--postgres URL`` or TANDEM_BENCH_POSTGRES_URL adds the
PostgreSQL backend) or alone: ``python scripts/bench_lifecycle.py [--quick]``.
"""

from __future__ import annotations

import os
import resource
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.harness import (  # noqa: E402 - the checkout root is added above
    Deployment,
    Server,
    Store,
    TotpSteps,
    build_deployment,
    utxos_paying,
)

from tandem.client import Client  # noqa: E402
from tandem.client import withdrawal as cw  # noqa: E402
from tandem.core import withdrawal as wcore  # noqa: E402
from tandem.core.actions import sign_action  # noqa: E402
from tandem.core.identity import MemberSecrets  # noqa: E402
from tandem.core.split import reseal_for_operation  # noqa: E402

CLIENTS = 16
CALLS = ("prepare", "create", "view", "approve", "release")


class Timings:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, call: str, seconds: float) -> None:
        with self._lock:
            self.samples[call].append(seconds)

    def timed(self, call: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.add(call, time.perf_counter() - start)
        return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def _call_name(method: str, path: str) -> str | None:
    parts = path.strip("/").split("/")  # v1 withdrawals [id|operations] [action]
    if parts[:2] != ["v1", "withdrawals"]:
        return None
    if method == "POST" and parts[2:] == ["operations"]:
        return "prepare"
    if method == "POST" and len(parts) == 2:
        return "create"
    if method == "GET" and len(parts) == 3:
        return "view"
    if method == "POST" and len(parts) == 4 and parts[3] in ("approve", "release"):
        return parts[3]
    return None


class TimedClient(Client):
    """The real member client; each withdrawal call's HTTP round trip is recorded."""

    def __init__(self, server: str, timings: Timings) -> None:
        super().__init__(server)
        self.timings = timings

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        name = _call_name(method, path)
        if name is None:
            return super().request(method, path, **kwargs)
        return self.timings.timed(name, super().request, method, path, **kwargs)


def _intent(dep: Deployment, n: int) -> dict[str, Any]:
    return {
        "wallet": dep.keyset_id,
        "chain": "bitcoin",
        "network": "testnet",
        "asset": "BTC",
        "amount": str(20_000 + n),
        "from": dep.addresses[n % len(dep.addresses)]["address"],
        "destination": dep.destination,
        "bitcoin": {
            "utxos": utxos_paying(dep.addresses[n % len(dep.addresses)]["address"], [60_000, 70_000]),
            "fee_rate": 5,
        },
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (Linux /proc); NaN where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- running a phase ---------------------------------------------------------------------------

Crew = Callable[[int], tuple[MemberSecrets, list[MemberSecrets]]]
# (client number, lifecycle number, manager, custodian) -> None; built per client thread.
Lifecycle = Callable[[int, int, MemberSecrets, MemberSecrets], None]


class Phase:
    """``clients`` threads, each with its own manager and custodians, let go together.
    Wall time and CPU are counted from the moment they are let go: connections and
    sessions are set up before, as a logged-in member's would be."""

    def __init__(self, clients: int, each: int, crew: Crew, server_pid: int | None = None) -> None:
        self.clients, self.each, self.crew, self.server_pid = clients, each, crew, server_pid
        self.timings = Timings()
        self._marks: list[tuple[float, float, float]] = []

    def _mark(self) -> None:
        server = process_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self._marks.append((time.perf_counter(), own_cpu_seconds(), server))

    def run(self, make_worker: Callable[[int, Timings], tuple[Lifecycle, Callable[[], None]]]) -> None:
        start = threading.Barrier(self.clients, action=self._mark)

        def one_client(c: int) -> None:
            lifecycle, done = make_worker(c, self.timings)
            manager, custodians = self.crew(c)
            start.wait()
            for n in range(self.each):
                lifecycle(c, n, manager, custodians[n % len(custodians)])
            done()

        with ThreadPoolExecutor(max_workers=self.clients) as pool:
            for f in [pool.submit(one_client, c) for c in range(self.clients)]:
                f.result()
        self._mark()

    def summarise(self, prefix: str, out: dict[str, Any]) -> None:
        (t0, client0, server0), (t1, client1, server1) = self._marks
        total = self.clients * self.each
        out[f"{prefix}_lifecycles"] = total
        out[f"{prefix}_lifecycles_per_s"] = round(total / (t1 - t0), 1)
        for call in CALLS:
            values = self.timings.samples[call]
            assert len(values) == total, (prefix, call, len(values))
            out[f"{prefix}_{call}_p50_ms"] = round(percentile(values, 50) * 1000, 2)
            out[f"{prefix}_{call}_p99_ms"] = round(percentile(values, 99) * 1000, 2)
        # Where the time goes: the server process and this one (client threads, or the
        # in-process service) share the machine's cores; database server CPU is not counted.
        if self.server_pid:
            out[f"{prefix}_server_cpu_ms_per_lifecycle"] = round((server1 - server0) / total * 1000, 1)
        out[f"{prefix}_local_cpu_ms_per_lifecycle"] = round((client1 - client0) / total * 1000, 1)


# --- HTTP ------------------------------------------------------------------------------------


def http_worker(
    url: str, dep: Deployment, totp: TotpSteps, crew: Crew
) -> Callable[[int, Timings], tuple[Lifecycle, Callable[[], None]]]:
    """The real member client (``tandem.client.withdrawal``) over its own connection."""

    def make(c: int, timings: Timings) -> tuple[Lifecycle, Callable[[], None]]:
        client = TimedClient(url, timings)
        client.pin = dep.pin.copy()
        manager, custodians = crew(c)
        client.deployment()
        for m in (manager, *custodians):
            client.session(m)

        def lifecycle(c: int, n: int, manager: MemberSecrets, custodian: MemberSecrets) -> None:
            created = client.withdrawals.create(manager, _intent(dep, c * 1000 + n))
            approved = client.withdrawals.approve(custodian, created["id"], totp=totp.code(custodian))
            assert approved["status"] == "approved", approved
            out = client.withdrawals.release(custodian, created["id"], idempotency_key=secrets.token_hex(12))
            assert out["status"] == "released", out

        return lifecycle, client.http.close

    return make


# --- in-process floor ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds) + 1


def inproc_worker(
    svc: Any, dep: Deployment, clock: FakeClock, totp: TotpSteps
) -> Callable[[int, Timings], tuple[Lifecycle, Callable[[], None]]]:
    """The same calls with the same bodies as the client sends, on the service object."""

    def sign(member: MemberSecrets, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        return sign_action(
            member, type=type_, deployment=dep.deployment_id, body=body, issued_at=clock()
        ).to_json()

    def make(_c: int, timings: Timings) -> tuple[Lifecycle, Callable[[], None]]:
        def lifecycle(c: int, n: int, manager: MemberSecrets, custodian: MemberSecrets) -> None:
            prepared = timings.timed(
                "prepare",
                svc.withdrawals.prepare_withdrawal,
                sign(manager, "withdrawal.prepare", {"keyset": dep.keyset_id}),
            )
            intent = wcore.normalize_intent(_intent(dep, c * 1000 + n))
            _side, sealed = reseal_for_operation(
                manager, prepared["keyset"], prepared["operation"], dep.service_public
            )
            body = {
                "intent": intent,
                "operation": prepared["operation"],
                "share_digest": wcore.share_digest(sealed),
            }
            created = timings.timed(
                "create",
                svc.withdrawals.create_withdrawal,
                sign(manager, "withdrawal.create", body),
                sealed_share=sealed,
            )
            view = timings.timed("view", svc.withdrawals.get_withdrawal, created["id"])
            checked = cw.review(view)
            _side, sealed_c = reseal_for_operation(
                custodian, view["keyset"], view["operation"], dep.service_public
            )
            approval = wcore.approval_body(
                withdrawal=created["id"],
                intent_hash_hex=checked.intent_hash,
                tx_digest_hex=checked.tx_digest,
                policy_version=view["policy_version"],
                expires_at=min(view["expires_at"], clock() + view["decision"]["approval_ttl_seconds"]),
                operation=view["operation"]["statement"]["operation"],
                share_digest=wcore.share_digest(sealed_c),
            )
            code = totp.code(custodian)
            approved = timings.timed(
                "approve",
                svc.withdrawals.approve_withdrawal,
                sign(custodian, "withdrawal.approve", approval),
                totp=code,
                sealed_share=sealed_c,
            )
            assert approved["status"] == "approved", approved
            answer = timings.timed(
                "release",
                svc.withdrawals.release_withdrawal,
                sign(custodian, "withdrawal.release", {"withdrawal": created["id"]}),
                idempotency_key=secrets.token_hex(12),
            )
            assert answer.status_code == 200, answer
            assert answer.body["status"] == "released", answer

        return lifecycle, lambda: None

    return make


class StatementCount:
    """SQL statements the database's engines execute (SQLAlchemy cursor events)."""

    def __init__(self, db: Any) -> None:
        from sqlalchemy import event

        self.count = 0
        self._lock = threading.Lock()
        self._engines = list({id(e): e for e in (db.writer, db.reader)}.values())
        for engine in self._engines:
            event.listen(engine, "before_cursor_execute", self._on_execute)

    def _on_execute(self, *_args: Any) -> None:
        with self._lock:
            self.count += 1

    def reset(self) -> None:
        with self._lock:
            self.count = 0

    def close(self) -> None:
        from sqlalchemy import event

        for engine in self._engines:
            event.remove(engine, "before_cursor_execute", self._on_execute)


# --- one backend ----------------------------------------------------------------------------------


def bench_backend(backend: str, pg_url: str, quick: bool, workdir: Path) -> dict[str, Any]:
    from tandem.core.service_key import ServiceKey
    from tandem.services import Tandem

    each = 2 if quick else 8  # lifecycles per client with 16 clients
    sequential = 8 if quick else 32  # lifecycles with 1 client
    # Custodians per client, so that no custodian approves more than twice in a phase
    # pair: two fresh TOTP steps (now, now+1) are always there without waiting.
    per_client = 2 if quick else 6
    template = Store.new(backend, workdir / f"{backend}-template", pg_admin_url=pg_url, prefix="tandem_bench")
    stores = [template]
    out: dict[str, Any] = {}
    try:
        dep = build_deployment(template, managers=CLIENTS, custodians=CLIENTS * per_client)
        custodians = [dep[f"custodian-{i + 1}"] for i in range(CLIENTS * per_client)]

        def crew(c: int) -> tuple[MemberSecrets, list[MemberSecrets]]:
            return dep[f"manager-{c + 1}"], custodians[c * per_client : (c + 1) * per_client]

        planned: Counter[str] = Counter()
        for c in range(CLIENTS):
            mine = crew(c)[1]
            planned.update(mine[n % per_client].member_id for n in range(each))
        spare = sorted(custodians, key=lambda m: planned[m.member_id])[:sequential]
        assert max(planned[m.member_id] for m in spare) + 1 <= 2, "too few custodians for the sizes"

        def alone(_c: int) -> tuple[MemberSecrets, list[MemberSecrets]]:
            return dep["manager-1"], spare

        # In-process floor: a clone of the deployment, the service object on a fake clock.
        floor_store = template.clone(workdir / f"{backend}-floor", prefix="tandem_bench")
        stores.append(floor_store)
        clock = FakeClock(int(time.time()))
        key = ServiceKey.from_file_bytes((floor_store.data_dir / "service.key").read_bytes())
        db = floor_store.database()
        try:
            svc = Tandem(db, key, clock=clock)
            svc.audit.startup_check()
            floor_totp = TotpSteps(clock=clock, sleep=clock.advance)
            worker = inproc_worker(svc, dep, clock, floor_totp)
            statements = StatementCount(db)
            try:
                for name, clients, n, who in (
                    ("inproc_1c", 1, sequential, alone),
                    ("inproc_16c", CLIENTS, each, crew),
                ):
                    statements.reset()
                    phase = Phase(clients, n, who)
                    phase.run(worker)
                    phase.summarise(f"{backend}_{name}", out)
                    # The service's own statements (no HTTP session lookups), BEGINs included.
                    out[f"{backend}_{name}_sql_statements_per_lifecycle"] = round(
                        statements.count / (clients * n), 1
                    )
            finally:
                statements.close()
        finally:
            db.dispose()

        # HTTP: another clone, served by `tandem serve` on the real clock.
        http_store = template.clone(workdir / f"{backend}-http", prefix="tandem_bench")
        stores.append(http_store)
        totp = TotpSteps()
        with Server(http_store, log=workdir / f"{backend}-server.log") as server:
            assert server.proc is not None
            for name, clients, n, who in (
                ("http_1c", 1, sequential, alone),
                ("http_16c", CLIENTS, each, crew),
            ):
                phase = Phase(clients, n, who, server_pid=server.proc.pid)
                phase.run(http_worker(server.url, dep, totp, who))
                phase.summarise(f"{backend}_{name}", out)

        for width in ("1c", "16c"):
            floor = f"{backend}_inproc_{width}"
            http = f"{backend}_http_{width}"
            for call in CALLS:
                ratio = out[f"{http}_{call}_p50_ms"] / out[f"{floor}_{call}_p50_ms"]
                out[f"{backend}_{call}_p50_ratio_http_to_inproc_{width}"] = round(ratio, 2)
            # Time per lifecycle (wall time / lifecycles), HTTP over in-process.
            ratio = out[f"{floor}_lifecycles_per_s"] / out[f"{http}_lifecycles_per_s"]
            out[f"{backend}_lifecycle_time_ratio_http_to_inproc_{width}"] = round(ratio, 2)
        out[f"{backend}_totp_wait_s"] = round(totp.waited, 1)
    finally:
        for store in stores:
            store.drop()
    return out


def run(quick: bool) -> dict[str, Any]:
    pg_url = os.environ.get("TANDEM_BENCH_POSTGRES_URL", "")
    figures: dict[str, Any] = {
        "measured": (
            "withdrawal lifecycle = prepare+create (manager), view+approve (custodian, TOTP), "
            "release (BTC testnet P2WPKH, 2 inputs); p50/p99 time the server call only; "
            "inproc = the Tandem service object on the same database, no HTTP; http = tandem serve "
            "(uvicorn subprocess); 1c/16c = 1 or 16 concurrent clients; lifecycles/s include "
            "the clients' own signing, decoding and resealing"
        ),
        "clients": CLIENTS,
        "custodians": CLIENTS * (2 if quick else 6),
    }
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        for backend in ["sqlite", "postgres"] if pg_url else ["sqlite"]:
            figures.update(bench_backend(backend, pg_url, quick, Path(tmp)))
    return figures


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(json.dumps(run(args.quick), indent=2))
    print(f"took {time.perf_counter() - t0:.1f} s", file=sys.stderr)
