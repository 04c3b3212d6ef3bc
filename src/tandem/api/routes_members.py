"""Membership routes: the members, and proposals to add, remove or rekeying one (the
other side approves; either side may veto during the delay)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tandem.api import schemas
from tandem.api.deps import PageQuery, Reader, ServiceDep, document_request_bodies, strict
from tandem.api.public_models import MemberPublic, ProposalPublic

router = APIRouter(tags=["membership"])


@router.get("/v1/members", response_model=list[MemberPublic])
def members(svc: ServiceDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """One page (``limit``, default 100, at most 500) in the order members were added;
    the ``Tandem-Next-Cursor`` header, when present, is the ``cursor`` of the next page."""
    return page.answer(svc.members.list_members)


@router.post("/v1/members/proposals", status_code=201, response_model=ProposalPublic)
def propose_member(svc: ServiceDep, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)) -> dict[str, Any]:
    """Propose adding, removing or rekeying a member; the other side must approve."""
    return svc.members.propose_member_change(body.envelope)


@router.get("/v1/proposals", response_model=list[ProposalPublic])
def proposals(
    *,
    svc: ServiceDep,
    viewer: Reader,
    page: PageQuery,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """One page, oldest first, paged as `GET /v1/members`."""
    return page.answer(svc.proposals.list_proposals, status=status)


@router.get("/v1/proposals/{proposal_id}", response_model=ProposalPublic)
def proposal(proposal_id: str, svc: ServiceDep, viewer: Reader) -> dict[str, Any]:
    return svc.proposals.get_proposal(proposal_id)


@router.post("/v1/proposals/{proposal_id}/approve", response_model=ProposalPublic)
def approve(
    proposal_id: str, svc: ServiceDep, body: schemas.ApprovalIn = strict(schemas.ApprovalIn)
) -> dict[str, Any]:
    """Approve with a signed `proposal.approve` over the proposal digest, plus TOTP."""
    schemas.same_subject(body.envelope, "proposal", proposal_id)
    return svc.proposals.decide_proposal(body.envelope, totp=body.totp, approve=True)


@router.post("/v1/proposals/{proposal_id}/reject", response_model=ProposalPublic)
def reject(
    proposal_id: str, svc: ServiceDep, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    schemas.same_subject(body.envelope, "proposal", proposal_id)
    return svc.proposals.decide_proposal(body.envelope, totp=None, approve=False)


@router.post("/v1/proposals/{proposal_id}/veto", response_model=ProposalPublic)
def veto_member(
    proposal_id: str, svc: ServiceDep, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """Either side stops an approved membership change during its delay (`proposal.veto`)."""
    schemas.same_subject(body.envelope, "proposal", proposal_id)
    return svc.members.veto_member_proposal(body.envelope)


@router.post("/v1/proposals/{proposal_id}/apply", response_model=ProposalPublic)
def apply_member(
    proposal_id: str, svc: ServiceDep, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """Carry out an approved membership change once its delay has passed (`proposal.apply`)."""
    schemas.same_subject(body.envelope, "proposal", proposal_id)
    return svc.proposals.apply_proposal(body.envelope)


document_request_bodies(router)
