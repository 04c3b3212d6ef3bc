"""Books benchmark: reconciliation of 10,000 addresses and statements for 1,000
clients, each beside its floor, measured in the same run.

    python scripts/bench_books.py [--quick]

``run(quick)`` returns named figures (seconds, rates) and ratios, Tandem time over
floor time as in ``scripts/bench`` (lower is better, 1.0 = no overhead):

- reconciliation: the register rebuilt from 10,000 deposit entries (1,000 with
  ``quick``) by ``Register.replay`` with every rule checked, compared with a chain
  snapshot of as many balances, the report hashed and signed; vs the floor: the same
  balances summed into one dict and compared with the snapshot's, the rows hashed
  as canonical JSON (the least any reconciliation must do);
- statements: 1,000 clients (100 with ``quick``), each with two transfers, as JSON,
  CSV and a PDF of a page per client; vs the floor: fpdf2 writing the same number of
  pages with the same cells and nothing computed.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any

import nacl.signing
import rfc8785
from fpdf import FPDF

from tandem.core import reconcile as rcore
from tandem.core import statement as score
from tandem.core.register import Register, proposal_digest
from tandem.services import statement_pdf

T0 = 1_790_000_000
ROLES = {"m1": "manager", "c1": "custodian"}


def _addr(i: int) -> str:
    return "0x" + f"{i:040x}"


def _entries(clients: int, addresses: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(
        kind: str, data: dict[str, Any], actor: str | None = None, type_: str = "", body: Any = None
    ) -> None:
        env = {"action": {"type": type_, "actor": actor, "body": body}, "signature": ""} if actor else None
        out.append(
            {
                "index": len(out),
                "kind": kind,
                "outcome": "ok",
                "time": T0 + len(out),
                "data": data,
                "envelope": env,
            }
        )

    for c in range(clients):
        content = {"id": f"c{c}", "name": f"Client {c}", "segregation": "segregated"}
        digest = proposal_digest("client.create", f"p{c}", content, "m1")
        add(
            "client.proposed",
            {"proposal": f"p{c}", "content": content, "digest": digest},
            "m1",
            "client.propose",
            content,
        )
        add(
            "client.created",
            {"proposal": f"p{c}", "client": content},
            "c1",
            "client.approve",
            {"proposal": f"p{c}", "digest": digest},
        )
    for i in range(addresses):
        c = i % clients
        for j in range(2 if addresses <= clients * 2 else 1):
            movement = {
                "id": f"mv{i}-{j}",
                "type": "deposit",
                "client": f"c{c}",
                "chain": "ethereum",
                "network": "mainnet",
                "asset": "ETH",
                "wallet": f"ks{c}",
                "address": _addr(i),
                "amount": str(10**17 * (j + 1) + i),
                "time": T0 + 1000 + i,
                "txid": "0x" + f"{i:032x}{j:032x}",
                "index": None,
                "withdrawal": None,
                "height": 100 + i,
            }
            add("register.deposit", {"movement": movement, "segregation": f"client:c{c}"})
    return out


def _snapshot(reg: Register) -> dict[str, Any]:
    observed = [rcore.Observed(c, n, a, asset, v) for (c, n, a, asset), v in reg.address_balances().items()]
    return rcore.snapshot_doc({"ethereum/mainnet": 200_000}, observed, [])


def bench_reconcile(addresses: int) -> dict[str, Any]:
    entries = _entries(max(1, addresses // 10), addresses)
    key = nacl.signing.SigningKey.generate()
    reg0 = Register.replay(entries, roles=ROLES)
    snap = _snapshot(reg0)

    start = time.perf_counter()
    reg = Register.replay(entries, roles=ROLES)
    report = rcore.reconcile(reg, snap, register_size=len(entries))
    key.sign(rcore.report_bytes(report))
    tandem = time.perf_counter() - start
    if report["verdict"] != "reconciled" or len(report["rows"]) != addresses:
        raise RuntimeError("benchmark reconciliation did not reconcile")

    start = time.perf_counter()
    books: dict[str, int] = {}
    for e in entries:
        m = e["data"].get("movement")
        if m is not None:
            books[m["address"]] = books.get(m["address"], 0) + int(m["amount"])
    chain = {b["address"]: int(b["amount"]) for b in snap["balances"]}
    rows = [[a, str(books.get(a, 0)), str(chain.get(a, 0))] for a in sorted(set(books) | set(chain))]
    hashlib.sha256(rfc8785.dumps(rows)).hexdigest()
    floor = time.perf_counter() - start
    return {
        "addresses": addresses,
        "register_entries": len(entries),
        "reconcile_seconds": tandem,
        "reconcile_floor_seconds": floor,
        "reconcile_ratio_to_floor": tandem / floor,
    }


def bench_statements(clients: int) -> dict[str, Any]:
    entries = _entries(clients, clients)
    reg = Register.replay(entries, roles=ROLES)
    start_p, end_p = score.parse_period("2026-Q4")
    prices = score.parse_prices(
        [
            {
                "asset": "ETH",
                "price": "2500",
                "currency": "EUR",
                "time": T0,
                "source": "bench",
                "method": "fixed",
            }
        ]
    )
    # Movements fall in the period: move the clock of the entries into it.
    for m in reg.movements:
        object.__setattr__(m, "time", start_p + 86400)

    start = time.perf_counter()
    grouped = score.by_client(reg)
    docs = [
        score.statement(
            reg,
            f"c{c}",
            start=start_p,
            end=end_p,
            period="2026-Q4",
            prices=prices,
            custodian="Bench Custodian",
            entity="Bench Fund",
            movements=grouped.get(f"c{c}", []),
        )
        for c in range(clients)
    ]
    pdf = statement_pdf.render(docs, custodian="Bench Custodian")
    score.to_csv(docs)
    score.statements_hash(docs)
    hashlib.sha256(pdf).hexdigest()
    tandem = time.perf_counter() - start

    start = time.perf_counter()
    raw = FPDF(orientation="L", unit="mm", format="A4")
    for d in docs:
        raw.add_page()
        raw.set_font("Helvetica", "", 8)
        for a in d["assets"]:
            raw.cell(
                0,
                6,
                " ".join(str(a[k]) for k in ("asset", "opening", "closing", "value")),
                new_x="LMARGIN",
                new_y="NEXT",
            )
        for t in d["transfers"]:
            raw.cell(
                0,
                5,
                " ".join(str(t[k]) for k in ("date", "type", "amount", "txid")),
                new_x="LMARGIN",
                new_y="NEXT",
            )
    bytes(raw.output())
    floor = time.perf_counter() - start
    return {
        "clients": clients,
        "pdf_bytes": len(pdf),
        "statements_seconds": tandem,
        "statements_floor_seconds": floor,
        "statements_ratio_to_floor": tandem / floor,
        "statements_per_s": clients / tandem,
    }


def run(quick: bool) -> dict[str, Any]:
    out = {**bench_reconcile(1_000 if quick else 10_000), **bench_statements(100 if quick else 1_000)}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
