"""The member's side: signs actions locally, computes digests itself, talks HTTP.

Nothing secret leaves this package except as a signature or a sealed box. The approving
client recomputes every digest from the content it is shown rather than trusting a
digest the server sends, so a server cannot get a signature over something other than
what the member saw.

One calling style: :class:`Client` is the transport and the pin
(:class:`~tandem.client.transport.Transport`), and each flow is an object reached from
it, as the server's services are: ``client.withdrawals.create(member, intent)``,
``client.ceremonies.approve(...)``, ``client.members.propose_add(...)``. Helpers that do
not talk to the server (``review(view)``, ``local_digest(view)``, ``draft_genesis(...)``)
are functions of the flow's module.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tandem.client.books import Books
from tandem.client.ceremony import Ceremonies, Keysets
from tandem.client.log import Audit
from tandem.client.members import Members
from tandem.client.pin import PinnedDeployment
from tandem.client.policy import Policy
from tandem.client.proof import Proofs
from tandem.client.public_files import PublicFiles
from tandem.client.transport import (
    CLAIM_HEADER,
    DEFAULT_SERVER,
    Transport,
    check_server_url,
    shown_url,
    transport_error,
)
from tandem.client.withdrawal import Withdrawals

__all__ = [
    "CLAIM_HEADER",
    "DEFAULT_SERVER",
    "Client",
    "Transport",
    "check_server_url",
    "shown_url",
    "transport_error",
]


class Client(Transport):
    """A member's client of one server: the transport and pin, and every flow on them."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], int] = lambda: int(time.time()),
        pin: PinnedDeployment | None = None,
    ) -> None:
        super().__init__(server, http=http, clock=clock, pin=pin)
        self.members = Members(self)
        self.withdrawals = Withdrawals(self)
        self.policy = Policy(self)
        self.keysets = Keysets(self)
        self.ceremonies = Ceremonies(self, self.keysets)
        self.proofs = Proofs(self)
        self.books = Books(self)
        self.audit = Audit(self)
        self.public_files = PublicFiles(self)
