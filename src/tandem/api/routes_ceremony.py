"""Key-ceremony and key-set routes.

Every write is a signed action envelope; the URL id must match the id the action signs.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from tandem.api import schemas
from tandem.api.deps import PageQuery, Reader, ServiceDep, document_request_bodies, strict
from tandem.api.public_models import (
    CeremonyPublic,
    KeysetExportPublic,
    KeysetImportPublic,
    KeysetOperationPublic,
    KeysetPublic,
    TranscriptPublic,
)

router = APIRouter()


class CeremonyApprovalIn(schemas.Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `ceremony.approve` {ceremony, digest, commitment | sealed_share}"
    )
    totp: str = Field(description="Current 6-digit TOTP code of the approver", min_length=6, max_length=6)


class ImportIn(schemas.Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `keyset.import` {export_hash, operation, sealed_share}"
    )
    export: dict[str, Any] = Field(description="The key-set export, as `keyset export` wrote it")


class ImportApprovalIn(schemas.Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `keyset.import_approve` {import, export_hash, sealed_share}"
    )
    totp: str = Field(description="Current 6-digit TOTP code of the approver", min_length=6, max_length=6)


# --- ceremonies ----------------------------------------------------------------------


@router.post("/v1/ceremonies", status_code=201, tags=["ceremonies"], response_model=CeremonyPublic)
def propose(svc: ServiceDep, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)) -> dict[str, Any]:
    """A manager proposes a ceremony: signed `ceremony.propose` with `{ceremony, definition
    (TOML text), commitment}` for keygen, or `{ceremony, definition, target_keyset,
    operation, sealed_share}` for a reshare. The definition is validated whole first."""
    return svc.ceremonies.propose_ceremony(body.envelope)


@router.get("/v1/ceremonies", tags=["ceremonies"], response_model=list[CeremonyPublic])
def list_ceremonies(
    svc: ServiceDep,
    *,
    viewer: Reader,
    page: PageQuery,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """One page, oldest first, paged as `GET /v1/members`."""
    return page.answer(svc.ceremonies.list_ceremonies, status=status)


@router.get("/v1/ceremonies/{ceremony_id}", tags=["ceremonies"], response_model=CeremonyPublic)
def get_ceremony(svc: ServiceDep, ceremony_id: str, viewer: Reader) -> dict[str, Any]:
    """The ceremony, its definition text and who has approved, revealed, countersigned.
    Clients recompute `digest` themselves before approving."""
    return svc.ceremonies.get_ceremony(ceremony_id)


@router.post("/v1/ceremonies/{ceremony_id}/approve", tags=["ceremonies"], response_model=CeremonyPublic)
def approve(
    svc: ServiceDep,
    ceremony_id: str,
    body: CeremonyApprovalIn = strict(CeremonyApprovalIn),
) -> dict[str, Any]:
    """Approve with a signed `ceremony.approve` over the ceremony digest, your own
    commitment (keygen) or re-sealed share (reshare), and a TOTP code."""
    schemas.same_subject(body.envelope, "ceremony", ceremony_id)
    return svc.ceremonies.approve_ceremony(body.envelope, totp=body.totp)


@router.post("/v1/ceremonies/{ceremony_id}/reject", tags=["ceremonies"], response_model=CeremonyPublic)
def reject(
    svc: ServiceDep, ceremony_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """A custodian stops the ceremony: signed `ceremony.reject` with `{ceremony, reason}`."""
    schemas.same_subject(body.envelope, "ceremony", ceremony_id)
    return svc.ceremonies.reject_ceremony(body.envelope)


@router.post("/v1/ceremonies/{ceremony_id}/reveal", tags=["ceremonies"], response_model=CeremonyPublic)
def reveal(
    svc: ServiceDep, ceremony_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """Reveal your contribution (signed `ceremony.reveal` with `{ceremony, contribution}`).
    The last reveal executes the ceremony."""
    schemas.same_subject(body.envelope, "ceremony", ceremony_id)
    return svc.ceremonies.reveal_contribution(body.envelope)


@router.post("/v1/ceremonies/{ceremony_id}/countersign", tags=["ceremonies"], response_model=CeremonyPublic)
def countersign(
    svc: ServiceDep, ceremony_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """Countersign the transcript: signed `ceremony.countersign` with
    `{ceremony, transcript_hash}` (the hash your client recomputed)."""
    schemas.same_subject(body.envelope, "ceremony", ceremony_id)
    return svc.ceremonies.countersign_transcript(body.envelope)


@router.post("/v1/ceremonies/{ceremony_id}/abort", tags=["ceremonies"], response_model=CeremonyPublic)
def abort(
    svc: ServiceDep, ceremony_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """The proposer withdraws the ceremony before execution (signed `ceremony.abort`)."""
    schemas.same_subject(body.envelope, "ceremony", ceremony_id)
    return svc.ceremonies.abort_ceremony(body.envelope)


@router.get("/v1/ceremonies/{ceremony_id}/transcript", tags=["ceremonies"], response_model=TranscriptPublic)
def transcript(svc: ServiceDep, ceremony_id: str, viewer: Reader) -> dict[str, Any]:
    """The transcript: public data only, verifiable offline (`tandem verify transcript`)."""
    return svc.ceremonies.get_transcript(ceremony_id)


# --- key sets ------------------------------------------------------------------------


@router.get("/v1/keysets", tags=["keysets"], response_model=list[KeysetPublic])
def list_keysets(svc: ServiceDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """One page, oldest first, paged as `GET /v1/members`."""
    return page.answer(svc.ceremonies.list_keysets)


@router.post("/v1/keysets/import", status_code=201, tags=["keysets"], response_model=CeremonyPublic)
def propose_import(svc: ServiceDep, body: ImportIn = strict(ImportIn)) -> dict[str, Any]:
    """A manager proposes restoring an exported key set, with its share re-sealed to an
    import operation; a custodian finishes it the same way."""
    return svc.ceremonies.propose_import(body.envelope, body.export)


@router.post("/v1/keysets/import/{import_id}/approve", tags=["keysets"], response_model=KeysetImportPublic)
def approve_import(
    svc: ServiceDep,
    import_id: str,
    body: ImportApprovalIn = strict(ImportApprovalIn),
) -> dict[str, Any]:
    """A custodian re-seals its share to the import operation, with a TOTP code; the
    signer checks both shares rebuild the key set's DEK and restores it."""
    schemas.same_subject(body.envelope, "import", import_id)
    return svc.ceremonies.approve_import(body.envelope, totp=body.totp)


@router.get("/v1/keysets/{keyset_id}", tags=["keysets"], response_model=KeysetPublic)
def get_keyset(svc: ServiceDep, keyset_id: str, viewer: Reader) -> dict[str, Any]:
    """Public keys, addresses, birth proofs, status, and the sealed record (ciphertexts
    and sealed shares only) that members re-seal their share from."""
    return svc.ceremonies.get_keyset(keyset_id)


@router.post(
    "/v1/keysets/{keyset_id}/operations",
    status_code=201,
    tags=["keysets"],
    response_model=KeysetOperationPublic,
)
def new_operation(
    svc: ServiceDep, keyset_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """A one-time operation key (signed by the service key) for a reshare or an import:
    signed `keyset.operation` with `{keyset, purpose}`."""
    schemas.same_subject(body.envelope, "keyset", keyset_id)
    return svc.ceremonies.keyset_operation(body.envelope)


@router.post("/v1/keysets/{keyset_id}/export", tags=["keysets"], response_model=KeysetExportPublic)
def export(
    svc: ServiceDep, keyset_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
) -> dict[str, Any]:
    """The key set for offline media (signed `keyset.export`; recorded in the audit log).
    It opens only with a manager's and a custodian's share."""
    schemas.same_subject(body.envelope, "keyset", keyset_id)
    return svc.ceremonies.export_keyset(body.envelope)


document_request_bodies(router)
