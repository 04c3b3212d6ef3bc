"""Audit paths against the size of the history: a real database grown to N entries
through the store's own append path, every figure beside the same figure on a small
fresh deployment measured in the same run (ratio = large / small; 1.0 means the cost
does not grow with the log).

    python scripts/bench_audit_scale.py [--entries N | --scale] [--postgres URL]
    ./scripts/bench --only audit_scale [--scale]          (N from TANDEM_BENCH_AUDIT_ENTRIES)
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

SMALL = 1_000
DEFAULT_ENTRIES = 100_000
QUICK_ENTRIES = 20_000
SCALE_ENTRIES = 1_000_000
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


def measure(db: Any, key: Any, n: int, workdir: Path) -> dict[str, float]:
    """Every figure for one deployment whose log holds ``n`` entries."""
    from tandem.api.app import _ndjson_pages
    from tandem.cli.audit_cmds import verify_export_file
    from tandem.services import Tandem

    svc = Tandem(db, key, clock=lambda: T0 + n)
    # A restart after a start-up that verified everything but the last 10 entries: the
    # usual case, where start-up checks only what was appended since.
    svc.verify_stored(full=True)
    _grow(db, key, n + 10, report=False)
    n += 10
    out: dict[str, float] = {}
    out["startup_s"] = _seconds(svc.startup_check)
    assert svc.sealed_reason is None, svc.sealed_reason
    _grow(db, key, n + 10, report=False)
    n += 10
    out["startup_peak_mib"] = _peak_mib(svc.startup_check)
    rng = random.Random(n)  # noqa: S311  (which entries to prove, not a secret)
    out["checkpoint_ms"] = _median_ms(svc.checkpoint)
    out["inclusion_ms"] = _median_ms(lambda: svc.inclusion(rng.randrange(n), n))
    out["consistency_ms"] = _median_ms(lambda: svc.consistency(rng.randrange(1, n), n))

    path = workdir / f"audit-{n}.jsonl"

    def export() -> None:
        _size, lines = svc.export_stream()
        with path.open("wb") as handle:
            for chunk in _ndjson_pages(lines):
                handle.write(chunk)

    out["export_s"] = _seconds(export)
    out["export_peak_mib"] = _peak_mib(export)
    checkpoint = svc.checkpoint(n)
    out["verify_s"] = _seconds(lambda: verify_export_file(path, checkpoint, key.sign_public))
    out["verify_peak_mib"] = _peak_mib(lambda: verify_export_file(path, checkpoint, key.sign_public))
    out["export_mib"] = path.stat().st_size / (1 << 20)
    path.unlink()
    out["full_verify_s"] = _seconds(lambda: svc.verify_stored(full=True))
    return out


def run(quick: bool, *, entries: int | None = None, postgres: str | None = None) -> dict[str, Any]:
    from tandem.core.service_key import ServiceKey

    n = entries or int(
        os.environ.get("TANDEM_BENCH_AUDIT_ENTRIES", QUICK_ENTRIES if quick else DEFAULT_ENTRIES)
    )
    pg = postgres if postgres is not None else os.environ.get("TANDEM_BENCH_POSTGRES_URL", "")
    backends = ["sqlite", "postgres"] if pg else ["sqlite"]
    results: dict[str, Any] = {
        "measured": (
            f"a log grown to {n} entries through audit_log.append_batch ({BATCH} per transaction) vs a "
            f"fresh one of {SMALL}; startup = restart with 10 entries since the last verified "
            "marker; *_ms medians of 30; peaks are Python allocations (tracemalloc); verify = "
            "tandem audit verify of the streamed export file; full_verify = --full over the database"
        ),
        "entries": n,
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
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, help=f"log size to grow to (default {DEFAULT_ENTRIES})")
    parser.add_argument("--scale", action="store_true", help=f"grow to {SCALE_ENTRIES} entries")
    parser.add_argument("--postgres", default=os.environ.get("TANDEM_BENCH_POSTGRES_URL", ""))
    args = parser.parse_args()
    entries = SCALE_ENTRIES if args.scale else args.entries
    for k, v in run(False, entries=entries, postgres=args.postgres).items():
        print(f"{k}: {v}", flush=True)


if __name__ == "__main__":
    main()
