"""Tandem benchmarks. Every figure is reported beside its floor (the raw library doing
the same cryptographic work) or a peer, measured in the same run on the same machine."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_audit(quick: bool) -> dict[str, Any]:
    """Offline verification of an N-entry export vs raw SHA-256 over the same bytes."""
    from tandem.core import audit
    from tandem.core.canonical import canonical
    from tandem.core.service_key import ServiceKey

    n = 100_000 if quick else 1_000_000
    key = ServiceKey.generate()
    acc = audit.MerkleAccumulator()
    prev = audit.GENESIS_PREV
    lines: list[bytes] = []
    for i in range(n):
        entry = audit.make_entry(
            index=i,
            time=1_790_000_000 + i,
            deployment="dep_bench",
            kind="bench.entry",
            actor="mem_x",
            outcome="ok",
            code=None,
            envelope=None,
            data={"i": i, "note": "synthetic entry"},
            prev=prev,
        )
        prev = entry["hash"]
        acc.append(bytes.fromhex(prev))
        lines.append(canonical(entry))
    cp = audit.sign_checkpoint(
        key.sign_seed,
        deployment="dep_bench",
        tree_size=n,
        root=acc.root().hex(),
        last_hash=prev,
        time=1_790_000_000 + n,
    )
    blob = b"\n".join(lines)
    t_verify = timed(lambda: audit.verify_export(lines, cp, key.sign_public))
    t_sha = timed(lambda: [hashlib.sha256(line).digest() for line in lines])
    return {
        "audit_verify_entries": n,
        "audit_export_bytes": len(blob),
        "audit_verify_entries_per_s": round(n / t_verify),
        "raw_sha256_lines_per_s": round(n / t_sha),
        "audit_verify_ratio_to_sha256": round(t_verify / t_sha, 2),
    }


def bench_canonical(quick: bool) -> dict[str, Any]:
    """Canonical encoding and strict parsing of a signed approval envelope, beside the
    reference RFC 8785 encoder (peer) and the stdlib's unchecked json (floor)."""
    import rfc8785

    from tandem.core.canonical import canonical, loads_strict

    body = {
        "withdrawal": "wd_0123456789abcdef",
        "intent_hash": "f" * 64,
        "tx_digest": "e" * 64,
        "policy_version": 3,
        "expires_at": 1_796_259_843,
    }
    doc = {
        "action": {
            "type": "withdrawal.approve",
            "deployment": "dep_0123456789abcdef",
            "issued_at": 1_796_256_243,
            "nonce": "a" * 32,
            "body": body,
        },
        "signer": "m_" + "c" * 40,
        "signature": "s" * 88,
    }
    raw = canonical(doc)
    n = 20_000 if quick else 100_000

    def per_call(fn: Callable[[], Any]) -> float:
        return timed(lambda: [fn() for _ in range(n)]) / n

    ours, peer = per_call(lambda: canonical(doc)), per_call(lambda: rfc8785.dumps(doc))
    floor = per_call(
        lambda: json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    parse, parse_floor = per_call(lambda: loads_strict(raw)), per_call(lambda: json.loads(raw))
    return {
        "document": f"approval envelope, {len(raw)} bytes",
        "canonical_us": round(ours * 1e6, 2),
        "rfc8785_us": round(peer * 1e6, 2),
        "json_dumps_sorted_us": round(floor * 1e6, 2),
        "canonical_ratio_to_rfc8785": round(ours / peer, 2),
        "canonical_ratio_to_json_dumps": round(ours / floor, 2),
        "loads_strict_us": round(parse * 1e6, 2),
        "json_loads_us": round(parse_floor * 1e6, 2),
        "loads_strict_ratio_to_json_loads": round(parse / parse_floor, 2),
    }


SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {"audit": bench_audit, "canonical": bench_canonical}


def load_optional_sections() -> None:
    try:
        import bench_proofs

        SECTIONS["proofs"] = bench_proofs.run
    except ImportError:
        pass
    try:
        import bench_audit_scale

        SECTIONS["audit_scale"] = bench_audit_scale.run
    except ImportError:
        pass
    try:
        import bench_books

        SECTIONS["books"] = bench_books.run
    except ImportError:
        pass
    try:
        import bench_lifecycle

        SECTIONS["lifecycle"] = bench_lifecycle.run
    except ImportError:
        pass


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    out = [
        "# Benchmarks",
        "",
        f"Measured by `./scripts/bench{' --quick' if results['quick'] else ''}` on {results['date']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_mib']} MiB, "
        f"Python {m['python']}, {m['platform']}.",
        "",
        "Every figure stands beside its floor or peer measured in the same run; ratios are",
        "Tandem time over floor time (lower is better, 1.0 = no overhead).",
        "",
    ]
    for section, figures in results["sections"].items():
        out += [f"## {section}", "", "| figure | value |", "|---|---|"]
        out += [f"| {k} | {v} |" for k, v in figures.items()]
        out.append("")
    path.write_text("\n".join(out), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes; under two minutes")
    parser.add_argument("--only", action="append", help="run only these sections")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TANDEM_BENCH_POSTGRES_URL", ""),
        help="PostgreSQL URL for the lifecycle benchmark",
    )
    parser.add_argument(
        "--audit-entries", type=int, help="audit_scale: grow the log to this many entries (default 100000)"
    )
    parser.add_argument("--scale", action="store_true", help="audit_scale: grow the log to 1,000,000 entries")
    args = parser.parse_args()
    if args.scale or args.audit_entries:
        os.environ["TANDEM_BENCH_AUDIT_ENTRIES"] = str(1_000_000 if args.scale else args.audit_entries)
    if args.postgres:
        os.environ["TANDEM_BENCH_POSTGRES_URL"] = args.postgres
    load_optional_sections()
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "sections": {},
    }
    for name, fn in SECTIONS.items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        figures = fn(args.quick)
        results["sections"][name] = figures
        for k, v in figures.items():
            print(f"   {k}: {v}", flush=True)
    out_dir = ROOT / "bench-out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.only:
        write_markdown(results, ROOT / "docs" / "benchmarks.md")
    print(f"wrote {out_dir / 'results.json'}")


if __name__ == "__main__":
    main()
