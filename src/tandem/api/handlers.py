"""The one error path: every refusal answered over HTTP is audited and answered with
the stable JSON shape; a request body is capped while it arrives; NUL in a URL is refused."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.api.deps import service
from tandem.errors import Error, InputError, PayloadTooLargeError

log = logging.getLogger("tandem.api")


def refuse(request: Request, exc: Error) -> JSONResponse:
    """Every refusal answered over HTTP is audited (reads included); one a use case
    already recorded, with its signed envelope, is not recorded twice."""
    svc = service(request)
    svc.runner.record_refusal(
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


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Error)  # noqa: S101 - registered for Error only
    return refuse(request, exc)


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it only
    fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
    return refuse(request, InputError(f"invalid request parameters: {fields}"))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return JSONResponse(status_code=500, content={"code": "internal_error", "message": "internal error"})


async def refuse_nul_in_url(request: Request, call_next: Any) -> Any:
    # Paths and query strings reach database lookups; NUL is never meaningful there.
    if "\x00" in unquote(request.url.path) or "\x00" in unquote(request.url.query):
        return refuse(request, InputError("URL must not contain NUL"))
    return await call_next(request)


def install_error_path(app: FastAPI, *, max_body_bytes: int) -> None:
    """The body cap, the NUL check and the exception handlers, on ``app``."""
    app.add_middleware(BodyCap, max_bytes=max_body_bytes)
    app.add_exception_handler(Error, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
    app.middleware("http")(refuse_nul_in_url)


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
