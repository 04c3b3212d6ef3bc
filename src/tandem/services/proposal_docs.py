"""How a stored proposal reads: its public view, what its approvers sign, its request.

Shared by every kind of proposal (membership, policy, address book) and by the
proposal lifecycle in :mod:`tandem.services.proposals`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tandem.core import approvals as engine
from tandem.core import membership as mcore
from tandem.core.canonical import loads_strict
from tandem.core.roles import Role
from tandem.localtime import pending_change
from tandem.store.models import Approval, Proposal

PROPOSAL_SECONDS = mcore.PROPOSAL_SECONDS


def proposal_public(
    p: Proposal,
    approvals: list[Approval],
    *,
    now: int | None = None,
    required: Mapping[Role, int] | None = None,
) -> dict[str, Any]:
    """A proposal as the API shows it. Given ``now``, an approved change still in its
    delay also says when it takes effect (local time of the server) and who may veto;
    given ``required``, how many approvals of which role the policy in force asks for."""
    out: dict[str, Any] = {
        "id": p.id,
        "kind": p.kind,
        "body": loads_strict(p.body),
        "proposer": p.proposer,
        "status": p.status,
        "created_at": p.created_at,
        "expires_at": p.expires_at,
        "approved_at": p.approved_at,
        "effective_at": p.effective_at,
        "digest": proposal_digest(p),
        "approvals": [{"member": a.member, "role": a.role, "at": a.created_at} for a in approvals],
    }
    if required is not None:
        out["required"] = {role.value: n for role, n in sorted(required.items())}
    if now is not None:
        notice = pending_change(p.kind, p.status, p.effective_at, now)
        if notice is not None:
            out["pending_change"] = notice
    return out


def proposal_digest(p: Proposal) -> str:
    """What an approver signs: the proposal's identity and exact content."""
    return mcore.proposal_digest(
        proposal_id=p.id, kind=p.kind, body=loads_strict(p.body), proposer=p.proposer
    )


def proposal_request(p: Proposal) -> engine.Request:
    return engine.Request(
        requester=p.proposer, kind=p.kind, digest=proposal_digest(p), created_at=p.created_at
    )
