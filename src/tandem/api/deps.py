"""What routes depend on: the member behind a request's session token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response

from tandem.services import Tandem
from tandem.store import pages
from tandem.store.models import Member


def current_member(request: Request, authorization: Annotated[str | None, Header()] = None) -> Member:
    """The member behind the ``Authorization: Bearer`` session token."""
    token = None
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    service: Tandem = request.app.state.service
    return service.session_member(token)


Reader = Annotated[Member, Depends(current_member)]


def paged(response: Response, page: dict[str, Any]) -> list[dict[str, Any]]:
    """A list route's answer: the page's items, and the cursor of the next page (when
    there is one) in the ``Tandem-Next-Cursor`` header."""
    if page["next_cursor"] is not None:
        response.headers[pages.NEXT_CURSOR_HEADER] = page["next_cursor"]
    items: list[dict[str, Any]] = page["items"]
    return items
