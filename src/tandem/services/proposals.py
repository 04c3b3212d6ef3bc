"""The proposal lifecycle: approve or reject, reach quorum, take effect after the delay.

One lifecycle for every kind of proposal. What a change *does* once it takes effect
belongs to its kind: member changes to :mod:`tandem.services.membership` (the
``_apply_member`` step), policy and address-book changes to
:mod:`tandem.services.policies`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlmodel import Session, col, select

from tandem.core import approvals as engine
from tandem.core import membership as mcore
from tandem.core.approvals import QuorumResult
from tandem.core.canonical import canonical, check_fields, loads_strict
from tandem.core.lifecycles import PROPOSALS
from tandem.core.policy import Policy
from tandem.core.roles import Role
from tandem.errors import (
    ConflictError,
    InvalidStateError,
    NotFoundError,
    QuorumNotMetError,
    TimeLockedError,
)
from tandem.localtime import local_iso
from tandem.services.approvals import approvals_of, current_membership
from tandem.services.base import Call, Runner
from tandem.services.policies import apply_policy_proposal, current_policy
from tandem.services.proposal_docs import proposal_digest, proposal_public, proposal_request
from tandem.store import pages
from tandem.store.models import Approval, Member, Proposal

SIDES = (Role.MANAGER, Role.CUSTODIAN)


class ApplyMember(Protocol):
    def apply_member(self, call: Call, proposal: Proposal, body: dict[str, Any]) -> None: ...


class ProposalService:
    """Decides proposals of every kind under the policy in force; what an approved member
    change does is the membership service's (``members``)."""

    def __init__(self, runner: Runner, members: ApplyMember) -> None:
        self.runner = runner
        self.members = members

    def decide_proposal(self, envelope: Any, *, totp: str | None, approve: bool) -> dict[str, Any]:
        action_type = "proposal.approve" if approve else "proposal.reject"

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(
                call.action.body,
                required=("proposal", "digest"),
                optional=("reason",),
                where="body",
            )
            proposal = call.session.get(Proposal, body["proposal"])
            if proposal is None:
                raise NotFoundError("no such proposal")
            decided = PROPOSALS.transition(
                proposal.status,
                "approve" if approve else "reject",
                expires_at=proposal.expires_at,
                now=call.now,
            )
            if body["digest"] != proposal_digest(proposal):
                raise ConflictError("the approval is for different proposal content (digest mismatch)")
            proposer = call.session.get(Member, proposal.proposer)
            assert proposer is not None
            policy = _policy_at(call, call.now)
            engine.admit(
                proposal_request(proposal),
                member=call.actor.id,
                role=Role(call.actor.role),
                required=mcore.required_approvals(policy, proposal.kind, Role(proposer.role)),
                what="this proposal",
            )
            if not approve:
                proposal.status = decided
                call.session.add(proposal)
                self.runner.audit(
                    call,
                    "proposal.rejected",
                    {"proposal": proposal.id, "reason": body.get("reason", "")},
                )
                return proposal_public(proposal, [])
            return self._proposal_approve(call, proposal, proposer, policy, digest=body["digest"])

        return self.runner.run(
            action_type,
            envelope,
            use_case,
            types=action_type,
            roles=SIDES,
            require_totp=approve,
            totp=totp,
        )

    def _proposal_approve(
        self, call: Call, proposal: Proposal, proposer: Member, policy: Policy, *, digest: str
    ) -> dict[str, Any]:
        """One approval per member; at quorum the change takes effect after the delay the
        policy in force sets."""
        assert call.actor is not None
        already = call.session.exec(
            select(Approval).where(Approval.subject == proposal.id, Approval.member == call.actor.id)
        ).first()
        if already is not None:
            raise ConflictError("this member has already approved; approvals count per member")
        call.session.add(
            Approval(
                subject=proposal.id,
                member=call.actor.id,
                role=call.actor.role,
                envelope=canonical(call.envelope).decode(),
                created_at=call.now,
            )
        )
        call.session.flush()
        approvals = self._proposal_approvals(call, proposal)
        result = self._proposal_quorum(call, proposal, proposer, approvals, policy)
        data: dict[str, Any] = {
            "proposal": proposal.id,
            "digest": digest,
            "quorum_met": result.met,
        }
        if result.met:
            # The delay comes from the policy in force before the change, as for
            # policy changes; the verifiers recompute it from the same policy.
            data["effective_at"] = call.now + mcore.change_delay(policy, proposal.kind)
        self.runner.audit(call, "proposal.approved", data)
        if result.met:
            self._approved(call, proposal, data["effective_at"])
        required = mcore.required_approvals(policy, proposal.kind, Role(proposer.role))
        return proposal_public(proposal, approvals, now=call.now, required=required)

    @staticmethod
    def _proposal_approvals(call: Call, proposal: Proposal) -> list[Approval]:
        return list(call.session.exec(select(Approval).where(Approval.subject == proposal.id)).all())

    def _proposal_quorum(
        self, call: Call, proposal: Proposal, proposer: Member, approvals: list[Approval], policy: Policy
    ) -> QuorumResult:
        """Distinct current members of the approving side, as many as the policy in
        force says (the membership section for member changes)."""
        return engine.evaluate(
            proposal_request(proposal),
            [
                engine.Given(
                    member=a.member,
                    role=Role(a.role),
                    at=a.created_at,
                    digest=loads_strict(a.envelope)["action"]["body"]["digest"],
                )
                for a in approvals
            ],
            membership=current_membership(call.session),
            required=mcore.required_approvals(policy, proposal.kind, Role(proposer.role)),
            now=call.now,
        )

    def _approved(self, call: Call, proposal: Proposal, effective_at: int) -> None:
        proposal.approved_at = call.now
        body = loads_strict(proposal.body)
        if proposal.kind.startswith("member."):
            proposal.status = PROPOSALS.transition(proposal.status, "quorum")
            proposal.effective_at = effective_at
            if effective_at <= call.now:
                self.members.apply_member(call, proposal, body)
        else:
            apply_policy_proposal(self.runner, call, proposal, body)
        call.session.add(proposal)

    def apply_proposal(self, envelope: Any) -> dict[str, Any]:
        """Carry out an approved membership change whose delay has passed (any manager or
        custodian may ask; it is the clock, not a decision). The quorum is counted again
        among current members: an approver removed during the delay no longer counts."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(call.action.body, required=("proposal",), where="body")
            proposal_id = body["proposal"]
            proposal = call.session.get(Proposal, proposal_id) if isinstance(proposal_id, str) else None
            if proposal is None:
                raise NotFoundError("no such proposal")
            if proposal.kind not in mcore.MEMBER_KINDS:
                raise InvalidStateError(f"a {proposal.kind} change takes effect by itself after its delay")
            if not PROPOSALS.allows(proposal.status, "apply") or proposal.effective_at is None:
                raise InvalidStateError(
                    f"proposal is {proposal.status}; only an approved change can be applied"
                )
            if call.now < proposal.effective_at:
                raise TimeLockedError(
                    f"the change is in its veto window until {local_iso(proposal.effective_at)} "
                    f"({proposal.effective_at - call.now}s left)",
                    details={"effective_at": proposal.effective_at},
                )
            proposer = call.session.get(Member, proposal.proposer)
            assert proposer is not None
            approvals = self._proposal_approvals(call, proposal)
            result = self._proposal_quorum(
                call, proposal, proposer, approvals, _policy_at(call, proposal.approved_at or call.now)
            )
            if not result.met:
                raise QuorumNotMetError(
                    "the approvals no longer meet the quorum (an approver was removed during the delay)"
                )
            self.runner.audit(call, "proposal.applied", {"proposal": proposal.id, "kind": proposal.kind})
            self.members.apply_member(call, proposal, loads_strict(proposal.body))
            call.session.add(proposal)
            return proposal_public(proposal, approvals)

        return self.runner.run("proposal.apply", envelope, use_case, types="proposal.apply", roles=SIDES)

    def list_proposals(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of proposals, oldest first, the stored status filtered in SQL and the
        page's approvals read in one query."""
        now = self.runner.clock()
        query = select(Proposal)
        if status:
            query = query.where(Proposal.status == status)
        with self.runner.db.read() as session:
            page = pages.read_page(
                session,
                query,
                kind="proposals",
                order=(col(Proposal.created_at), col(Proposal.id)),
                limit=limit,
                cursor=cursor,
            )
            approvals = approvals_of(session, [p.id for p in page.rows])
            required = _required_of(session, page.rows, now)
            items = [proposal_public(p, approvals[p.id], now=now, required=required[p.id]) for p in page.rows]
        return {"items": items, "next_cursor": page.next_cursor}

    def get_proposal(self, proposal_id: str) -> dict[str, Any]:
        now = self.runner.clock()
        with self.runner.db.read() as session:
            p = session.get(Proposal, proposal_id)
            if p is None:
                raise NotFoundError("no such proposal")
            approvals = list(session.exec(select(Approval).where(Approval.subject == p.id)).all())
            return proposal_public(p, approvals, now=now, required=_required_of(session, [p], now)[p.id])


def _required_of(session: Session, proposals: Sequence[Proposal], now: int) -> dict[str, dict[Role, int]]:
    """The approvals each proposal needs under the policy in force at ``now`` (as its
    approval is counted), its proposers' roles read in one query."""
    policy = current_policy(session, now)
    ids = {p.proposer for p in proposals}
    roles = (
        {m.id: Role(m.role) for m in session.exec(select(Member).where(col(Member.id).in_(ids))).all()}
        if ids
        else {}
    )
    return {
        p.id: mcore.required_approvals(policy, p.kind, roles.get(p.proposer, Role.MANAGER)) for p in proposals
    }


def _policy_at(call: Call, at: int) -> Policy:
    return current_policy(call.session, at)
