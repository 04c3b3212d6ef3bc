"""What routes depend on: the service, the member behind a request's session token, the
strict body parser and the list page (:data:`PageQuery`).

Every route module holds a module-level ``APIRouter`` of plain functions that take
these as dependencies; none of them reaches the application object except through
``request.app.state`` (``service``, ``max_body_bytes``, ``books``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError

from tandem.core.canonical import loads_strict
from tandem.errors import InputError, PayloadTooLargeError, UnknownFieldError
from tandem.services import Tandem
from tandem.settings import Settings
from tandem.store import pages
from tandem.store.models import Member

M = TypeVar("M", bound=BaseModel)
DEFAULT_MAX_BODY_BYTES = Settings.model_fields["max_body_bytes"].default


def service(request: Request) -> Tandem:
    """The service the application was built with (``app.state.service``)."""
    svc: Tandem = request.app.state.service
    return svc


ServiceDep = Annotated[Tandem, Depends(service)]


def current_member(request: Request, authorization: Annotated[str | None, Header()] = None) -> Member:
    """The member behind the ``Authorization: Bearer`` session token."""
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    return service(request).runner.session_member(token)


Reader = Annotated[Member, Depends(current_member)]


@dataclass(frozen=True)
class Paging:
    """The page a list route was asked for (``limit`` rows after ``cursor``; without a
    limit, the list's default), and the response its next cursor goes out on."""

    limit: int | None
    cursor: str | None
    response: Response

    def answer(self, read: Callable[..., dict[str, Any]], *args: Any, **filters: Any) -> list[dict[str, Any]]:
        """A list route's answer: the items of the page ``read`` returns for this limit
        and cursor (``{items, next_cursor}``), the cursor of the next page (when there is
        one) in the ``Tandem-Next-Cursor`` header."""
        page = read(*args, limit=self.limit, cursor=self.cursor, **filters)
        if page["next_cursor"] is not None:
            self.response.headers[pages.NEXT_CURSOR_HEADER] = page["next_cursor"]
        items: list[dict[str, Any]] = page["items"]
        return items


def page_query(
    response: Response,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=pages.MAX_LIMIT,
            description=f"At most this many items (1 to {pages.MAX_LIMIT}; {pages.DEFAULT_LIMIT} without it)",
        ),
    ] = None,
    cursor: Annotated[
        str | None,
        Query(
            description=f"The `{pages.NEXT_CURSOR_HEADER}` header of the previous page; none for the first"
        ),
    ] = None,
) -> Paging:
    # The cursor is opaque to the client; the list that reads it checks it strictly.
    return Paging(limit, cursor, response)


# Every list route's page: ``limit`` and ``cursor`` query parameters (a bad one is
# ``invalid_input``), the next page's cursor in the ``Tandem-Next-Cursor`` header.
PageQuery = Annotated[Paging, Depends(page_query)]


# --- the strict body ---------------------------------------------------------------------

# parse dependency -> the model it parses into (read by ``document_request_bodies``)
BODY_MODELS: dict[Callable[..., Any], type[BaseModel]] = {}


def max_body_bytes(request: Request) -> int:
    limit: int = getattr(request.app.state, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    return limit


async def body_bytes(request: Request) -> bytes:
    # BodyCap has already refused anything longer while it arrived; this stays as a
    # second line should the app ever be mounted without it.
    limit = max_body_bytes(request)
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    return body


def parse_strict(model: type[M], raw: bytes, *, max_bytes: int) -> M:
    """Strict JSON (``loads_strict``: no duplicate keys, NUL, NaN or deep nesting), then
    the model's check; an unknown field is ``unknown_field``, anything else ``invalid_input``."""
    doc = loads_strict(raw, max_bytes=max_bytes, forbid_nul=True)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        if "extra_forbidden" in kinds:
            raise UnknownFieldError(f"unknown field(s): {fields}") from None
        raise InputError(f"invalid request body: {fields}") from None


def strict(model: type[M]) -> Any:
    """A dependency (use it as the parameter's default) that parses the request body
    strictly into ``model``. FastAPI never sees the body, so the model is published in
    the OpenAPI document by :func:`document_request_bodies`."""

    async def parse(request: Request) -> M:
        return parse_strict(model, await body_bytes(request), max_bytes=max_body_bytes(request))

    BODY_MODELS[parse] = model
    return Depends(parse)


def document_request_bodies(router: APIRouter) -> APIRouter:
    """Publish each route's strict body schema in the OpenAPI document (call once a
    router's routes are declared)."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for dep in route.dependant.dependencies:
            model = BODY_MODELS.get(dep.call) if dep.call is not None else None
            if model is None:
                continue
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            route.openapi_extra = {
                **(route.openapi_extra or {}),
                "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            }
    return router


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route the application serves, those of included routers too (an
    included router's routes are not themselves in ``app.routes``), in serving order."""
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            out.append(route)
    return out
