"""The requests a member decides on, one table: withdrawals, proposals (membership,
policy, address book) and key ceremonies, each with the page that shows it, how it is
approved and how it is rejected; and the batch approval of several withdrawals.

Every approval is built from a fresh fetch that must match what the page showed (its
digests travel in the form): a request that changed since it was read is refused
(``request_changed``) before anything is signed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.client import ceremony as cc
from tandem.client import withdrawal as cw
from tandem.client.members import proposal_digest
from tandem.client.views import ProposalView
from tandem.console import pages
from tandem.console.policy_words import policy_words
from tandem.console.refusal import ConsoleError, words
from tandem.console.state import ConsoleState
from tandem.core import keygen
from tandem.core.ceremony_def import parse_definition
from tandem.core.identity import MemberSecrets
from tandem.errors import Error

Form = Mapping[str, str]


def normal_fingerprint(text: str) -> str:
    digits = re.sub(r"[^0-9a-f]", "", text.lower())
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def normal_totp(text: str) -> str:
    return re.sub(r"\s", "", text)


@dataclass(frozen=True)
class Kind:
    """One kind of request: ``/{prefix}/{id}`` shows it, ``/{prefix}/{id}/approve`` and
    ``/{prefix}/{id}/reject`` decide it."""

    prefix: str
    template: str
    title: str
    noun: str
    context: Callable[[ConsoleState, MemberSecrets, str], dict[str, Any]]
    approve: Callable[[ConsoleState, MemberSecrets, str, Form], object]
    reject: Callable[[ConsoleState, MemberSecrets, str, str], object]
    # What the people involved run after a refusal of a code, with ``{id}`` the request's.
    # (who runs it, the command, what follows).
    recoveries: Mapping[str, tuple[str, str, str]] = field(default_factory=dict)

    def recovery(self, oid: str) -> dict[str, tuple[str, str, str]]:
        return {code: (w, c.format(id=oid), t) for code, (w, c, t) in self.recoveries.items()}

    def notice(self, key: str) -> str | None:
        return {"approved": "Your approval was recorded.", "rejected": f"You rejected this {self.noun}."}.get(
            key
        )


# --- withdrawals -------------------------------------------------------------------------


def withdrawal_context(state: ConsoleState, member: MemberSecrets, wid: str) -> dict[str, Any]:
    d = pages.directory(state.client, member)
    view = state.client.withdrawals.get(member, wid)
    return {"r": pages.withdrawal_review(state.client, member, view, d)}


def approve_withdrawal(state: ConsoleState, member: MemberSecrets, wid: str, form: Form) -> object:
    """One fetch, checked against what the page showed, then the member-side approval
    built from that very object."""
    view = state.client.withdrawals.get(member, wid)
    checked = cw.review(view)
    if (checked.intent_hash, checked.tx_digest) != (form.get("intent_hash"), form.get("tx_digest")):
        raise ConsoleError("request_changed", "the request differs from the one reviewed")
    if normal_fingerprint(form.get("fingerprint", "")) != checked.fingerprint:
        raise ConsoleError("fingerprint_mismatch", f"the fingerprint typed is not this request's ({wid})")
    return state.client.withdrawals.approve(
        member,
        wid,
        totp=normal_totp(form.get("totp", "")),
        expected_fingerprint=checked.fingerprint,
        view=view,
    )


def reject_withdrawal(state: ConsoleState, member: MemberSecrets, wid: str, reason: str) -> object:
    return state.client.withdrawals.reject(member, wid, reason=reason)


# --- proposals (membership, policy, address book) -----------------------------------------


def proposal_context(state: ConsoleState, member: MemberSecrets, pid: str) -> dict[str, Any]:
    d = pages.directory(state.client, member)
    doc = state.client.members.proposal(member, pid)
    p = ProposalView.from_json(doc)
    ctx: dict[str, Any] = {
        "p": doc,
        "summary": pages.proposal_summary(doc, d),
        "kind_words": pages.proposal_kind(p.kind),
        "proposer": d.name(p.proposer),
        "digest": proposal_digest(doc),
        "body_json": json.dumps(p.body, indent=2, sort_keys=True, ensure_ascii=False),
        "approvals": [{"who": d.name(a.member), "at": pages.local_time(a.at)} for a in p.approvals],
        "required": pages.required_total(p.required),
        "required_text": ", ".join(f"{n} {role}" for role, n in sorted(p.required.items())),
        "created": pages.local_time(p.created_at),
        "expires": pages.local_time(p.expires_at),
        "effective": pages.local_time(p.effective_at),
        "time_left": pages.time_left(p.expires_at, state.client.clock()),
        "diff": None,
        "names_warning": d.warning,
    }
    if p.kind.startswith("policy."):
        current = state.client.policy.show(member)
        ctx["diff"] = pages.policy_diff(current.get("policy"), p.body.get("policy"))
        ctx["current_version"] = current.get("version")
        ctx["proposed_words"] = policy_words(p.body.get("policy"))
        ctx["current_words"] = policy_words(current.get("policy"))
    return ctx


def approve_proposal(state: ConsoleState, member: MemberSecrets, pid: str, form: Form) -> object:
    p = state.client.members.proposal(member, pid)
    if proposal_digest(p) != form.get("digest"):
        raise ConsoleError("request_changed", "the proposal differs from the one reviewed")
    return state.client.members.approve(member, pid, totp=normal_totp(form.get("totp", "")), proposal=p)


def reject_proposal(state: ConsoleState, member: MemberSecrets, pid: str, reason: str) -> object:
    return state.client.members.reject(member, pid, reason=reason)


# --- ceremonies ----------------------------------------------------------------------------


def ceremony_context(state: ConsoleState, member: MemberSecrets, cid: str) -> dict[str, Any]:
    d = pages.directory(state.client, member)
    view = state.client.ceremonies.get(member, cid)
    problem = None
    digest = None
    needed = ""
    try:
        digest = cc.local_digest(view) if view.get("kind") != "import" else None
        if view.get("kind") != "import":
            wanted = parse_definition(view["definition"], source=f"ceremony {cid}").approvals
            needed = ", ".join(
                f"{n} {role}"
                for role, n in (("custodian", wanted.custodian), ("manager", wanted.manager))
                if n
            )
    except Error as exc:
        problem = exc.diagnostics()
    return {
        "c": view,
        "kind_words": CEREMONY_KINDS.get(str(view.get("kind")), str(view.get("kind"))),
        "needed": needed,
        "digest": digest,
        "problem": problem,
        "proposer": d.name(view.get("proposer")),
        "approvals": [d.name(a) for a in view.get("approvals", ())],
        "expires": pages.local_time(view.get("expires_at")),
        "time_left": pages.time_left(view.get("expires_at"), state.client.clock()),
        "names_warning": d.warning,
    }


CEREMONY_KINDS = {
    "keygen": "key generation: a new key set, and new addresses",
    "reshare": "reshare: the same keys, their shares dealt again to the members as they are now",
    "import": "import of an existing key",
}


def approve_ceremony(state: ConsoleState, member: MemberSecrets, cid: str, form: Form) -> object:
    view = state.client.ceremonies.get(member, cid)
    if view.get("kind") != "import" and cc.local_digest(view) != form.get("digest"):
        raise ConsoleError("request_changed", "the ceremony differs from the one reviewed")
    # A keygen approval keeps this member's contribution beside the keystore, as the CLI does.
    contribution = keygen.make_contribution() if view["kind"] == "keygen" else None
    store = cc.ContributionStore(state.keystore.resolve().parent)
    if contribution is not None:
        store.save(cid, member.member_id, contribution)
    try:
        return state.client.ceremonies.approve(
            member,
            cid,
            totp=normal_totp(form.get("totp", "")),
            contribution=contribution,
            view=view,
        )
    except Error:
        if contribution is not None:
            store.forget(cid, member.member_id)
        raise


def reject_ceremony(state: ConsoleState, member: MemberSecrets, cid: str, reason: str) -> object:
    return state.client.ceremonies.reject(member, cid, reason=reason)


KINDS = (
    Kind(
        "/withdrawals",
        "withdrawal.html",
        "Withdrawal",
        "request",
        withdrawal_context,
        approve_withdrawal,
        reject_withdrawal,
        {
            "operation_key_lost": (
                "the requester (a manager) runs",
                "tandem withdraw contribute {id} --renew -k MANAGER.keystore",
                "then you review and approve it here again.",
            ),
        },
    ),
    Kind(
        "/proposals",
        "proposal.html",
        "Proposal",
        "proposal",
        proposal_context,
        approve_proposal,
        reject_proposal,
    ),
    Kind(
        "/ceremonies",
        "ceremony.html",
        "Ceremony",
        "ceremony",
        ceremony_context,
        approve_ceremony,
        reject_ceremony,
    ),
)


# --- batch approval ---------------------------------------------------------------------------


def batch_rows(state: ConsoleState, member: MemberSecrets) -> dict[str, Any]:
    """Every pending withdrawal this member may still approve and that checks out here,
    decoded as its own review page decodes it; and those that do not check out."""
    d = pages.directory(state.client, member)
    rows, problems = [], []
    for w in state.client.withdrawals.list(member, status="pending"):
        view = state.client.withdrawals.get(member, w["id"])
        r = pages.withdrawal_review(state.client, member, view, d)
        if not r["ok"]:
            problems.append(r)
        elif r["can_approve"] and not r["approved_by_me"] and view["requester"] != member.member_id:
            rows.append(r)
    return {"rows": rows, "problems": problems}


def approve_batch(
    state: ConsoleState, member: MemberSecrets, selected: list[str], form: Form
) -> list[dict[str, Any]]:
    """Sign one approval per selected request, each from a fresh fetch that must match
    the one shown, and send them with one TOTP code; the server's answer per request."""
    if not selected:
        raise ConsoleError("invalid_input", "select at least one request to approve")
    if len(set(selected)) != len(selected):
        raise ConsoleError("invalid_input", "a request is selected twice")
    if form.get("confirm") != "yes":
        raise ConsoleError("invalid_input", "confirm that you read each selected fingerprint back")
    views = []
    for wid in selected:
        view = state.client.withdrawals.get(member, wid)
        checked = cw.review(view)
        if f"{checked.intent_hash}:{checked.tx_digest}" != form.get(f"reviewed-{wid}"):
            raise ConsoleError("request_changed", f"request {wid} differs from the one reviewed")
        views.append(view)
    answer = state.client.withdrawals.approve_many(member, views, totp=normal_totp(form.get("totp", "")))
    results = []
    for r in answer["results"]:
        refused = r["outcome"] != "approved"
        results.append(
            {
                "id": r["withdrawal"],
                "outcome": r["outcome"],
                "status": r.get("status"),
                "error": words(str(r.get("code")), str(r.get("message"))) if refused else None,
            }
        )
    return results
