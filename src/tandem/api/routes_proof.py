"""Proof-of-ownership routes: challenges, contributions, the signed bundle."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import Field

from tandem.api import schemas
from tandem.api.deps import PageQuery, Reader, ServiceDep, document_request_bodies, strict
from tandem.api.public_models import ProofChallengePublic

router = APIRouter(tags=["proofs"])


class ProofContributionIn(schemas.Strict):
    envelope: dict[str, Any] = Field(description="Signed `proof.contribute` action")
    totp: str | None = Field(
        default=None,
        min_length=6,
        max_length=6,
        description="Current TOTP code (required of a custodian)",
    )


@router.post("/v1/proofs/challenges", status_code=201, response_model=ProofChallengePublic)
def issue_challenge(
    svc: ServiceDep,
    body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn),
) -> dict[str, Any]:
    """Issue a proof-of-ownership challenge (custodian or auditor): a signed
    `proof.challenge` action with `{statement, scope, expires_at?, nonce?}`. The answer
    carries one service-signed operation key per key set in scope."""
    return svc.proofs.issue_proof_challenge(body.envelope)


@router.get("/v1/proofs", response_model=list[ProofChallengePublic])
def list_challenges(
    svc: ServiceDep,
    *,
    viewer: Reader,
    page: PageQuery,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """One page, oldest first, paged as `GET /v1/members`."""
    return page.answer(svc.proofs.list_proof_challenges, status=status)


@router.get("/v1/proofs/{challenge_id}", response_model=ProofChallengePublic)
def get_challenge(svc: ServiceDep, challenge_id: str, viewer: Reader) -> dict[str, Any]:
    """The challenge, its operation keys and who has contributed; managers and
    custodians also get each key set's sealed document to re-seal their share from."""
    return svc.proofs.get_proof_challenge(challenge_id, viewer=viewer)


@router.post("/v1/proofs/{challenge_id}/contributions", response_model=ProofChallengePublic)
def contribute(
    svc: ServiceDep,
    challenge_id: str,
    body: ProofContributionIn = strict(ProofContributionIn),
) -> dict[str, Any]:
    """A manager's or custodian's share re-sealed to the challenge's operation key.
    When both sides are in for every key set, every address in scope is signed."""
    schemas.same_subject(body.envelope, "challenge", challenge_id)
    return svc.proofs.contribute_proof(body.envelope, totp=body.totp)


@router.post("/v1/proofs/{challenge_id}/operations", response_model=ProofChallengePublic)
def renew_operations(
    svc: ServiceDep,
    challenge_id: str,
    body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn),
) -> dict[str, Any]:
    """Fresh operation keys for an open challenge (after a restart or failed signing)."""
    schemas.same_subject(body.envelope, "challenge", challenge_id)
    return svc.proofs.renew_proof_operations(body.envelope)


@router.get(
    "/v1/proofs/{challenge_id}/bundle",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
def bundle(svc: ServiceDep, challenge_id: str, viewer: Reader) -> Response:
    """The signed bundle, byte for byte as hashed (RFC 8785 canonical JSON); its
    SHA-256 is in the header X-Tandem-Bundle-Hash and in the audit log."""
    text, digest = svc.proofs.get_proof_bundle(challenge_id)
    return Response(
        content=text.encode("utf-8"),
        media_type="application/json",
        headers={"X-Tandem-Bundle-Hash": digest},
    )


document_request_bodies(router)
