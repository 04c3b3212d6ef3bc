"""Audit paths against the size of the history: a real database grown to N entries
through the store's own append path, every figure beside the same figure on a small
fresh deployment measured in the same run (ratio = large / small; 1.0 means the cost
does not grow with the log).

The deployment part does the same for withdrawals: a real deployment (genesis, TOTP
enrolment, a key ceremony, a policy with a one-day velocity limit) is cloned twice; one
clone is grown by W past withdrawals, the other is the fresh twin. Each past withdrawal
is a copy of one created, approved and released through the service: its row and its
approval row are inserted with a new id and times, and its log entries (created,
approved, released, with the same envelopes and the new id in their data) are appended
through ``audit_log.append_batch``, the log's own batch path, so each gets its chain
link, subtree roots and signed checkpoint. They are ten minutes apart (about 52,000 a
year), the last just before the measurements, so the velocity window holds a day's
worth. Then, on both clones through the API in process: create (server call), the
withdrawal list, a proof challenge round (issue, both contributions, signed bundle,
local check) and the offline-signer bundle (size and server call).

    python scripts/bench_audit_scale.py [--entries N | --scale] [--withdrawals W] [--postgres URL]
    ./scripts/bench --only audit_scale [--scale]          (N from TANDEM_BENCH_AUDIT_ENTRIES,
                                                           W from TANDEM_BENCH_WITHDRAWALS)
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # scripts.harness builds the deployment

SMALL = 1_000
DEFAULT_ENTRIES = 100_000
QUICK_ENTRIES = 20_000
SCALE_ENTRIES = 1_000_000
DEFAULT_WITHDRAWALS = 20_000
QUICK_WITHDRAWALS = 2_000
SCALE_WITHDRAWALS = 50_000
WITHDRAWAL_SPACING = 600  # seconds between past withdrawals: about 52,000 a year
DAY = 86_400
MID_WITHDRAWALS = 1_000  # a first stage: the one-day window is full from 144 on
CREATES, PROOF_ROUNDS, BUNDLES = 12, 7, 5  # samples per deployment, after one warm-up each
BATCH = 5_000
T0 = 1_790_000_000


def _grow(db: Any, key: Any, target: int, *, report: bool) -> float:
    """Append until the log holds ``target`` entries, BATCH per write transaction."""
    from tandem.store import audit_log

    start = time.perf_counter()
    with db.read() as session:
        have = audit_log.size(session)
    note = "x" * 240  # about the size of a typical entry's public facts
    while have < target:
        records = [
            audit_log.Record("bench.entry", "mem_bench", "ok", None, None, {"i": i, "note": note}, T0 + i)
            for i in range(have, min(target, have + BATCH))
        ]
        with db.write() as session:
            audit_log.append_batch(session, key, deployment="dep_bench", records=records)
        have = min(target, have + BATCH)
        if report and have % 100_000 == 0:
            print(f"   grown to {have} entries ({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def _median_ms(fn: Callable[[], Any], repeat: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _peak_mib(fn: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / (1 << 20)
    finally:
        tracemalloc.stop()


def _database(kind: str, where: Path, postgres: str) -> Any:
    from tandem.store.db import Database

    if kind == "postgres":
        db = Database(postgres, schema="bench_" + secrets.token_hex(4))
        db.create_schema()
    else:
        db = Database(f"sqlite:///{where}")
    db.migrate()
    return db


def _verify_file(path: Path, checkpoint: Any, key: bytes) -> None:
    """What ``tandem audit verify`` does to the file, streaming it line by line, less
    the membership replay: the synthetic log has no genesis to replay from."""
    from tandem.core import audit

    with path.open("rb") as handle:
        audit.verify_export((line for line in handle if line != b"\n"), checkpoint, key)


def measure(db: Any, key: Any, n: int, workdir: Path) -> dict[str, float]:
    """Every figure for one deployment whose log holds ``n`` entries."""
    from tandem.api.app import _ndjson_pages
    from tandem.services import Tandem

    svc = Tandem(db, key, clock=lambda: T0 + n)
    # A restart after a start-up that verified everything but the last 10 entries: the
    # usual case, where start-up checks only what was appended since.
    svc.audit.verify_stored(full=True)
    _grow(db, key, n + 10, report=False)
    n += 10
    out: dict[str, float] = {}
    out["startup_s"] = _seconds(svc.audit.startup_check)
    assert svc.runner.sealed_reason is None, svc.runner.sealed_reason
    _grow(db, key, n + 10, report=False)
    n += 10
    out["startup_peak_mib"] = _peak_mib(svc.audit.startup_check)
    rng = random.Random(n)  # noqa: S311  (which entries to prove, not a secret)
    out["checkpoint_ms"] = _median_ms(svc.audit.checkpoint)
    out["inclusion_ms"] = _median_ms(lambda: svc.audit.inclusion(rng.randrange(n), n))
    out["consistency_ms"] = _median_ms(lambda: svc.audit.consistency(rng.randrange(1, n), n))

    path = workdir / f"audit-{n}.jsonl"

    def export() -> None:
        _size, lines = svc.audit.export_stream()
        with path.open("wb") as handle:
            for chunk in _ndjson_pages(lines):
                handle.write(chunk)

    out["export_s"] = _seconds(export)
    out["export_peak_mib"] = _peak_mib(export)
    checkpoint = svc.audit.checkpoint(n)
    out["verify_s"] = _seconds(lambda: _verify_file(path, checkpoint, key.sign_public))
    out["verify_peak_mib"] = _peak_mib(lambda: _verify_file(path, checkpoint, key.sign_public))
    out["export_mib"] = path.stat().st_size / (1 << 20)
    path.unlink()
    out["full_verify_s"] = _seconds(lambda: svc.audit.verify_stored(full=True))
    return out


# --- withdrawals on a real deployment -----------------------------------------------


class _Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class _Timed:
    """Wraps a Client's ``request``: server round trips (in process) by call name."""

    def __init__(self, client: Any) -> None:
        self.samples: dict[str, list[float]] = {}
        self._request = client.request
        client.request = self

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        bare = path.split("?", 1)[0].strip("/").split("/")
        name = None
        if bare[:2] == ["v1", "withdrawals"]:
            if method == "POST" and len(bare) == 2:
                name = "create"
            elif method == "GET" and len(bare) == 2:
                name = "list"
            elif method == "GET" and bare[3:] == ["bundle"]:
                name = "bundle"
        start = time.perf_counter()
        try:
            return self._request(method, path, **kwargs)
        finally:
            if name is not None:
                self.samples.setdefault(name, []).append(time.perf_counter() - start)


def _code(clock: _Clock, member: Any) -> str:
    from tandem.core.totp import STEP_SECONDS, code_at

    clock.now += STEP_SECONDS  # a step no one has used yet
    return code_at(member.totp_secret, clock.now // STEP_SECONDS)


def _btc_intent(dep: Any, amount: int = 25_000) -> dict[str, Any]:
    from scripts.harness import utxos_paying

    address = dep.addresses[0]["address"]
    return {
        "wallet": dep.keyset_id,
        "chain": "bitcoin",
        "network": "testnet",
        "asset": "BTC",
        "amount": str(amount),
        "from": address,
        "destination": dep.destination,
        "bitcoin": {"utxos": utxos_paying(address, [amount + 10_000]), "fee_rate": 2},
    }


def _prepare_template(store: Any, key: Any, dep: Any, clock: _Clock) -> str:
    """Policy v2 with a one-day velocity limit (in force after its delay), and one
    withdrawal created, approved and released: the model the past ones copy."""
    from scripts.harness import in_process

    policy = {
        "version": 2,
        "change_delay_seconds": 0,
        "rules": [
            {
                "name": "default",
                "match": {},
                "approvals": {"custodian": 1},
                "allowlist_only": True,
                "request_ttl_seconds": DAY,
                "approval_ttl_seconds": 3600,
                "velocity": {"amount": str(10**15), "period_seconds": DAY},
            }
        ],
    }
    with in_process(store, clock, key) as client:
        client.pin = dep.pin
        prop = client.policy.propose(dep["manager-1"], policy)
        client.members.approve(dep["custodian-1"], prop["id"], totp=_code(clock, dep["custodian-1"]))
        clock.now += DAY + 1
        client._sessions.clear()
        wid = client.withdrawals.create(dep["manager-1"], _btc_intent(dep))["id"]
        client.withdrawals.approve(dep["custodian-1"], wid, totp=_code(clock, dep["custodian-1"]))
        client.withdrawals.release(dep["custodian-1"], wid)
        return str(wid)


def _swap(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, dict):
        return {k: _swap(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_swap(v, old, new) for v in value]
    return value


def _grow_withdrawals(  # noqa: PLR0917 - one growth, its parameters
    store: Any, key: Any, deployment: str, model_id: str, count: int, start: int, *, first: int = 0
) -> None:
    """``count`` copies of withdrawal ``model_id``, WITHDRAWAL_SPACING apart from ``start``:
    rows inserted, log entries through append_batch (see the module docstring)."""
    from sqlmodel import col, select

    from tandem.core.canonical import loads_strict
    from tandem.store import audit_log
    from tandem.store.models import Approval, AuditRow, Withdrawal

    db = store.database()
    try:
        with db.read() as s:
            model = s.get(Withdrawal, model_id)
            assert model is not None
            approvals = list(s.exec(select(Approval).where(Approval.subject == model_id)).all())
            # The model is the template's only withdrawal: its entries are the first
            # withdrawal entries of the log, whatever has been grown after them.
            first_rows = s.exec(
                select(AuditRow.line)
                .where(col(AuditRow.kind).startswith("withdrawal."))
                .order_by(col(AuditRow.seq))
                .limit(20)
            ).all()
            entries = [e for e in map(loads_strict, first_rows) if e["data"].get("withdrawal") == model_id]
            assert entries
        base = model.created_at
        times = ("created_at", "expires_at", "time_lock_until", "released_at", "release_expires_at")
        done = 0
        while done < count:
            batch = min(500, count - done)
            rows: list[Any] = []
            records: list[Any] = []
            for j in range(first + done, first + done + batch):
                wid = "wd_" + secrets.token_hex(8)
                shift = start + j * WITHDRAWAL_SPACING - base
                fields = model.model_dump()
                fields["id"] = wid
                for name in times:
                    if fields[name] is not None:
                        fields[name] += shift
                rows.append(Withdrawal(**fields))
                rows.extend(
                    Approval(
                        subject=wid,
                        member=a.member,
                        role=a.role,
                        envelope=a.envelope,
                        created_at=a.created_at + shift,
                    )
                    for a in approvals
                )
                records.extend(
                    audit_log.Record(
                        e["kind"],
                        e["actor"],
                        e["outcome"],
                        e["code"],
                        e["envelope"],
                        _swap(e["data"], model_id, wid),
                        e["time"] + shift,
                    )
                    for e in entries
                )
            with db.write() as s:
                s.add_all(rows)
                audit_log.append_batch(s, key, deployment=deployment, records=records)
            done += batch
    finally:
        db.dispose()


def _median(values: list[float]) -> float:
    return statistics.median(values) * 1000


def _withdrawal_figures(store: Any, key: Any, dep: Any, clock: _Clock, *, creates: int) -> dict[str, float]:
    """Create, list, proof challenge and bundle on one deployment, in process."""
    from scripts.harness import in_process

    from tandem.core import withdrawal as wcore
    from tandem.core.canonical import canonical

    out: dict[str, float] = {}
    with in_process(store, clock, key) as client:
        client.pin = dep.pin
        timed = _Timed(client)
        custodians = [m for name, m in dep.members.items() if name.startswith("custodian-")]
        ids = []
        for i in range(creates + 1):
            wid = client.withdrawals.create(dep["manager-1"], _btc_intent(dep))["id"]
            custodian = custodians[i % len(custodians)]
            client.withdrawals.approve(custodian, wid, totp=_code(clock, custodian))
            ids.append(wid)
        out["create_ms"] = _median(timed.samples["create"][1:])
        for _ in range(3):
            client.get(dep["manager-1"], "/v1/withdrawals?limit=50")
            if timed.samples["list"][-1] > 5:
                break  # one slow sample is enough to know
        out["list_ms"] = _median(timed.samples["list"])
        proof_times = []
        for _ in range(PROOF_ROUNDS + 1):
            custodian = custodians[0]
            t = time.perf_counter()
            client.proofs.run(
                issuer=dep.auditor,
                manager=dep["manager-2"],
                custodian=custodian,
                scope={"kind": "all"},
                code=lambda c=custodian: _code(clock, c),
            )
            proof_times.append(time.perf_counter() - t)
        out["proof_challenge_ms"] = _median(proof_times[1:])  # the first warms up
        sizes = []
        for wid in ids[-(BUNDLES + 1) :]:
            bundle = client.get(dep["manager-1"], f"/v1/withdrawals/{wid}/bundle")
            sizes.append(len(canonical(bundle)))
        out["bundle_ms"] = _median(timed.samples["bundle"][1:])
        out["bundle_kib"] = statistics.median(sizes) / 1024
        out["bundle_entries"] = len(bundle["audit"]["lines"])
        t = time.perf_counter()
        wcore.verify_bundle(bundle, now=clock(), genesis_hash_pin=dep.pin.genesis_hash)
        out["bundle_verify_ms"] = (time.perf_counter() - t) * 1000
    return out


def deployment_run(backend: str, pg: str, withdrawals: int, workdir: Path) -> dict[str, Any]:
    from scripts.harness import Store, build_deployment

    from tandem.core.service_key import ServiceKey
    from tandem.store import audit_log

    template = Store.new(backend, workdir / "dep-template", pg_admin_url=pg, prefix="tandem_bench")
    stores = [template]
    results: dict[str, Any] = {}
    try:
        dep = build_deployment(template, managers=2, custodians=4)
        key = ServiceKey.from_file_bytes((template.data_dir / "service.key").read_bytes())
        clock = _Clock(dep.setup_clock_end + 60)
        model = _prepare_template(template, key, dep, clock)
        fresh = template.clone(workdir / "dep-fresh", prefix="tandem_bench")
        grown = template.clone(workdir / "dep-grown", prefix="tandem_bench")
        stores += [fresh, grown]
        start = clock.now + 600
        small = _withdrawal_figures(fresh, key, dep, _Clock(start), creates=CREATES)
        # A first stage that already fills the velocity window, so that growth beyond
        # the window shows on its own: ratio_to_<stage>.
        stage = min(MID_WITHDRAWALS, withdrawals)
        staged: dict[int, dict[str, float]] = {}
        grown_so_far = 0
        for target in dict.fromkeys((stage, withdrawals)):
            t = time.perf_counter()
            _grow_withdrawals(
                grown, key, dep.deployment_id, model, target - grown_so_far, start, first=grown_so_far
            )
            results[f"{backend}_grow_withdrawals_per_s"] = round(
                (target - grown_so_far) / (time.perf_counter() - t)
            )
            grown_so_far = target
            # The created withdrawals of one stage are later than the next stage's start:
            # each stage is measured on a clone, so the grown store stays as grown.
            measured = grown.clone(workdir / f"dep-grown-{target}", prefix="tandem_bench")
            stores.append(measured)
            staged[target] = _withdrawal_figures(
                measured, key, dep, _Clock(start + target * WITHDRAWAL_SPACING), creates=CREATES
            )
        db = grown.database()
        with db.read() as s:
            results[f"{backend}_grown_log_entries"] = audit_log.size(s)
        db.dispose()
    finally:
        for store in stores:
            store.drop()
    large = staged[withdrawals]
    for name, value in large.items():
        results[f"{backend}_wd_{name}_fresh"] = round(small[name], 3)
        if stage != withdrawals:
            results[f"{backend}_wd_{name}_at_{stage}"] = round(staged[stage][name], 3)
        results[f"{backend}_wd_{name}_at_{withdrawals}"] = round(value, 3)
        if small[name] > 0:
            results[f"{backend}_wd_{name}_ratio"] = round(value / small[name], 2)
        if stage != withdrawals and staged[stage][name] > 0:
            results[f"{backend}_wd_{name}_ratio_to_{stage}"] = round(value / staged[stage][name], 2)
    return results


def run(
    quick: bool,
    *,
    entries: int | None = None,
    withdrawals: int | None = None,
    postgres: str | None = None,
) -> dict[str, Any]:
    from tandem.core.service_key import ServiceKey

    n = entries or int(
        os.environ.get("TANDEM_BENCH_AUDIT_ENTRIES", QUICK_ENTRIES if quick else DEFAULT_ENTRIES)
    )
    w = withdrawals or int(
        os.environ.get("TANDEM_BENCH_WITHDRAWALS", QUICK_WITHDRAWALS if quick else DEFAULT_WITHDRAWALS)
    )
    pg = postgres if postgres is not None else os.environ.get("TANDEM_BENCH_POSTGRES_URL", "")
    backends = ["sqlite", "postgres"] if pg else ["sqlite"]
    results: dict[str, Any] = {
        "measured": (
            f"a log grown to {n} entries through audit_log.append_batch ({BATCH} per transaction) vs a "
            f"fresh one of {SMALL}; startup = restart with 10 entries since the last verified "
            "marker; *_ms medians of 30; peaks are Python allocations (tracemalloc); verify = "
            "chain, root and checkpoint of the streamed export file (no membership replay: the "
            "synthetic log has no genesis); full_verify = --full over the database"
        ),
        "entries": n,
        "measured_withdrawals": (
            f"a real deployment grown by {w} past withdrawals (rows copied, log entries through "
            "append_batch, ten minutes apart) vs its fresh clone; wd_* through the API in process: "
            f"create = server call (median of {CREATES} after a warm-up), list = GET /v1/withdrawals "
            f"(median of 3, or 1 when over 5 s), proof_challenge = a whole round, scope all (median "
            f"of {PROOF_ROUNDS} after a warm-up), bundle = server call (median of {BUNDLES} after a "
            "warm-up) and size, "
            f"bundle_verify = the offline signer's verify_bundle; at_{MID_WITHDRAWALS} = a first "
            "stage whose one-day velocity window is already full"
        ),
        "withdrawals": w,
    }
    key = ServiceKey.generate()
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            small_db = _database(backend, work / "small.db", pg)
            large_db = _database(backend, work / "large.db", pg)
            try:
                _grow(small_db, key, SMALL, report=False)
                grow_s = _grow(large_db, key, n, report=True)
                results[f"{backend}_grow_entries_per_s"] = round(n / grow_s)
                small = measure(small_db, key, SMALL, work)
                large = measure(large_db, key, n, work)
            finally:
                for db in (small_db, large_db):
                    if backend == "postgres":
                        db.drop_schema()
                    db.dispose()
        for name, value in large.items():
            results[f"{backend}_{name}_at_{n}"] = round(value, 3)
            results[f"{backend}_{name}_at_{SMALL}"] = round(small[name], 3)
            if small[name] > 0:
                results[f"{backend}_{name}_ratio"] = round(value / small[name], 2)
        if w > 0:
            with tempfile.TemporaryDirectory() as tmp:
                results.update(deployment_run(backend, pg, w, Path(tmp)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, help=f"log size to grow to (default {DEFAULT_ENTRIES})")
    parser.add_argument("--scale", action="store_true", help=f"grow to {SCALE_ENTRIES} entries")
    parser.add_argument(
        "--withdrawals",
        type=int,
        help=f"past withdrawals to grow by (default {DEFAULT_WITHDRAWALS}; 0: none)",
    )
    parser.add_argument("--postgres", default=os.environ.get("TANDEM_BENCH_POSTGRES_URL", ""))
    args = parser.parse_args()
    entries = SCALE_ENTRIES if args.scale else args.entries
    withdrawals = SCALE_WITHDRAWALS if args.scale and args.withdrawals is None else args.withdrawals
    if withdrawals == 0:
        os.environ["TANDEM_BENCH_WITHDRAWALS"] = "0"
    for k, v in run(False, entries=entries, withdrawals=withdrawals, postgres=args.postgres).items():
        print(f"{k}: {v}", flush=True)


if __name__ == "__main__":
    main()
