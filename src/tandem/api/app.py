"""FastAPI application factory. Routes translate HTTP to service calls and back."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from tandem import __version__
from tandem.api import (
    routes_audit,
    routes_books,
    routes_ceremony,
    routes_core,
    routes_members,
    routes_proof,
    routes_public,
    routes_withdrawal,
)
from tandem.api.docs_ui import install_docs
from tandem.api.handlers import BodyCap, install_error_path
from tandem.api.routes_audit import NDJSONResponse, _ndjson_pages
from tandem.chainio import ChainConfig
from tandem.services import Tandem
from tandem.settings import Settings

# Names served from here before the routes had modules of their own.
__all__ = [
    "ERROR_RESPONSES",
    "ROUTERS",
    "BodyCap",
    "NDJSONResponse",
    "_ndjson_pages",
    "build_service",
    "create_app",
]

log = logging.getLogger("tandem.api")

# Every error answer has the same body; reference one schema rather than building a
# response model per route and status (that dominated app start-up time).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": "Refused: a stable `code` and a message",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
    for status in (400, 401, 403, 404, 409, 410, 413, 422, 429, 503)
}

# In serving order. The session-less self-verifying files (ADR 0012) come last.
ROUTERS: tuple[APIRouter, ...] = (
    routes_core.router,
    routes_members.router,
    routes_audit.router,
    routes_ceremony.router,
    routes_withdrawal.router,
    routes_proof.router,
    routes_books.router,
    routes_public.router,
)


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
    service = Tandem(
        db, key, clock=clock or (lambda: int(time.time())), chains=ChainConfig.from_env(os.environ)
    )
    from tandem.services.claim import ClaimGate

    service.members.use_claim(ClaimGate.load(settings.resolved_claim_file()))
    service.audit.startup_check()
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


def create_app(settings: Settings | None = None, *, service: Tandem | None = None) -> FastAPI:
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
        # Served locally (tandem.api.docs_ui): the default pages load from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app, title="Tandem")
    app.state.service = svc
    app.state.server_lock = lock
    app.state.max_body_bytes = settings.max_body_bytes
    app.state.books = svc.books
    install_error_path(app, max_body_bytes=settings.max_body_bytes)
    for router in ROUTERS:
        app.include_router(router)
    return app
