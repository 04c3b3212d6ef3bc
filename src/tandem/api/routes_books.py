"""Routes for the books: clients, allocations, the register, deposits, broadcast and
tracking of releases, reconciliation, prices and statements. Managers propose clients
and allocations, custodians approve them; auditors read everything. The :class:`Books`
object lives on ``app.state.books`` (set by ``create_app``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from tandem.api.deps import PageQuery, Reader, document_request_bodies, strict
from tandem.api.public_models import (
    BooksProposalPublic,
    ClientPublic,
    DepositPublic,
    JobPublic,
    LoggedPublic,
    MovementPublic,
    PositionPublic,
    PriceImportPublic,
    PricePublic,
    ReportPublic,
    StatementsPublic,
    SuggestionPublic,
    TrackingPublic,
)
from tandem.api.schemas import ApprovalIn, EnvelopeIn, Strict, same_subject
from tandem.services.books import Books


class StatementIssueIn(Strict):
    envelope: dict[str, Any] = Field(description="Signed `statement.issue` {period[, client]}")
    custodian: str | None = Field(
        default=None, max_length=200, description="The custodian's name, for the heading"
    )


class ReconcileIn(Strict):
    envelope: dict[str, Any] = Field(description="Signed `reconciliation.run` {}")
    snapshot: dict[str, Any] | None = Field(
        default=None, description="An offline chain snapshot; without it the configured chains are read"
    )
    background: bool = Field(
        default=False,
        description="Read the chains in a background job and answer at once with its id; "
        "follow it at GET /v1/books/reconciliations/jobs/{job} (progress, then the report)",
    )


def books_of(request: Request) -> Books:
    books: Books = request.app.state.books
    return books


BooksDep = Annotated[Books, Depends(books_of)]
router = APIRouter(tags=["books"])

# --- clients and allocations -----------------------------------------------------


@router.post("/v1/books/clients", status_code=201, response_model=BooksProposalPublic)
def propose_client(books: BooksDep, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Manager) Propose a client: `client.propose` {id, name, segregation}. Segregation
    class `segregated` (its own `client:<id>` key sets) or `omnibus` (a share of an
    omnibus wallet, by approved allocations)."""
    return books.propose_client(body.envelope)


@router.post("/v1/books/clients/proposals/{proposal_id}/approve", response_model=BooksProposalPublic)
def approve_client(
    books: BooksDep, proposal_id: str, body: ApprovalIn = strict(ApprovalIn)
) -> dict[str, Any]:
    """(Custodian) Approve a client proposal: `client.approve` {proposal, digest}, with TOTP."""
    same_subject(body.envelope, "proposal", proposal_id)
    return books.approve_client(body.envelope, totp=body.totp)


@router.post("/v1/books/allocations", status_code=201, response_model=BooksProposalPublic)
def propose_allocation(books: BooksDep, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Manager) Attribute (part of) an omnibus deposit to an omnibus client:
    `allocation.propose` {deposit, client, amount}."""
    return books.propose_allocation(body.envelope)


@router.post("/v1/books/allocations/{proposal_id}/approve", response_model=BooksProposalPublic)
def approve_allocation(
    books: BooksDep, proposal_id: str, body: ApprovalIn = strict(ApprovalIn)
) -> dict[str, Any]:
    """(Custodian) Approve an allocation: `allocation.approve` {proposal, digest}, with TOTP."""
    same_subject(body.envelope, "proposal", proposal_id)
    return books.approve_allocation(body.envelope, totp=body.totp)


@router.get("/v1/books/clients", response_model=list[ClientPublic])
def clients(books: BooksDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """One page of the clients, by id, each with the key sets it owns; paged as `GET /v1/members`."""
    return page.answer(books.clients_page)


@router.get("/v1/books/proposals", response_model=list[BooksProposalPublic])
def open_proposals(books: BooksDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """Client and allocation proposals not decided yet, with the digest an approval
    signs; paged as `GET /v1/members`."""
    return page.answer(books.open_proposals)


# --- the register ----------------------------------------------------------------


@router.get("/v1/books/positions", response_model=list[PositionPublic])
def positions(
    books: BooksDep,
    viewer: Reader,
    page: PageQuery,
    client: str | None = None,
) -> list[dict[str, Any]]:
    """A position per client, chain, asset, wallet and address (base units), in that
    order; paged as `GET /v1/members`."""
    return page.answer(books.positions, client=client)


@router.get("/v1/books/movements", response_model=list[MovementPublic])
def movements(
    books: BooksDep,
    viewer: Reader,
    page: PageQuery,
    client: str | None = None,
) -> list[dict[str, Any]]:
    """One page of the register's movements, each with its evidence (txid, output or
    log index, block height), in the order recorded; paged as `GET /v1/members`."""
    return page.answer(books.movements, client=client)


@router.post("/v1/books/scan", response_model=list[DepositPublic])
def scan(books: BooksDep, body: EnvelopeIn = strict(EnvelopeIn)) -> list[dict[str, Any]]:
    """(Manager or custodian) Record the deposits the configured chains show: `register.scan` {}."""
    books.gate("register.scan", body.envelope, types="register.scan")
    return books.scan_deposits()


@router.get("/v1/books/suggest", response_model=SuggestionPublic)
def suggest(  # noqa: PLR0913, PLR0917 - FastAPI maps query parameters to arguments
    books: BooksDep,
    viewer: Reader,
    wallet: Annotated[str, Query(max_length=64)],
    chain: Annotated[str, Query(max_length=16)],
    network: Annotated[str, Query(max_length=16)],
    asset: Annotated[str, Query(max_length=80)],
    destination: Annotated[str | None, Query(max_length=100)] = None,
    nonce_account: Annotated[str | None, Query(max_length=64)] = None,
    priority: bool = False,
) -> dict[str, Any]:
    """What a withdrawal intent needs from the chain (nonce and fees, or UTXOs and a fee
    rate, or a recent blockhash or durable nonce, token decimals and the fee; for
    Solana with `priority=true` also a compute-unit price and limit)."""
    return books.suggest(
        wallet=wallet,
        chain=chain,
        network=network,
        asset=asset,
        destination=destination,
        nonce_account=nonce_account,
        priority=priority,
    )


@router.post("/v1/books/withdrawals/{withdrawal_id}/broadcast", response_model=TrackingPublic)
def broadcast(books: BooksDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """Send a released transaction through the chain backend and record it:
    `withdrawal.broadcast` {withdrawal, txid}."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return books.broadcast(body.envelope)


@router.post("/v1/books/withdrawals/{withdrawal_id}/track", response_model=TrackingPublic)
def track(books: BooksDep, withdrawal_id: str, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """Ask the chain about a broadcast release; when confirmed, record it (the signed
    `withdrawal.confirm` {withdrawal}) and move the register."""
    same_subject(body.envelope, "withdrawal", withdrawal_id)
    return books.track(body.envelope)


# --- reconciliation, prices, statements ------------------------------------------


@router.post("/v1/books/reconciliations", response_model=ReportPublic)
def reconcile(books: BooksDep, body: ReconcileIn = strict(ReconcileIn)) -> dict[str, Any]:
    """(Manager or custodian) Compare the register with the chains (or a snapshot) at the
    heights read; the signed report, its hash logged: `reconciliation.run` {}."""
    books.gate("reconciliation.run", body.envelope, types="reconciliation.run")
    if body.background and body.snapshot is None:
        return books.start_reconcile()
    return books.reconcile(body.snapshot)


@router.get("/v1/books/reconciliations/jobs", response_model=list[JobPublic])
def reconciliation_jobs(books: BooksDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """One page of the background reconciliations, newest first, without their
    reports; paged as `GET /v1/members`."""
    return page.answer(books.jobs)


@router.get("/v1/books/reconciliations/jobs/{job_id}", response_model=JobPublic)
def reconciliation_job(books: BooksDep, viewer: Reader, job_id: str) -> dict[str, Any]:
    """A background reconciliation: `running` with `done` of `total` addresses read,
    then `done` with its `result` (the signed report), `failed` with the error, or
    `interrupted` (the server stopped before it finished; start it again). Jobs are
    kept in the database, so they outlive a restart."""
    return books.job(job_id)


@router.get("/v1/books/reconciliations", response_model=list[LoggedPublic])
def reconciliations(
    books: BooksDep,
    viewer: Reader,
    page: PageQuery,
) -> list[dict[str, Any]]:
    """One page of the reports logged, oldest first, paged as `GET /v1/members`."""
    return page.answer(books.logged_page, "reconciliation.reported")


@router.post("/v1/books/prices", status_code=201, response_model=PriceImportPublic)
def import_prices(books: BooksDep, body: EnvelopeIn = strict(EnvelopeIn)) -> dict[str, Any]:
    """(Manager or custodian) Import a price file: `prices.import` {prices: [{asset, price,
    currency, time, source, method}]}."""
    return books.import_prices(body.envelope)


@router.get("/v1/books/prices", response_model=list[PricePublic])
def prices(books: BooksDep, viewer: Reader, page: PageQuery) -> list[dict[str, Any]]:
    """The imported prices, in the order imported; paged as `GET /v1/members`."""
    return page.answer(books.prices_page)


@router.post("/v1/books/statements", response_model=StatementsPublic)
def statements(books: BooksDep, body: StatementIssueIn = strict(StatementIssueIn)) -> dict[str, Any]:
    """(Manager or custodian) Statements of position for a period (`2026-Q3`, `2026-07`),
    one client or all: JSON, CSV and the PDF (hex); the hashes are logged."""
    return books.statements(body.envelope, custodian=body.custodian or "Custodian")


@router.get("/v1/books/statements", response_model=list[LoggedPublic])
def issued(
    books: BooksDep,
    viewer: Reader,
    page: PageQuery,
) -> list[dict[str, Any]]:
    """One page of the statements issued, oldest first, paged as `GET /v1/members`."""
    return page.answer(books.logged_page, "statement.issued")


document_request_bodies(router)
