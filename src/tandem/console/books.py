"""The register pages: positions, reconciliation reports and statements of position.

Nothing here takes the server's word. The audit log is exported and verified whole on
this machine (hash chain, checkpoint and every signature under the service key the
member's genesis pin names, every effect justified) with ``core.reconcile.read_export``,
as ``tandem verify reconciliation`` does; positions are rebuilt from that log's register
entries (and compared with the server's answer); a reconciliation report is re-run
from the verified log and its snapshot, its signature checked with the pinned service
key and its hash found in the log (``core.reconcile.verify_report``); a statement's PDF
or JSON is matched by hash against the ``statement.issued`` entries of the verified log
(``core.statement.find_issued``).
"""

from __future__ import annotations

import json
from typing import Any

from tandem import humanize
from tandem.client import Client
from tandem.console import pages
from tandem.core import reconcile as rcore
from tandem.core.canonical import loads_strict
from tandem.core.identity import MemberSecrets
from tandem.core.membership import genesis_hash
from tandem.core.register import FUND, UNALLOCATED, Register
from tandem.core.statement import find_issued
from tandem.errors import Error, InputError, VerificationError


def verified_reading(client: Client, member: MemberSecrets) -> rcore.ExportReading:
    """The whole log, verified here from the pinned genesis under the pinned service key."""
    lines, checkpoint = client.audit.export(member)
    pin = client.pinned(member)
    try:
        first = loads_strict(lines[0])["data"]["genesis"]
    except (Error, IndexError, KeyError, TypeError):
        raise VerificationError("the log does not start with a genesis entry") from None
    if genesis_hash(first) != pin.genesis_hash:
        raise VerificationError(f"the log starts from genesis {genesis_hash(first)}, not the pinned one")
    return rcore.read_export((line.encode() for line in lines), checkpoint, pin.sign_public)


def _owner(client_id: str, names: dict[str, str]) -> str:
    if client_id == FUND:
        return "the fund's own wallets"
    if client_id == UNALLOCATED:
        return "unallocated (omnibus, not yet attributed)"
    return f"{names[client_id]} ({client_id})" if client_id in names else client_id


def positions(client: Client, member: MemberSecrets) -> dict[str, Any]:
    """Positions per client, chain, asset, wallet and address, in coins and base units,
    from the register the verified log describes; a server answer that differs is named."""
    reading = verified_reading(client, member)
    reg = Register.replay(reading.register_entries, roles=reading.roles)
    names = {c.id: c.name for c in reg.clients.values()}
    rows = []
    mine: dict[tuple[str, ...], str] = {}
    for (owner, chain, network, asset, wallet, address), amount in sorted(reg.positions().items()):
        mine[(owner, chain, network, asset, wallet, address)] = str(amount)
        rows.append(
            {
                "client": _owner(owner, names),
                "chain": f"{chain}/{network}",
                "asset": asset,
                "symbol": humanize.asset_symbol(asset, network=network)[0],
                "wallet": wallet,
                "address": address,
                "amount": humanize.measure(amount, asset, network=network),
            }
        )
    theirs: dict[tuple[str, ...], str] = {
        (p["client"], p["chain"], p["network"], p["asset"], p["wallet"], p["address"]): str(p["balance"])
        for p in client.get_all(member, "/v1/books/positions")
    }
    differs = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    problem = None
    if differs:
        problem = (
            f"the server's positions differ from the verified log's in {len(differs)} place(s), "
            f"first {'/'.join(differs[0])}: the log says {mine.get(differs[0], 'nothing')}, "
            f"the server {theirs.get(differs[0], 'nothing')}"
        )
    clients = [
        {"id": c.id, "name": c.name, "segregation": c.segregation, "since": pages.local_time(c.created_at)}
        for c in sorted(reg.clients.values(), key=lambda c: c.id)
    ]
    return {
        "rows": rows,
        "clients": clients,
        "movements": len(reg.movements),
        "entries": reading.size,
        "problem": problem,
    }


# --- reconciliation -----------------------------------------------------------------------


def report_list(client: Client, member: MemberSecrets) -> list[dict[str, Any]]:
    """Every reconciliation the verified log records, newest first."""
    reading = verified_reading(client, member)
    out = []
    for digest, e in reading.reports.items():
        data = e["data"]
        out.append(
            {
                "hash": digest,
                "index": e["index"],
                "time": pages.local_time(e["time"]),
                "verdict": data["verdict"],
                "discrepancies": data["discrepancies"],
                "heights": ", ".join(f"{k} at {v}" for k, v in sorted(data["heights"].items())),
            }
        )
    return sorted(out, key=lambda r: -int(r["index"]))


def verify_signed_report(client: Client, member: MemberSecrets, signed: Any) -> dict[str, Any]:
    """A signed report (as ``tandem reconcile --out`` writes it, its snapshot inside) re-run
    here from the verified log: the same report, signed by the pinned service key, logged."""
    if not isinstance(signed, dict) or not {"report", "signature", "snapshot"} <= set(signed):
        raise InputError("a signed reconciliation report has report, signature and snapshot")
    reading = verified_reading(client, member)
    again = rcore.verify_report(signed, reading, signed["snapshot"])
    entry = reading.reports[rcore.report_hash(again)]
    return report_view(again, signed, logged_at=int(entry["index"]))


# What each row status and discrepancy kind of a report means (core.reconcile names them).
RECONCILE_WORDS = {
    "ok": "agrees",
    "unexpected_inflow": "the chain holds more than the register",
    "outflow_without_withdrawal": "the chain holds less, and no withdrawal explains it",
    "withdrawal_not_confirmed": "released withdrawals not yet confirmed on chain",
    "amount_mismatch": "the chain holds less than pending withdrawals account for",
    "unknown_token": "a token the register never recorded here",
}


def report_view(report: dict[str, Any], signed: dict[str, Any], *, logged_at: int) -> dict[str, Any]:
    def amount(value: str, asset: str, network: str) -> str:
        return humanize.measure(int(value), asset, network=network).text

    return {
        "hash": rcore.report_hash(report),
        "verdict": report["verdict"],
        "logged_at": logged_at,
        "heights": ", ".join(f"{k} at {v}" for k, v in sorted(report["heights"].items())),
        "rows": [
            {
                "where": f"{r['chain']}/{r['network']}",
                "address": r["address"],
                "asset": r["asset"],
                "register": amount(r["register"], r["asset"], r["network"]),
                "chain": amount(r["chain_amount"], r["asset"], r["network"]),
                "status": r["status"],
                "status_words": RECONCILE_WORDS.get(r["status"], ""),
            }
            for r in report["rows"]
        ],
        "discrepancies": [
            {
                "kind": d["kind"],
                "words": RECONCILE_WORDS.get(d["kind"], ""),
                "address": d.get("address"),
                "difference": amount(d["difference"], d["asset"], d["network"])
                if "difference" in d
                else None,
            }
            for d in report["discrepancies"]
        ],
        "json": json.dumps(signed, indent=2, sort_keys=True),
    }


def run_reconciliation(client: Client, member: MemberSecrets) -> dict[str, Any]:
    """Ask the server to reconcile (its chain backends read), then verify what it signed."""
    signed = client.books.reconcile(member)
    return verify_signed_report(client, member, signed)


# --- statements --------------------------------------------------------------------------------


def statement_list(client: Client, member: MemberSecrets) -> list[dict[str, Any]]:
    reading = verified_reading(client, member)
    return [
        {
            "index": e["index"],
            "time": pages.local_time(e["time"]),
            "period": e["data"]["period"],
            "clients": ", ".join(e["data"]["clients"]),
            "pdf_sha256": e["data"]["pdf_sha256"],
            "json_sha256": e["data"]["json_sha256"],
        }
        for e in sorted(reading.statements, key=lambda e: -int(e["index"]))
    ]


def check_statement(client: Client, member: MemberSecrets, document: bytes) -> dict[str, Any]:
    """A statement PDF or its JSON, found by hash among the verified log's issued ones."""
    reading = verified_reading(client, member)
    entry = find_issued(document, reading.statements)
    return {
        "index": entry["index"],
        "period": entry["data"]["period"],
        "clients": ", ".join(entry["data"]["clients"]),
        "time": pages.local_time(entry["time"]),
    }


def issue_statements(
    client: Client, member: MemberSecrets, *, period: str, client_id: str | None, custodian: str
) -> dict[str, Any]:
    """Issue statements and check both files against the verified log before offering them."""
    bundle = client.books.statements(member, period=period, client_id=client_id, custodian=custodian)
    pdf = bytes.fromhex(bundle["pdf_hex"])
    body = json.dumps(bundle["statements"], indent=2, sort_keys=True, ensure_ascii=False).encode()
    found = check_statement(client, member, pdf)
    if check_statement(client, member, body)["index"] != found["index"]:
        raise VerificationError("the statement's PDF and JSON are logged in different entries")
    return {
        "pdf": pdf,
        "json": body,
        "pdf_sha256": bundle["pdf_sha256"],
        "name": f"statement-{period}-{client_id or 'all'}",
        **found,
    }
