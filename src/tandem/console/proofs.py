"""Proof challenges and their verification, as the auditor's own tools check them:
the bundle is fetched with ``client.proofs.bundle`` (its bytes must hash to the
hash the challenge records) and verified with ``core.proofs.verify_bundle`` under the
challenge's nonce and the service key the member's genesis pin names."""

from __future__ import annotations

from typing import Any

from tandem.client import Client
from tandem.console import pages
from tandem.core import proofs as core
from tandem.core.identity import MemberSecrets
from tandem.errors import Error


def listing(client: Client, member: MemberSecrets) -> dict[str, Any]:
    """Each challenge as its own view tells it (the list itself carries no statement)."""
    d = pages.directory(client, member)
    now = client.clock()
    rows = []
    for summary in client.proofs.list(member):
        v = client.proofs.get(member, summary["id"])
        doc = v.get("challenge", {})
        rows.append(
            {
                "id": v["id"],
                "status": v.get("status"),
                "statement": doc.get("statement", ""),
                "issuer": d.name(summary.get("issuer")),
                "expires": pages.local_time(doc.get("expires_at")),
                "time_left": pages.time_left(doc.get("expires_at"), now),
                "keysets": len(v.get("keysets", ())),
                "bundle": bool(v.get("bundle_hash")),
            }
        )
    return {"challenges": rows}


def detail(client: Client, member: MemberSecrets, challenge_id: str) -> dict[str, Any]:
    view = client.proofs.get(member, challenge_id)
    doc = view["challenge"]
    ctx: dict[str, Any] = {
        "v": view,
        "doc": doc,
        "expires": pages.local_time(doc.get("expires_at")),
        "keysets": [
            {"keyset": e["keyset"], "contributed": _contributed(view, e)} for e in view.get("keysets", ())
        ],
        "report": None,
        "problem": None,
    }
    if not view.get("bundle_hash"):
        return ctx
    try:
        _data, bundle = client.proofs.bundle(member, challenge_id)
        pin = client.pinned(member)
        report = core.verify_bundle(bundle, nonce=view["nonce"], service_public_key=pin.sign_public)
    except Error as exc:
        ctx["problem"] = exc.diagnostics()
        return ctx
    ctx["report"] = {
        "ok": report.ok,
        "entity": report.entity,
        "statement": report.statement,
        "signed": pages.local_time(report.signed_at),
        "bundle_hash": report.bundle_hash,
        "proofs": report.proofs,
        "verified": report.verified,
        "summary": [
            {
                "chain": s.chain,
                "network": s.network,
                "format": s.format,
                "verified": s.verified,
                "failed": s.failed,
            }
            for s in report.summary
        ],
        "failures": [str(f) for f in report.failures],
    }
    return ctx


def _contributed(view: dict[str, Any], entry: dict[str, Any]) -> str:
    """Who gave their share for a key set: known while the challenge is open; once signed,
    both sides did (the bundle could not be signed otherwise)."""
    if view.get("bundle_hash"):
        return "both sides (signed)"
    if view.get("status") != "open":
        return "—"
    return ", ".join(entry.get("contributed", ())) or "none yet"
