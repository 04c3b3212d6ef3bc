"""What each page shows, built from the member-side modules' own checks.

Nothing here decides what is approved: ``tandem.client.withdrawal.review`` decodes the
raw transaction and recomputes both digests, ``tandem.client.members.proposal_digest``
and ``tandem.client.ceremony.local_digest`` recompute what a member signs. These functions
only turn their results (and the typed readers of ``tandem.client.views``) into rows a
person reads: names for member ids (from the member list the
audit log justifies), address-book labels for addresses, amounts in coins and tokens,
local ISO-8601 times and time left.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tandem import humanize
from tandem.client import Client
from tandem.client import withdrawal as cw
from tandem.client.views import ProposalView, WithdrawalView
from tandem.core.identity import MemberSecrets
from tandem.errors import Error

# --- small renderings ------------------------------------------------------------------------


def local_time(ts: int | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).astimezone().isoformat(sep=" ", timespec="minutes")


def time_left(until: int | None, now: int) -> str:
    if until is None:
        return "—"
    left = until - now
    if left <= 0:
        return "expired"
    days, rem = divmod(left, 86400)
    hours, rem = divmod(rem, 3600)
    minutes = max(1, rem // 60) if not (days or hours) else rem // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


@dataclass
class Directory:
    """Member names and address-book labels for one page."""

    names: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    labels: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    warning: str | None = None

    def name(self, member_id: str | None) -> str:
        if member_id is None:
            return "—"
        name = self.names.get(member_id)
        return f"{name} ({self.roles[member_id]})" if name else member_id

    def label(self, chain: str, network: str, address: str, asset: str | None = None) -> str | None:
        entries = self.labels.get((chain, network, address.lower()), [])
        # The entry naming this very asset first, then one that allows any asset.
        wanted = (asset or "").lower()
        exact = [e for e in entries if wanted and str(e.get("asset") or "").lower() == wanted]
        for e in exact + entries:
            if e.get("asset") is None or asset is None or str(e["asset"]).lower() == asset.lower():
                return str(e["label"])
        return None


def directory(client: Client, member: MemberSecrets) -> Directory:
    d = Directory()
    try:
        pin = client.pinned(member)
        for rec in client.audit.trusted_members(member, genesis_hash_pin=pin.genesis_hash):
            d.names[rec.id] = rec.name
            d.roles[rec.id] = rec.role.value
    except Error as exc:
        # Ids stay shown; the person is told why the names are missing.
        d.warning = f"member names are not shown: {exc.diagnostics()}"
    for e in client.policy.address_book(member):
        if e.get("status", "active") == "active":
            d.labels.setdefault((e["chain"], e["network"], str(e["address"]).lower()), []).append(e)
    return d


def required_total(required: Mapping[str, Any]) -> int:
    return sum(int(v) for v in required.values() if isinstance(v, int))


# --- the queue -----------------------------------------------------------------------------------


QUEUED_CEREMONIES = ("proposed", "revealing", "executed")  # those still waiting on a member


def queue(client: Client, member: MemberSecrets, d: Directory) -> dict[str, Any]:
    now = client.clock()
    me = member.member_id
    withdrawals = []
    for w in map(WithdrawalView.from_json, client.withdrawals.list(member, status="pending")):
        withdrawals.append(
            {
                "id": w.id,
                "amount": humanize.measure(w.amount, w.asset, network=w.network).text,
                "destination": w.destination,
                "label": d.label(w.chain, w.network, w.destination, w.asset),
                "chain": f"{w.chain}/{w.network}",
                "requester": d.name(w.requester),
                "given": len(w.approvals),
                "required": required_total(w.required),
                "required_text": ", ".join(f"{n} {role}" for role, n in sorted(w.required.items())),
                "approved_by_me": w.approved_by(me),
                "mine_to_approve": member.role.value in w.required and w.requester != me,
                "time_left": time_left(w.expires_at, now),
                "expires": local_time(w.expires_at),
                "fingerprint": w.fingerprint,
            }
        )
    proposals = []
    for p in map(ProposalView.from_json, client.members.proposals(member, status="pending")):
        proposals.append(
            {
                "id": p.id,
                "kind": p.kind,
                "kind_words": proposal_kind(p.kind),
                "summary": proposal_summary(p.doc, d),
                "proposer": d.name(p.proposer),
                "given": len(p.approvals),
                "required": required_total(p.required) or 1,
                "required_text": ", ".join(f"{n} {role}" for role, n in sorted(p.required.items())),
                "approved_by_me": p.approved_by(me),
                # The other side decides a proposal: never its proposer, never the proposer's role.
                "mine_to_decide": p.proposer != me and d.roles.get(p.proposer) != member.role.value,
                "time_left": time_left(p.expires_at, now),
                "expires": local_time(p.expires_at),
            }
        )
    ceremonies = []
    cer_rows: list[dict[str, Any]] = sorted(
        (c for status in QUEUED_CEREMONIES for c in client.get_all(member, "/v1/ceremonies", status=status)),
        key=lambda c: (c["created_at"], c["id"]),
    )
    for c in cer_rows:
        ceremonies.append(
            {
                "id": c["id"],
                "kind": c.get("kind"),
                "status": c.get("status"),
                "proposer": d.name(c.get("proposer")),
                "given": len(c.get("approvals", ())),
                "approved_by_me": me in c.get("approvals", ()),
                "time_left": time_left(c.get("expires_at"), now),
                "expires": local_time(c.get("expires_at")),
            }
        )
    return {"withdrawals": withdrawals, "proposals": proposals, "ceremonies": ceremonies}


def proposal_kind(kind: str) -> str:
    return humanize.proposal_kind(kind)


def proposal_summary(p: Mapping[str, Any], d: Directory) -> str:
    body = p.get("body", {})
    kind = str(p.get("kind", ""))
    if kind.startswith("addressbook."):
        if body.get("change") == "remove":
            return f"remove address-book entry {body.get('entry')}"
        where = f"{body.get('chain')}/{body.get('network')}"
        return f"allow {body.get('address')} on {where} as '{body.get('label')}'"
    if kind.startswith("policy."):
        pol = body.get("policy", {})
        return f"policy version {pol.get('version')} ({len(pol.get('rules', []))} rules)"
    if kind.startswith("member."):
        card = body.get("card") or {}
        change = body.get("change")
        who = card.get("name") or d.name(body.get("member"))
        role = f" as {card['role']}" if card.get("role") else ""
        return f"{change} member {who}{role}"
    return kind


# --- a withdrawal's review ----------------------------------------------------------------------


def withdrawal_review(
    client: Client, member: MemberSecrets, view: dict[str, Any], d: Directory
) -> dict[str, Any]:
    """The review page: what ``tandem.client.withdrawal.review`` established from the raw bytes.
    A request that does not check out is shown as such, and without an approve form."""
    now = client.clock()
    try:
        checked = cw.review(view)
    except Error as exc:
        return {"ok": False, "problem": exc.diagnostics(), "id": view.get("id"), "status": view.get("status")}
    w = WithdrawalView.from_json(view)
    dec = checked.decoded
    network = str(dec["network"])
    asset = w.asset
    rows = [
        (
            "Chain",
            f"{dec['chain']} / {network}" + (f" (chain id {dec['chain_id']})" if dec.get("chain_id") else ""),
        ),
        ("From (the wallet)", str(dec["from"])),
    ]
    label = d.label(str(dec["chain"]), network, str(dec["to"]), asset)
    amt = humanize.measure(dec["amount"], asset, network=network)
    fee = checked.fee or {}
    fee_amt = humanize.measure(fee["fee"], fee["asset"], network=network) if fee else None
    warnings = []
    if fee.get("warning"):
        warnings.append(str(fee["warning"]))
    if label is None:
        warnings.append("the destination is not on the address book")
    if not amt.known:
        warnings.append("this token's decimals are not known here: the amount is in base units")
    if w.requester == member.member_id:
        warnings.append("you requested this withdrawal yourself; your approval does not count")
    approvals = [{"who": d.name(a.member), "at": local_time(a.at)} for a in w.approvals]
    return {
        "ok": True,
        "id": w.id,
        "status": w.status,
        "rows": rows,
        "to": dec["to"],
        "to_label": label,
        "amount": amt,
        "token": dec.get("token"),
        "fee": fee,
        "fee_amount": fee_amt,
        "fee_share": fee.get("share"),
        "warnings": warnings,
        "inputs": [
            {
                "outpoint": f"{i['txid']}:{i['vout']}",
                "amount": humanize.measure(i["amount"], "BTC", network=network),
            }
            for i in dec.get("inputs", ())
        ],
        "change": humanize.measure(dec["change"], asset, network=network) if dec.get("change") else None,
        "fingerprint": checked.fingerprint,
        "intent_hash": checked.intent_hash,
        "tx_digest": checked.tx_digest,
        "requester": d.name(w.requester),
        "requested": local_time(w.created_at),
        "expires": local_time(w.expires_at),
        "time_left": time_left(w.expires_at, now),
        "policy_version": w.policy_version,
        "rule": w.rule,
        "explanation": list(w.explanation),
        "approvals": approvals,
        "required": required_total(w.required),
        "required_text": ", ".join(f"{n} {role}" for role, n in sorted(w.required.items())),
        "approved_by_me": w.approved_by(member.member_id),
        "can_approve": w.status == "pending" and member.role.value in ("custodian", "manager"),
    }


# --- a policy change as a diff ------------------------------------------------------------------


def policy_diff(old: Any, new: Any) -> list[tuple[str, str]]:
    """``(kind, line)`` pairs, kind one of ``same``, ``add``, ``del``, of the two policies as
    sorted, indented JSON: the whole text of both, so nothing hides outside the context."""
    a = json.dumps(old, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    b = json.dumps(new, indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    out: list[tuple[str, str]] = []
    for line in difflib.ndiff(a, b):
        tag, text = line[:2], line[2:]
        if tag == "  ":
            out.append(("same", text))
        elif tag == "- ":
            out.append(("del", text))
        elif tag == "+ ":
            out.append(("add", text))
    return out
