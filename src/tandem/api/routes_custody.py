"""Routes for ceremonies, key sets, withdrawals, policy and proofs (one module each)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tandem.api import routes_books, routes_ceremony, routes_proof, routes_withdrawal
from tandem.services import Tandem


def register_custody_routes(app: FastAPI, svc: Tandem, *, strict: Any, reader: Any) -> None:
    routes_ceremony.register(app, svc, strict=strict)
    routes_withdrawal.register(app, svc, strict=strict)
    routes_proof.register(app, svc, strict=strict)
    routes_books.register(app, svc, strict=strict)
