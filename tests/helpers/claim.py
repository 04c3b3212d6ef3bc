"""The claim token of each test service, as `tandem init` prints it to the operator.

Kept in its own module: pytest loads the root conftest both as ``conftest`` and as
``tests.conftest``, and a registry there would exist twice."""

from __future__ import annotations

import weakref

from tandem.services import Tandem

_CLAIM_TOKENS: weakref.WeakKeyDictionary[Tandem, str] = weakref.WeakKeyDictionary()


def claim_token_of(service: Tandem) -> str:
    """The one-time claim token of ``service``; issued now if it has none yet (what an
    operator's `tandem init` does before genesis)."""
    token = _CLAIM_TOKENS.get(service)
    if token is None:
        token = _CLAIM_TOKENS[service] = service.members.issue_claim_token()
    return token
