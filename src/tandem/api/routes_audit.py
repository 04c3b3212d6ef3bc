"""Audit-log routes behind a session: the export (JSON Lines, streamed), the signed
checkpoint and RFC 6962 proofs. The session-less proofs are in routes_public."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, StreamingResponse

from tandem.api import schemas
from tandem.api.deps import Reader, ServiceDep
from tandem.api.public_models import CheckpointPublic, ConsistencyPublic, InclusionPublic

router = APIRouter(tags=["audit"])


class NDJSONResponse(PlainTextResponse):
    media_type = "application/x-ndjson"


def _ndjson_pages(lines: Iterable[str], per_chunk: int = 1000) -> Iterator[bytes]:
    """Lines joined into chunks of a few hundred kilobytes, each line newline-terminated:
    the same bytes as the whole export joined at once."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == per_chunk:
            yield ("\n".join(chunk) + "\n").encode("utf-8")
            chunk = []
    if chunk:
        yield ("\n".join(chunk) + "\n").encode("utf-8")


@router.get(
    "/v1/audit/export",
    response_class=NDJSONResponse,
    responses={
        200: {"description": "JSON Lines, one audit entry a line", "content": {"application/x-ndjson": {}}},
        **{s: {"model": schemas.ErrorBody, "content": {"application/json": {}}} for s in (401, 404)},
    },
)
def audit_export(svc: ServiceDep, viewer: Reader) -> StreamingResponse:
    """JSON Lines of every entry; the header X-Tandem-Tree-Size says how many. Streamed
    page by page from the database, so its memory does not grow with the log."""
    size, lines = svc.audit.export_stream()
    return StreamingResponse(
        _ndjson_pages(lines),
        media_type="application/x-ndjson",
        headers={"X-Tandem-Tree-Size": str(size)},
    )


@router.get("/v1/audit/checkpoint", response_model=CheckpointPublic)
def audit_checkpoint(
    svc: ServiceDep, viewer: Reader, tree_size: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    return svc.audit.checkpoint(tree_size)


@router.get("/v1/audit/inclusion/{index}", response_model=InclusionPublic)
def audit_inclusion(
    index: int, svc: ServiceDep, viewer: Reader, tree_size: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    """RFC 6962 inclusion proof of one entry in the tree of a signed checkpoint."""
    return svc.audit.inclusion(index, tree_size)


@router.get("/v1/audit/consistency", response_model=ConsistencyPublic)
def audit_consistency(
    svc: ServiceDep, viewer: Reader, old: Annotated[int, Query(ge=1)], new: Annotated[int, Query(ge=1)]
) -> dict[str, Any]:
    """RFC 6962 consistency proof between two signed checkpoints."""
    return svc.audit.consistency(old, new)
