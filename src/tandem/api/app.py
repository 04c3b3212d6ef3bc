"""FastAPI application factory. Routes translate HTTP to service calls and back."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, TypeVar
from urllib.parse import unquote

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem import __version__
from tandem.api import schemas
from tandem.api.deps import Reader, paged
from tandem.api.routes_public import router as public_router
from tandem.core.canonical import loads_strict
from tandem.errors import Error, InputError, PayloadTooLargeError, UnknownFieldError
from tandem.services import Tandem
from tandem.settings import Settings

log = logging.getLogger("tandem.api")
M = TypeVar("M", bound=BaseModel)

# Every error answer has the same body; reference one schema rather than building a
# response model per route and status (that dominated app start-up time).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": "Refused: a stable `code` and a message",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status in (400, 401, 403, 404, 409, 410, 413, 422, 429, 503)
}


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


class BodyCap:
    """Pure ASGI middleware: counts request body bytes as they arrive and refuses the
    request as soon as they pass ``max_bytes``, before any more is read or buffered.

    The count is of bytes received, chunked uploads included; a ``Content-Length`` is
    believed only when it announces too much (then nothing is read at all), never when
    it announces little. The refusal is a :class:`PayloadTooLargeError` raised from
    ``receive`` inside the route that reads the body, so it takes the one error path:
    audited, answered with the stable JSON shape, and the connection closed.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _declared_length(scope)
        received = 0

        async def capped_receive() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise PayloadTooLargeError(f"request body exceeds {limit} bytes (by its Content-Length)")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
            return message

        await self.app(scope, capped_receive, send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None




def build_service(settings: Settings, clock: Callable[[], int] | None = None) -> Tandem:
    from tandem.core.service_key import ServiceKey
    from tandem.store.db import Database

    key_file = settings.resolved_key_file()
    if not key_file.exists():
        from tandem.errors import ConfigurationError

        raise ConfigurationError(f"no service key at {key_file}: run `tandem init` first")
    key = ServiceKey.from_file_bytes(key_file.read_bytes())
    db = Database(settings.resolved_database_url())
    db.migrate()
    service = Tandem(db, key, clock=clock or (lambda: int(time.time())))
    from tandem.services.claim import ClaimGate

    service.use_claim(ClaimGate.load(settings.resolved_claim_file()))
    service.startup_check()
    return service


def server_logging() -> None:
    """Start-up messages (a sealing check's ERROR line above all) reach the server's
    stderr before the HTTP server configures its own loggers."""
    logger = logging.getLogger("tandem")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def create_app(settings: Settings | None = None, *, service: Tandem | None = None) -> FastAPI:  # noqa: C901, PLR0915 - routes still closures; they become routers
    settings = settings or Settings()
    lock = None
    if service is None:
        # A server built from settings owns its state: one per data directory (and per
        # PostgreSQL schema), taken before the schema is touched and held until exit.
        from tandem.server_lock import ServerLock

        server_logging()
        lock = ServerLock(settings.data_dir, settings.resolved_database_url()).acquire()
    try:
        svc = service or build_service(settings)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    app = FastAPI(
        title="Tandem",
        version=__version__,
        description=(
            "Dual-control key ceremonies and signing for crypto-asset custody. Every state change "
            "is a signed action envelope; reads need a session opened by a signed action."
        ),
        responses=ERROR_RESPONSES,
        # Served locally below (tandem.api.docs_ui): the default pages load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    from tandem.api.docs_ui import install_docs

    install_docs(app, title="Tandem")
    app.state.service = svc
    app.state.server_lock = lock

    app.add_middleware(BodyCap, max_bytes=settings.max_body_bytes)

    async def _body_bytes(request: Request) -> bytes:
        # BodyCap has already refused anything longer while it arrived; this stays as
        # a second line should the app ever be mounted without it.
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLargeError(f"request body exceeds {settings.max_body_bytes} bytes")
        return body

    body_models: dict[Any, type[BaseModel]] = {}

    def strict(model: type[M]) -> Any:
        async def parse(request: Request) -> M:
            doc = loads_strict(await _body_bytes(request), max_bytes=settings.max_body_bytes, forbid_nul=True)
            try:
                return model.model_validate(doc)
            except ValidationError as exc:
                kinds = {e["type"] for e in exc.errors()}
                fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
                if "extra_forbidden" in kinds:
                    raise UnknownFieldError(f"unknown field(s): {fields}") from None
                raise InputError(f"invalid request body: {fields}") from None

        body_models[parse] = model
        return Depends(parse)

    reader = Reader

    @app.exception_handler(Error)
    async def on_error(request: Request, exc: Error) -> JSONResponse:
        return refuse(request, exc)

    def refuse(request: Request, exc: Error) -> JSONResponse:
        """Every refusal answered over HTTP is audited (reads included); one a use case
        already recorded, with its signed envelope, is not recorded twice."""
        svc.record_refusal(
            "http.request",
            exc,
            envelope=None,
            actor=None,
            now=svc.clock(),
            data={"method": request.method, "path": request.url.path[:200]},
        )
        # The rest of an oversized body is not read: close the connection rather than
        # drain it for the next request.
        headers = {"Connection": "close"} if isinstance(exc, PayloadTooLargeError) else None
        return JSONResponse(status_code=exc.status, content=exc.to_dict(), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
        return refuse(request, InputError(f"invalid request parameters: {fields}"))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return JSONResponse(status_code=500, content={"code": "internal_error", "message": "internal error"})

    # --- public ----------------------------------------------------------------------

    @app.get(
        "/v1/health",
        response_model=schemas.Health,
        tags=["service"],
        responses={503: {"model": schemas.Health, "description": "Sealed: signing refused"}},
    )
    def health() -> Any:
        """Liveness and seal state (followed by the container HEALTHCHECK): 200 when the
        service may sign, 503 with the sealing check's stable `code` when it is sealed."""
        if svc.sealed_reason is None:
            return JSONResponse({"status": "ok", "sealed": False, "reason": None})
        body = schemas.Health(
            status="sealed", sealed=True, reason=svc.sealed_reason, code=svc.sealed_code or "sealed"
        )
        return JSONResponse(status_code=503, content=body.model_dump())

    @app.get("/v1/deployment", tags=["service"])
    def deployment() -> dict[str, Any]:
        """Public facts: deployment id, entity, genesis hash (root of trust), service keys."""
        return svc.deployment_info()

    @app.post("/v1/genesis", status_code=201, tags=["membership"])
    def genesis(
        body: schemas.GenesisIn = strict(schemas.GenesisIn),
        claim_token: Annotated[str | None, Header(alias="X-Tandem-Claim-Token")] = None,
    ) -> dict[str, Any]:
        """Create the deployment. Every initial member signs the genesis document; the
        header carries the one-time claim token `tandem init` printed."""
        return svc.genesis(body.genesis, body.signatures, claim_token=claim_token)

    @app.post("/v1/sessions", status_code=201, tags=["membership"])
    def open_session(body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)) -> dict[str, Any]:
        """Open a 15-minute read session with a signed `session.open` action."""
        return svc.open_session(body.envelope)

    @app.post("/v1/totp/enrol", tags=["membership"])
    def enrol_totp(body: schemas.TotpEnrolIn = strict(schemas.TotpEnrolIn)) -> dict[str, Any]:
        """Register the member's TOTP seed, sealed on its own machine to the service key."""
        return svc.enrol_totp(body.envelope, confirm_code=body.confirm_code, totp=body.totp)

    # --- membership --------------------------------------------------------------------

    @app.get("/v1/members", tags=["membership"])
    def members(
        viewer: Reader, response: Response, limit: int | None = None, cursor: str | None = None
    ) -> list[dict[str, Any]]:
        """One page (``limit``, default 100, at most 500) in the order members were added;
        the ``Tandem-Next-Cursor`` header, when present, is the ``cursor`` of the next page."""
        return paged(response, svc.list_members(limit=limit, cursor=cursor))

    @app.post("/v1/members/proposals", status_code=201, tags=["membership"])
    def propose_member(body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)) -> dict[str, Any]:
        """Propose adding, removing or rekeying a member; the other side must approve."""
        return svc.propose_member_change(body.envelope)

    @app.get("/v1/proposals", tags=["membership"])
    def proposals(
        viewer: Reader,
        response: Response,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> list[dict[str, Any]]:
        """One page, oldest first, paged as `GET /v1/members`."""
        return paged(response, svc.list_proposals(status=status, limit=limit, cursor=cursor))

    @app.get("/v1/proposals/{proposal_id}", tags=["membership"])
    def proposal(proposal_id: str, viewer: Reader) -> dict[str, Any]:
        return svc.get_proposal(proposal_id)

    @app.post("/v1/proposals/{proposal_id}/approve", tags=["membership"])
    def approve(proposal_id: str, body: schemas.ApprovalIn = strict(schemas.ApprovalIn)) -> dict[str, Any]:
        """Approve with a signed `proposal.approve` over the proposal digest, plus TOTP."""
        schemas.same_subject(body.envelope, "proposal", proposal_id)
        return svc.decide_proposal(body.envelope, totp=body.totp, approve=True)

    @app.post("/v1/proposals/{proposal_id}/reject", tags=["membership"])
    def reject(proposal_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)) -> dict[str, Any]:
        schemas.same_subject(body.envelope, "proposal", proposal_id)
        return svc.decide_proposal(body.envelope, totp=None, approve=False)

    @app.post("/v1/proposals/{proposal_id}/veto", tags=["membership"])
    def veto_member(
        proposal_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
    ) -> dict[str, Any]:
        """Either side stops an approved membership change during its delay (`proposal.veto`)."""
        schemas.same_subject(body.envelope, "proposal", proposal_id)
        return svc.veto_member_proposal(body.envelope)

    @app.post("/v1/proposals/{proposal_id}/apply", tags=["membership"])
    def apply_member(
        proposal_id: str, body: schemas.EnvelopeIn = strict(schemas.EnvelopeIn)
    ) -> dict[str, Any]:
        """Carry out an approved membership change once its delay has passed (`proposal.apply`)."""
        schemas.same_subject(body.envelope, "proposal", proposal_id)
        return svc.apply_proposal(body.envelope)

    # --- audit -------------------------------------------------------------------------

    @app.get(
        "/v1/audit/export",
        response_class=NDJSONResponse,
        tags=["audit"],
        responses={s: {"model": schemas.ErrorBody, "content": {"application/json": {}}} for s in (401, 404)},
    )
    def audit_export(viewer: Reader) -> StreamingResponse:
        """JSON Lines of every entry; the header X-Tandem-Tree-Size says how many. Streamed
        page by page from the database, so its memory does not grow with the log."""
        size, lines = svc.export_stream()
        return StreamingResponse(
            _ndjson_pages(lines),
            media_type="application/x-ndjson",
            headers={"X-Tandem-Tree-Size": str(size)},
        )

    @app.get("/v1/audit/checkpoint", tags=["audit"])
    def audit_checkpoint(
        viewer: Reader, tree_size: Annotated[int | None, Query(ge=1)] = None
    ) -> dict[str, Any]:
        return svc.checkpoint(tree_size)

    @app.get("/v1/audit/inclusion/{index}", tags=["audit"])
    def audit_inclusion(
        index: int, viewer: Reader, tree_size: Annotated[int | None, Query(ge=1)] = None
    ) -> dict[str, Any]:
        """RFC 6962 inclusion proof of one entry in the tree of a signed checkpoint."""
        return svc.inclusion(index, tree_size)

    @app.get("/v1/audit/consistency", tags=["audit"])
    def audit_consistency(
        viewer: Reader, old: Annotated[int, Query(ge=1)], new: Annotated[int, Query(ge=1)]
    ) -> dict[str, Any]:
        """RFC 6962 consistency proof between two signed checkpoints."""
        return svc.consistency(old, new)

    from tandem.api.routes_custody import register_custody_routes

    register_custody_routes(app, svc, strict=strict, reader=reader)
    app.include_router(public_router)  # session-less self-verifying files (ADR 0012)
    _document_request_bodies(app, body_models)

    @app.middleware("http")
    async def refuse_nul_in_url(request: Request, call_next: Any) -> Any:
        # Paths and query strings reach database lookups; NUL is never meaningful there.
        if "\x00" in unquote(request.url.path) or "\x00" in unquote(request.url.query):
            return refuse(request, InputError("URL must not contain NUL"))
        return await call_next(request)

    return app


def _document_request_bodies(app: FastAPI, body_models: dict[Any, type[BaseModel]]) -> None:
    """Bodies are parsed strictly from raw bytes, so FastAPI cannot see them: publish
    each route's body schema in the OpenAPI document ourselves."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        for dep in route.dependant.dependencies:
            model = body_models.get(dep.call)
            if model is None:
                continue
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            route.openapi_extra = {
                **(route.openapi_extra or {}),
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            }
