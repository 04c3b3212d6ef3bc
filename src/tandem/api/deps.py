"""What routes depend on: the member behind a request's session token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from tandem.services import Tandem
from tandem.store.models import Member


def current_member(request: Request, authorization: Annotated[str | None, Header()] = None) -> Member:
    """The member behind the ``Authorization: Bearer`` session token."""
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    service: Tandem = request.app.state.service
    return service.session_member(token)


Reader = Annotated[Member, Depends(current_member)]
