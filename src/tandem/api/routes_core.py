"""The service's own routes: health, deployment facts, genesis, sessions, TOTP enrolment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from tandem.api import schemas
from tandem.api.deps import ServiceDep, document_request_bodies, strict
from tandem.api.public_models import DeploymentPublic, GenesisPublic, SessionPublic, TotpEnrolPublic

router = APIRouter()


@router.get(
    "/v1/health",
    response_model=schemas.Health,
    tags=["service"],
    responses={503: {"model": schemas.Health, "description": "Sealed: signing refused"}},
)
def health(svc: ServiceDep) -> Any:
    """Liveness and seal state (followed by the container HEALTHCHECK): 200 when the
    service may sign, 503 with the sealing check's stable `code` when it is sealed."""
    if svc.runner.sealed_reason is None:
        return JSONResponse({"status": "ok", "sealed": False, "reason": None})
    body = schemas.Health(
        status="sealed", sealed=True, reason=svc.runner.sealed_reason, code=svc.runner.sealed_code or "sealed"
    )
    return JSONResponse(status_code=503, content=body.model_dump())


@router.get("/v1/deployment", tags=["service"], response_model=DeploymentPublic)
def deployment(svc: ServiceDep) -> dict[str, Any]:
    """Public facts: deployment id, entity, genesis hash (root of trust), service keys."""
    return svc.members.deployment_info()


@router.post("/v1/genesis", status_code=201, tags=["membership"], response_model=GenesisPublic)
def genesis(
    svc: ServiceDep,
    body: schemas.GenesisIn = strict(schemas.GenesisIn),
    claim_token: Annotated[str | None, Header(alias="X-Tandem-Claim-Token")] = None,
) -> dict[str, Any]:
    """Create the deployment. Every initial member signs the genesis document; the
    header carries the one-time claim token `tandem init` printed."""
    return svc.members.genesis(body.genesis, body.signatures, claim_token=claim_token)


@router.post("/v1/sessions", status_code=201, tags=["membership"], response_model=SessionPublic)
def open_session(svc: ServiceDep, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)) -> dict[str, Any]:
    """Open a 15-minute read session with a signed `session.open` action."""
    return svc.members.open_session(body.envelope)


@router.post("/v1/totp/enrol", tags=["membership"], response_model=TotpEnrolPublic)
def enrol_totp(svc: ServiceDep, body: schemas.TotpEnrolIn = strict(schemas.TotpEnrolIn)) -> dict[str, Any]:
    """Register the member's TOTP seed, sealed on its own machine to the service key."""
    return svc.members.enrol_totp(body.envelope, confirm_code=body.confirm_code, totp=body.totp)


document_request_bodies(router)
