"""Routes for withdrawals, policy and the address book.

Writes take a signed action envelope; reads need a session (``Authorization: Bearer``).
A resealed share travels beside the envelope, never inside it, so the audit log (which
stores envelopes) never holds one; the envelope binds it by ``share_digest``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import Field

from tandem.api.deps import PageQuery, Reader, ServiceDep, document_request_bodies, strict
from tandem.api.public_models import (
    AddressPublic,
    BatchApprovalPublic,
    ExplanationPublic,
    OperationPublic,
    PolicyPublic,
    ProposalPublic,
    ShareReceiptPublic,
    WithdrawalBundlePublic,
    WithdrawalOperationPublic,
    WithdrawalPublic,
)
from tandem.api.routes_books import BooksDep
from tandem.api.schemas import EnvelopeIn, Strict, same_subject
from tandem.errors import InputError
from tandem.services.batch import MAX_BATCH

router = APIRouter()


class WithdrawalCreateIn(Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `withdrawal.create` {intent, operation, share_digest}"
    )
    sealed_share: str = Field(description="The manager's share resealed to the operation key (base64)")


class ShareIn(Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `withdrawal.contribute` {withdrawal, operation, share_digest}"
    )
    sealed_share: str = Field(description="This member's share resealed to the request's operation key")
    totp: str | None = Field(
        default=None, min_length=6, max_length=6, description="A custodian's current TOTP code"
    )


class WithdrawalApproveIn(Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `withdrawal.approve` {withdrawal, intent_hash, tx_digest, policy_version, "
        "expires_at, operation, share_digest}"
    )
    totp: str = Field(min_length=6, max_length=6, description="Current TOTP code of the approver")
    sealed_share: str | None = Field(
        default=None, description="The approver's share resealed to the operation"
    )


class BatchItemIn(Strict):
    envelope: dict[str, Any] = Field(description="Signed `withdrawal.approve`, as for one approval")
    sealed_share: str | None = Field(
        default=None, description="The approver's share resealed to that request's operation"
    )


class BatchApproveIn(Strict):
    envelope: dict[str, Any] = Field(
        description="Signed `withdrawal.batch_approve` {withdrawals, nonces}: each item's withdrawal id "
        "and the nonce of its signed approval, in order"
    )
    totp: str = Field(min_length=6, max_length=6, description="Current TOTP code of the approver, used once")
    items: list[BatchItemIn] = Field(min_length=1, max_length=MAX_BATCH)


# --- withdrawals -------------------------------------------------------------------


@router.post(
    "/v1/withdrawals/operations", status_code=201, tags=["withdrawals"], response_model=OperationPublic
)
def prepare(svc: ServiceDep, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Manager) A one-time operation key for a withdrawal from a key set, signed by the
    service key; returns it with the sealed key set and the wallet's addresses."""
    return svc.withdrawals.prepare_withdrawal(body.envelope)


@router.post("/v1/withdrawals", status_code=201, tags=["withdrawals"], response_model=WithdrawalPublic)
def create(
    svc: ServiceDep, books: BooksDep, body: WithdrawalCreateIn = strict(WithdrawalCreateIn)
) -> dict[str, Any]:
    """(Manager) Request a withdrawal. Tandem builds the transaction, the policy decides;
    a Solana token's program is checked against its mint when the server reads that network."""
    return svc.withdrawals.create_withdrawal(
        body.envelope, sealed_share=body.sealed_share, mint_facts=books.mint_facts
    )


@router.get("/v1/withdrawals", tags=["withdrawals"], response_model=list[WithdrawalPublic])
def list_(
    *,
    svc: ServiceDep,
    viewer: Reader,
    page: PageQuery,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """One page (``limit``, default 100, at most 500), oldest first; the
    ``Tandem-Next-Cursor`` header, when present, is the ``cursor`` of the next page."""
    return page.answer(svc.withdrawals.list_withdrawals, status=status)


@router.get("/v1/withdrawals/{withdrawal_id}", tags=["withdrawals"], response_model=WithdrawalPublic)
def show(svc: ServiceDep, withdrawal_id: str, viewer: Reader) -> dict[str, Any]:
    """The request with its raw unsigned transaction; clients decode it themselves."""
    return svc.withdrawals.get_withdrawal(withdrawal_id)


@router.post("/v1/withdrawals/{withdrawal_id}/approve", tags=["withdrawals"], response_model=WithdrawalPublic)
def approve(
    svc: ServiceDep, withdrawal_id: str, body: WithdrawalApproveIn = strict(WithdrawalApproveIn)
) -> dict[str, Any]:
    """Approve over (id, intent hash, tx digest, policy version, expiry), with TOTP."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.approve_withdrawal(body.envelope, totp=body.totp, sealed_share=body.sealed_share)


@router.post("/v1/withdrawals/approvals", tags=["withdrawals"], response_model=BatchApprovalPublic)
def approve_batch(svc: ServiceDep, body: BatchApproveIn = strict(BatchApproveIn)) -> dict[str, Any]:
    """Approve several withdrawals with one TOTP code: the code is checked once, then
    each signed approval is admitted as by the single route. Per-item results; each
    refused item is audited with its code."""
    items = [item.model_dump(exclude_none=True) for item in body.items]
    return svc.batch.approve_withdrawals(body.envelope, totp=body.totp, items=items)


@router.post("/v1/withdrawals/{withdrawal_id}/reject", tags=["withdrawals"], response_model=WithdrawalPublic)
def reject(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.reject_withdrawal(body.envelope)


@router.post("/v1/withdrawals/{withdrawal_id}/cancel", tags=["withdrawals"], response_model=WithdrawalPublic)
def cancel(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.cancel_withdrawal(body.envelope)


@router.post("/v1/withdrawals/{withdrawal_id}/veto", tags=["withdrawals"], response_model=WithdrawalPublic)
def veto(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Custodian) Stop a time-locked withdrawal during its lock."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.veto_withdrawal(body.envelope)


@router.post(
    "/v1/withdrawals/{withdrawal_id}/operation",
    tags=["withdrawals"],
    response_model=WithdrawalOperationPublic,
)
def renew(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """A new operation key for an open request (after a restart); shares are given again."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.renew_operation(body.envelope)


@router.post(
    "/v1/withdrawals/{withdrawal_id}/shares",
    tags=["withdrawals"],
    response_model=ShareReceiptPublic,
)
def contribute(svc: ServiceDep, withdrawal_id: str, body: ShareIn = strict(ShareIn)) -> dict[str, Any]:
    """A member's share resealed to the request's current operation key."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.contribute_share(body.envelope, sealed_share=body.sealed_share, totp=body.totp)


@router.post("/v1/withdrawals/{withdrawal_id}/release", tags=["withdrawals"], response_model=WithdrawalPublic)
def release(
    svc: ServiceDep,
    withdrawal_id: str,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    body: EnvelopeIn = strict(EnvelopeIn),
) -> JSONResponse:
    """Sign and return the raw transaction, exactly once. A retry with the same
    Idempotency-Key and body returns the first answer."""
    if idempotency_key is None:
        raise InputError("an Idempotency-Key header is required")
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    answer = svc.withdrawals.release_withdrawal(body.envelope, idempotency_key=idempotency_key)
    return JSONResponse(status_code=answer.status_code, content=answer.body)


@router.post(
    "/v1/withdrawals/{withdrawal_id}/broadcast", tags=["withdrawals"], response_model=WithdrawalPublic
)
def broadcast(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """Record that the released transaction was broadcast (`withdrawal.broadcast`
    {withdrawal, txid}); the txid must be the released one."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.record_broadcast(body.envelope)


@router.post("/v1/withdrawals/{withdrawal_id}/confirm", tags=["withdrawals"], response_model=WithdrawalPublic)
def confirm(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """Record that the released transaction is confirmed on chain (`withdrawal.confirm`)."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.confirm_withdrawal(body.envelope)


@router.post("/v1/withdrawals/{withdrawal_id}/abandon", tags=["withdrawals"], response_model=WithdrawalPublic)
def abandon(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """Record that the released transaction will not be used (`withdrawal.abandon`
    {withdrawal, reason}); its Ethereum nonce is freed."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.abandon_withdrawal(body.envelope)


@router.get(
    "/v1/withdrawals/{withdrawal_id}/bundle", tags=["withdrawals"], response_model=WithdrawalBundlePublic
)
def bundle(svc: ServiceDep, withdrawal_id: str, viewer: Reader) -> dict[str, Any]:
    """Everything an offline signer re-verifies; members' clients add their shares."""
    return svc.withdrawals.withdrawal_bundle(withdrawal_id)


@router.post("/v1/withdrawals/{withdrawal_id}/import", tags=["withdrawals"], response_model=WithdrawalPublic)
def import_(svc: ServiceDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """Record an offline-signed transaction after re-verifying it."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return svc.withdrawals.import_withdrawal(body.envelope)


# --- policy and address book -----------------------------------------------------------


@router.get("/v1/policy", tags=["policy"], response_model=PolicyPublic)
def policy(svc: ServiceDep, viewer: Reader) -> dict[str, Any]:
    """The policy in force and every version, pending ones included."""
    return svc.policies.policy_info()


@router.get("/v1/policy/explain", tags=["policy"], response_model=ExplanationPublic)
def explain(  # noqa: PLR0913 - FastAPI maps query parameters to arguments
    *,
    svc: ServiceDep,
    viewer: Reader,
    withdrawal: str | None = None,
    wallet: str | None = None,
    chain: str | None = None,
    network: str | None = None,
    asset: str | None = None,
    amount: str | None = None,
    destination: str | None = None,
) -> dict[str, Any]:
    """Which rule applies and why: for a withdrawal (as decided), or for given facts (now)."""
    if withdrawal is not None:
        return svc.withdrawals.explain_withdrawal(withdrawal)
    facts = {
        "wallet": wallet,
        "chain": chain,
        "network": network,
        "asset": asset,
        "amount": amount,
        "destination": destination,
    }
    missing = [k for k, v in facts.items() if v is None]
    if missing:
        raise InputError(f"give ?withdrawal=ID or all of the facts (missing: {', '.join(missing)})")
    return svc.policies.explain_facts(**{k: v for k, v in facts.items() if v is not None})


@router.post("/v1/policy/proposals", status_code=201, tags=["policy"], response_model=ProposalPublic)
def propose_policy(svc: ServiceDep, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Manager) Propose the next policy version; a custodian approves it with
    POST /v1/proposals/{id}/approve; it takes effect after the current change delay."""
    return svc.policies.propose_policy(body.envelope)


@router.post("/v1/policy/proposals/{proposal_id}/veto", tags=["policy"], response_model=ProposalPublic)
def veto_change(svc: ServiceDep, proposal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Custodian) Veto an approved policy or address-book change during its delay."""
    same_subject(body.envelope, "proposal", proposal_id)
    return svc.policies.veto_policy_proposal(body.envelope)


@router.get("/v1/addressbook", tags=["policy"], response_model=list[AddressPublic])
def addressbook(svc: ServiceDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """One page of the entries, every one ever added (vetoed ones too) with the state it
    reads as now, in the order they take effect; paged as `GET /v1/members`."""
    return page.answer(svc.policies.address_book_view)


@router.post("/v1/addressbook/proposals", status_code=201, tags=["policy"], response_model=ProposalPublic)
def propose_address(svc: ServiceDep, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Manager) Propose adding or removing an allow-listed destination."""
    return svc.policies.propose_address_change(body.envelope)


document_request_bodies(router)
