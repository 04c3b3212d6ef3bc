"""The audit-log page: the whole log verified on this machine from the pinned genesis to
the server's signed checkpoint, then searched and filtered here, and exported as CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from tandem.client import Client
from tandem.client import log as client_log
from tandem.console import pages
from tandem.core.identity import MemberSecrets
from tandem.errors import Error

PARAMS = ("q", "kind", "actor", "outcome", "since", "until")
CSV_COLUMNS = (
    ("index", "index"),
    ("time_utc_unix", "time_raw"),
    ("time_local", "time"),
    ("kind", "kind"),
    ("actor", "actor"),
    ("actor_id", "actor_id"),
    ("outcome", "outcome"),
    ("code", "code"),
    ("summary", "summary"),
    ("hash", "hash"),
)


def rows(client: Client, member: MemberSecrets, params: dict[str, str]) -> dict[str, Any]:
    lines, checkpoint = client.audit.export(member)
    pin = client.pinned(member)
    verified: str | None = None
    problem: str | None = None
    try:
        client_log.verify_log(lines, checkpoint, genesis_hash_pin=pin.genesis_hash)
        verified = (
            f"Audit log verified: all {len(lines)} entries, each linked to the one before, from the "
            "genesis pinned on this machine to the server's signed checkpoint."
        )
    except Error as exc:
        problem = exc.diagnostics()
    d = pages.directory(client, member)
    entries = [json.loads(line) for line in lines]
    shown = [
        _row(e, d)
        for e, line in zip(entries, lines, strict=True)
        if _matches(
            e, line, params, _parse_time(params.get("since", "")), _parse_time(params.get("until", ""))
        )
    ]
    actors = sorted({str(e.get("actor")) for e in entries if e.get("actor")})
    return {
        "entries": shown,
        "total": len(entries),
        "kinds": sorted({str(e.get("kind")) for e in entries}),
        "actors": [(a, d.name(a)) for a in actors],
        "verified": verified,
        "problem": problem,
        "params": params,
        "export_query": urlencode({k: v for k, v in params.items() if v}),
    }


def _matches(
    e: dict[str, Any], line: str, params: dict[str, str], since: int | None, until: int | None
) -> bool:
    for key in ("kind", "actor", "outcome"):
        if params.get(key) and e.get(key) != params[key]:
            return False
    moment = int(e.get("time", 0))
    if (since is not None and moment < since) or (until is not None and moment > until):
        return False
    q = params.get("q", "").lower()
    return not q or q in line.lower()


def _row(e: dict[str, Any], d: pages.Directory) -> dict[str, Any]:
    about = _about(e, d)
    return {
        "index": e.get("index"),
        "time": pages.local_time(e.get("time")),
        "time_raw": e.get("time"),
        "kind": e.get("kind"),
        "actor": d.name(e.get("actor")) if e.get("actor") else "service",
        "actor_id": e.get("actor"),
        "outcome": e.get("outcome"),
        "code": e.get("code") or "",
        "summary": ", ".join(f"{key} {text}" for key, text, _href in about),
        "about": about,
        "hash": e.get("hash"),
    }


def csv_text(entries: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([title for title, _key in CSV_COLUMNS])
    for e in entries:
        writer.writerow([csv_cell(str(e[k] if e[k] is not None else "")) for _title, k in CSV_COLUMNS])
    return buf.getvalue()


def _parse_time(text: str) -> int | None:
    """A filter bound typed as ISO-8601 (local time if no offset), or empty."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return int(moment.timestamp())


def csv_cell(text: str) -> str:
    """A cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# The ids an entry is about that have a page here, by their prefix.
PAGES = {"wd_": "/withdrawals/", "prop_": "/proposals/", "cer_": "/ceremonies/", "pc_": "/proofs/"}


def _page(value: str) -> str | None:
    return next((path + value for prefix, path in PAGES.items() if value.startswith(prefix)), None)


def _about(e: dict[str, Any], d: pages.Directory) -> list[tuple[str, str, str | None]]:
    """``(what, text, link)`` for each id the entry is about: a member by name, a request
    with a link to its page here."""
    env = e.get("envelope") or {}
    action = env.get("action") if isinstance(env, dict) else None
    body = action.get("body", {}) if isinstance(action, dict) else {}
    data = e.get("data") or {}
    bits: list[tuple[str, str, str | None]] = []
    for key in ("withdrawal", "proposal", "ceremony", "challenge", "keyset", "member", "reason"):
        value = body.get(key) if isinstance(body, dict) else None
        value = value if value is not None else (data.get(key) if isinstance(data, dict) else None)
        if isinstance(value, str):
            text = d.name(value) if key == "member" else value
            bits.append((key, text, None if key in ("member", "reason") else _page(value)))
    return bits
