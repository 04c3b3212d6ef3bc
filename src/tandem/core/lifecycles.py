"""The state machines of proposals, proof challenges, key sets and members.

Each is a ``StrEnum`` of states and a table ``event -> {from state: to state}``, with
one :meth:`Lifecycle.transition` that names why an event is refused - the shape of the
withdrawal machine in :mod:`tandem.core.withdrawal`. Expiry is handled the same way in
every flow: an *expiring* state past its ``expires_at`` reads as ``expired`` (nothing
stores that) and refuses every event except those exempt from expiry. Services never
spell a status; they ask these tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from tandem.errors import ExpiredError, InvalidStateError

S = TypeVar("S", bound=StrEnum)


class Lifecycle(Generic[S]):
    """One flow's states, its transition table and how it expires."""

    def __init__(
        self,
        name: str,
        states: type[S],
        table: Mapping[str, Mapping[S, S]],
        *,
        expiring: frozenset[S] = frozenset(),
        expired: S | None = None,
        exempt: frozenset[str] = frozenset(),
    ) -> None:
        if expiring and expired is None:
            raise ValueError("a lifecycle with expiring states names the state they expire into")
        unknown = exempt - set(table)
        if unknown:
            raise ValueError(f"exempt events not in the table: {sorted(unknown)}")
        self.name = name
        self.states = states
        self.table: Mapping[str, Mapping[S, S]] = MappingProxyType(
            {event: MappingProxyType(dict(moves)) for event, moves in table.items()}
        )
        self.expiring = expiring
        self.expired = expired
        self.exempt = exempt

    def state(self, status: str) -> S:
        try:
            return self.states(status)
        except ValueError:
            raise InvalidStateError(f"{self.name} has an unknown status {status!r}") from None

    def effective(self, status: str, *, expires_at: int | None, now: int) -> S:
        """The status as it reads now: an expiring state past its expiry is expired."""
        state = self.state(status)
        expired = expires_at is not None and now >= expires_at
        if self.expired is not None and state in self.expiring and expired:
            return self.expired
        return state

    def allows(self, status: str, event: str) -> bool:
        return self.state(status) in self.table.get(event, {})

    def transition(self, status: str, event: str, *, expires_at: int | None = None, now: int = 0) -> S:
        """The next state, or the refusal that says why ``event`` cannot happen now."""
        if event not in self.table:
            raise ValueError(f"unknown {self.name} event {event!r}")
        state = self.state(status)
        nxt = self.table[event].get(state)
        if nxt is None:
            raise InvalidStateError(
                f"{self.name} is {state}; cannot {event} it",
                details={"status": state.value, "event": event},
            )
        if (
            event not in self.exempt
            and state in self.expiring
            and expires_at is not None
            and now >= expires_at
        ):
            raise ExpiredError(f"{self.name} expired at {expires_at}", details={"expires_at": expires_at})
        return nxt


# --- proposals (membership, policy, address book) ------------------------------------


class ProposalState(StrEnum):
    PENDING = "pending"
    # Quorum met; a membership change waits out its delay, a policy or address-book
    # change takes effect by itself at ``effective_at``.
    APPROVED = "approved"
    APPLIED = "applied"
    REJECTED = "rejected"
    VETOED = "vetoed"
    EXPIRED = "expired"  # read-only: pending past its expiry


P = ProposalState
PROPOSALS: Lifecycle[ProposalState] = Lifecycle(
    "proposal",
    ProposalState,
    {
        "approve": {P.PENDING: P.PENDING},
        "quorum": {P.PENDING: P.APPROVED},
        "reject": {P.PENDING: P.REJECTED},
        "apply": {P.APPROVED: P.APPLIED},
        "veto": {P.APPROVED: P.VETOED},
    },
    expiring=frozenset({P.PENDING}),
    expired=P.EXPIRED,
)


# --- proof challenges ------------------------------------------------------------------


class ChallengeState(StrEnum):
    OPEN = "open"
    SIGNED = "signed"
    EXPIRED = "expired"  # read-only: open past its expiry


CH = ChallengeState
CHALLENGES: Lifecycle[ChallengeState] = Lifecycle(
    "challenge",
    ChallengeState,
    {
        "contribute": {CH.OPEN: CH.OPEN},
        "renew": {CH.OPEN: CH.OPEN},
        "sign": {CH.OPEN: CH.SIGNED},
    },
    expiring=frozenset({CH.OPEN}),
    expired=CH.EXPIRED,
)


# --- key sets --------------------------------------------------------------------------


class KeySetState(StrEnum):
    ACTIVE = "active"
    # A share holder was removed or rekeyed: nothing signs until a reshare rotates the DEK.
    RESHARE_REQUIRED = "reshare_required"
    RETIRED = "retired"


K = KeySetState
KEYSETS: Lifecycle[KeySetState] = Lifecycle(
    "key set",
    KeySetState,
    {
        "require_reshare": {K.ACTIVE: K.RESHARE_REQUIRED, K.RESHARE_REQUIRED: K.RESHARE_REQUIRED},
        "reshare": {K.ACTIVE: K.ACTIVE, K.RESHARE_REQUIRED: K.ACTIVE},
        "sign": {K.ACTIVE: K.ACTIVE},
        "retire": {K.ACTIVE: K.RETIRED, K.RESHARE_REQUIRED: K.RETIRED},
    },
)


# --- members ---------------------------------------------------------------------------


class MemberState(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


MS = MemberState
MEMBERS: Lifecycle[MemberState] = Lifecycle(
    "member",
    MemberState,
    {
        "remove": {MS.ACTIVE: MS.REMOVED},
        "rekey": {MS.ACTIVE: MS.ACTIVE},
        "act": {MS.ACTIVE: MS.ACTIVE},
    },
)


# --- address-book entries (stored states; pending and removal are read from times) ----


class AddressBookState(StrEnum):
    ACTIVE = "active"
    VETOED = "vetoed"
    # Read-only views of an active entry, from its effective time and any removal.
    PENDING = "pending"
    REMOVED = "removed"
    REMOVAL_PENDING = "removal_pending"
