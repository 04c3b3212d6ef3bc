"""Reconciliation: the register's balance beside the chain's, per address and asset.

A chain *snapshot* is what the chain said at named heights::

    {"version": 1, "heights": {"ethereum/sepolia": 123},
     "balances": [{"chain", "network", "address", "asset", "amount"}],
     "pending": ["wd_..."]}

``pending`` names the released withdrawals the chain has not confirmed yet. A report
names every discrepancy by kind:

* ``unexpected_inflow``: the chain holds more than the register;
* ``outflow_without_withdrawal``: the chain holds less and no withdrawal explains it;
* ``withdrawal_not_confirmed``: the chain holds less by exactly what released, not yet
  confirmed withdrawals take (amount and worst-case fee, or less fee);
* ``amount_mismatch``: the chain holds less, and pending withdrawals do not account for it;
* ``unknown_token``: the chain shows a token the register never recorded here.

The same function runs on the server and offline (``tandem verify reconciliation``),
so the same register and snapshot give the same report, byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tandem.core.canonical import canonical, check_fields, domain_bytes, parse_amount
from tandem.core.register import Register
from tandem.errors import InputError

REPORT_DOMAIN = "reconciliation-report"
KINDS = (
    "unexpected_inflow",
    "outflow_without_withdrawal",
    "withdrawal_not_confirmed",
    "amount_mismatch",
    "unknown_token",
)


@dataclass(frozen=True)
class Observed:
    chain: str
    network: str
    address: str
    asset: str
    amount: int


def parse_snapshot(doc: Any) -> tuple[dict[str, int], list[Observed], list[str]]:
    check_fields(doc, required=("version", "heights", "balances"), optional=("pending",), where="snapshot")
    if doc["version"] != 1:
        raise InputError("snapshot.version must be 1")
    heights = doc["heights"]
    if not isinstance(heights, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in heights.values()
    ):
        raise InputError("snapshot.heights maps chain/network to a block height")
    observed = []
    for raw in doc["balances"]:
        b = check_fields(raw, required=("chain", "network", "address", "asset", "amount"), where="balance")
        observed.append(
            Observed(
                b["chain"], b["network"], b["address"], b["asset"], parse_amount(b["amount"], where="amount")
            )
        )
    pending = doc.get("pending", [])
    if not isinstance(pending, list) or not all(isinstance(p, str) for p in pending):
        raise InputError("snapshot.pending lists withdrawal ids")
    return dict(heights), observed, list(pending)


def snapshot_doc(heights: Mapping[str, int], observed: list[Observed], pending: list[str]) -> dict[str, Any]:
    return {
        "version": 1,
        "heights": dict(heights),
        "balances": [
            {
                "chain": o.chain,
                "network": o.network,
                "address": o.address,
                "asset": o.asset,
                "amount": str(o.amount),
            }
            for o in sorted(observed, key=lambda o: (o.chain, o.network, o.address, o.asset))
        ],
        "pending": sorted(pending),
    }


def snapshot_hash(doc: Mapping[str, Any]) -> str:
    return hashlib.sha256(domain_bytes("chain-snapshot", dict(doc))).hexdigest()


def reconcile(register: Register, snapshot: Mapping[str, Any], *, register_size: int) -> dict[str, Any]:
    """The report (unsigned) for ``register`` (read from ``register_size`` log entries)
    against ``snapshot``."""
    heights, observed, pending = parse_snapshot(snapshot)
    books = register.address_balances()
    pending_out = register.pending_outflows(pending)
    chain: dict[tuple[str, str, str, str], int] = {}
    for o in observed:
        key = (o.chain, o.network, o.address, o.asset)
        chain[key] = chain.get(key, 0) + o.amount
    known_assets = {(k[0], k[1], k[2]) for k in books} | {(k[0], k[1], k[3]) for k in books}
    rows = []
    discrepancies = []
    not_read = []
    for key in sorted(set(books) | set(chain)):
        c, n, address, asset = key
        ours = books.get(key, 0)
        if f"{c}/{n}" not in heights:
            # No chain was read for this network: nothing is known of its balance, which
            # is not the same as a balance of zero.
            not_read.append(
                {"chain": c, "network": n, "address": address, "asset": asset, "register": str(ours)}
            )
            continue
        theirs = chain.get(key, 0)
        kind = None
        if key not in books and (c, n, asset) not in known_assets and theirs > 0 and asset != _native(c):
            kind = "unknown_token"
        elif theirs > ours:
            kind = "unexpected_inflow"
        elif theirs < ours:
            gap = ours - theirs
            explained = pending_out.get(key, 0)
            if explained == 0:
                kind = "outflow_without_withdrawal"
            elif gap <= explained:
                kind = "withdrawal_not_confirmed"
            else:
                kind = "amount_mismatch"
        row = {
            "chain": c,
            "network": n,
            "address": address,
            "asset": asset,
            "register": str(ours),
            "chain_amount": str(theirs),
            "status": kind or "ok",
        }
        rows.append(row)
        if kind is not None:
            discrepancies.append({**row, "kind": kind, "difference": str(theirs - ours)})
    report: dict[str, Any] = {
        "version": 1,
        "heights": heights,
        "register_size": register_size,
        "snapshot_sha256": snapshot_hash(snapshot),
        "rows": rows,
        "discrepancies": discrepancies,
        "verdict": _verdict(discrepancies, not_read),
    }
    if not_read:
        report["not_read"] = not_read
    return report


def _verdict(discrepancies: list[Any], not_read: list[Any]) -> str:
    """``discrepancies`` wins; then ``incomplete`` while a register balance went unread
    (a server that drops a network's connection cannot make its balances read as
    reconciled); else ``reconciled``."""
    if discrepancies:
        return "discrepancies"
    return "incomplete" if not_read else "reconciled"


def _native(chain: str) -> str:
    return {"ethereum": "ETH", "bitcoin": "BTC", "solana": "SOL"}.get(chain, "")


def report_bytes(report: Mapping[str, Any]) -> bytes:
    return domain_bytes(REPORT_DOMAIN, dict(report))


def report_hash(report: Mapping[str, Any]) -> str:
    return hashlib.sha256(report_bytes(report)).hexdigest()


def same_verdict(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two reports agree when everything but nothing-in-particular agrees: the whole body."""
    return canonical(dict(a)) == canonical(dict(b))


# What each discrepancy kind means, for the people who read a report.
MEANINGS = {
    "unexpected_inflow": "the chain holds more than the register",
    "outflow_without_withdrawal": "the chain holds less, and no withdrawal explains it",
    "withdrawal_not_confirmed": "the chain holds less by what released, unconfirmed withdrawals take",
    "amount_mismatch": "the chain holds less than pending withdrawals account for",
    "unknown_token": "the chain shows a token the register never recorded here",
}

Formatter = Callable[[str, str, str], str]  # (base units, asset, network) -> text


def table(report: Mapping[str, Any], amount: Formatter | None = None) -> str:
    """The report as a plain-text table a person reads; ``amount`` renders base units
    (the CLI passes one that reads them in coins)."""
    fmt = amount or (lambda value, _asset, _network: value)
    head = ("chain/network", "address", "asset", "register", "chain", "status")
    lines = [head]
    for r in report["rows"]:
        lines.append(
            (
                f"{r['chain']}/{r['network']}",
                r["address"],
                r["asset"],
                fmt(r["register"], r["asset"], r["network"]),
                fmt(r["chain_amount"], r["asset"], r["network"]),
                r["status"],
            )
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(v).ljust(widths[i]) for i, v in enumerate(line)).rstrip() for line in lines]
    heights = ", ".join(f"{k} at height {v}" for k, v in sorted(report["heights"].items()))
    found = report["discrepancies"]
    counted = f"{len(found)} discrepanc{'y' if len(found) == 1 else 'ies'}" if found else "no discrepancy"
    read = f"read {heights}" if heights else "no chain read"
    out.append(f"verdict: {report['verdict']} ({counted}; {read})")
    unread = report.get("not_read", [])
    if unread:
        networks = ", ".join(sorted({f"{r['chain']}/{r['network']}" for r in unread}))
        out.append(
            f"  not compared: {len(unread)} register balance{'' if len(unread) == 1 else 's'} on {networks}, "
            "where no chain connection is configured (nothing is known of them, which is not zero)"
        )
    for d in found:
        diff = fmt(d["difference"].removeprefix("-"), d["asset"], d["network"])
        sign = "-" if d["difference"].startswith("-") else "+"
        out.append(f"  {d['kind']} at {d['address']}: {sign}{diff} ({MEANINGS.get(d['kind'], d['kind'])})")
    return "\n".join(out)


# --- the offline check ---------------------------------------------------------------


@dataclass
class ExportReading:
    """What an offline check reads from a verified audit export."""

    register_entries: list[dict[str, Any]]
    reports: dict[str, dict[str, Any]]  # report hash -> its log entry
    statements: list[dict[str, Any]]
    roles: dict[str, str]
    service_public: bytes
    size: int


def read_export(
    lines: Any,
    checkpoint: Mapping[str, Any],
    service_public: bytes,
    *,
    progress: Any = None,
) -> ExportReading:
    """Verify the export whole (chain, Merkle root, checkpoint, every signature and every
    membership, policy and address-book effect), keeping what the books need."""
    from tandem.core import audit
    from tandem.core.membership import LogState
    from tandem.core.register import REGISTER_KINDS

    state = LogState()
    kept: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    statements: list[dict[str, Any]] = []

    def observe(entry: Any) -> None:
        state.observe_entry(entry)
        if entry.get("outcome") != "ok":
            return
        if entry["kind"] in REGISTER_KINDS:
            kept.append(dict(entry))
        elif entry["kind"] == "reconciliation.reported":
            reports[entry["data"]["report_sha256"]] = dict(entry)
        elif entry["kind"] == "statement.issued":
            statements.append(dict(entry))

    report = audit.verify_export(lines, checkpoint, service_public, replay=observe, progress=progress)
    if state.service_sign_public is not None and state.service_sign_public != service_public:
        from tandem.errors import VerificationError

        raise VerificationError("the log's genesis names another service key than the one given")
    roles = {m.id: m.role.value for m in state.members.values()}
    return ExportReading(kept, reports, statements, roles, service_public, report.tree_size)


def verify_report(
    signed: Mapping[str, Any], reading: ExportReading, snapshot: Mapping[str, Any]
) -> dict[str, Any]:
    """Re-run a signed reconciliation offline: the register rebuilt from the export (every
    entry justified), compared with the snapshot, must give the very report that was
    signed and whose hash the log holds. Returns the recomputed report."""
    from tandem.core.identity import verify_ed25519
    from tandem.errors import VerificationError

    report = signed["report"]
    size = report["register_size"]
    if not isinstance(size, int) or size > reading.size:
        raise VerificationError(f"the report reads {size} log entries; the export has {reading.size}")
    register = Register.replay(
        [e for e in reading.register_entries if e["index"] < size], roles=reading.roles
    )
    again = reconcile(register, snapshot, register_size=size)
    if not same_verdict(again, report):
        raise VerificationError(
            f"re-run gives {again['verdict']} with {len(again['discrepancies'])} discrepancies; "
            f"the report says {report['verdict']} with {len(report['discrepancies'])}"
        )
    verify_ed25519(
        reading.service_public,
        report_bytes(report),
        bytes.fromhex(signed["signature"]),
        what="reconciliation report",
    )
    if report_hash(report) not in reading.reports:
        raise VerificationError("the report's hash is not in the audit log")
    return again
