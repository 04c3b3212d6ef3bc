"""The withdrawal state machine: statuses, the transition table, expiry as read."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from tandem.errors import (
    AlreadyReleasedError,
    ExpiredError,
    InvalidStateError,
)


class WithdrawalStatus(StrEnum):
    """What a withdrawal request is. The module names below (``PENDING``...) are these."""

    PENDING = "pending"
    APPROVED = "approved"
    RELEASED = "released"
    BROADCAST = "broadcast"
    CONFIRMED = "confirmed"
    ABANDONED = "abandoned"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    VETOED = "vetoed"
    EXPIRED = "expired"
    TAMPERED = "tampered"
    # Read-only: a release whose end nobody recorded within its lifetime needs attention.
    LAPSED = "lapsed"


PENDING = WithdrawalStatus.PENDING
APPROVED = WithdrawalStatus.APPROVED
RELEASED = WithdrawalStatus.RELEASED
BROADCAST = WithdrawalStatus.BROADCAST
CONFIRMED = WithdrawalStatus.CONFIRMED
ABANDONED = WithdrawalStatus.ABANDONED
REJECTED = WithdrawalStatus.REJECTED
CANCELLED = WithdrawalStatus.CANCELLED
VETOED = WithdrawalStatus.VETOED
EXPIRED = WithdrawalStatus.EXPIRED
TAMPERED = WithdrawalStatus.TAMPERED
LAPSED = WithdrawalStatus.LAPSED
OPEN = frozenset({PENDING, APPROVED})
# A signed transaction exists; it counts against velocity from its release on.
SIGNED = frozenset({RELEASED, BROADCAST, CONFIRMED, ABANDONED})
# Statuses that hold nothing on chain any more: their Ethereum nonce is free again.
# (Abandoned is the operator's statement that the signed transaction will not be used.)
ENDED_UNSPENT = frozenset({REJECTED, CANCELLED, VETOED, TAMPERED, ABANDONED})

_TRANSITIONS: Mapping[str, Mapping[str, str]] = {
    "approve": {PENDING: PENDING, APPROVED: APPROVED},
    "quorum": {PENDING: APPROVED, APPROVED: APPROVED},
    # At release a wallet limit asked for more approvals: the request waits again.
    "escalate": {APPROVED: PENDING},
    "release": {APPROVED: RELEASED},
    "reject": {PENDING: REJECTED, APPROVED: REJECTED},
    "cancel": {PENDING: CANCELLED, APPROVED: CANCELLED},
    "veto": {PENDING: VETOED, APPROVED: VETOED},
    "tamper": {PENDING: TAMPERED, APPROVED: TAMPERED},
    # After release: what the operator records about the signed transaction.
    "broadcast": {RELEASED: BROADCAST},
    "confirm": {RELEASED: CONFIRMED, BROADCAST: CONFIRMED},
    "abandon": {RELEASED: ABANDONED, BROADCAST: ABANDONED},
    # The node no longer knows a broadcast transaction: it is signed but not sent, and
    # may be sent again (the same bytes, so the same txid).
    "drop": {BROADCAST: RELEASED},
}
# Events about a signed transaction: the request's expiry no longer applies to them.
_AFTER_RELEASE = frozenset({"broadcast", "confirm", "abandon", "drop"})


def effective_status(status: str, expires_at: int, now: int, *, release_expires_at: int | None = None) -> str:
    """Open requests past their expiry read as expired, and a release nobody recorded
    as broadcast, confirmed or abandoned within its lifetime reads as lapsed (nothing
    stores either)."""
    if status in OPEN and now >= expires_at:
        return EXPIRED
    if status == RELEASED and release_expires_at is not None and now >= release_expires_at:
        return LAPSED
    return status


def holds_nonce(status: str, expires_at: int, now: int) -> bool:
    """Whether a withdrawal in ``status`` still claims its (chain, network, from, nonce)."""
    return status not in ENDED_UNSPENT and effective_status(status, expires_at, now) != EXPIRED


def transition(status: str, event: str, *, expires_at: int, now: int) -> str:
    """The next status, or the refusal that says why ``event`` cannot happen now."""
    if event not in _TRANSITIONS:
        raise ValueError(f"unknown withdrawal event {event!r}")
    if status in SIGNED and event in ("release", "approve", "quorum"):
        raise AlreadyReleasedError(f"this withdrawal was already released (it is {status})")
    nxt = _TRANSITIONS[event].get(status)
    if nxt is None:
        raise InvalidStateError(f"withdrawal is {status}; cannot {event} it")
    if event != "tamper" and event not in _AFTER_RELEASE and now >= expires_at:
        raise ExpiredError(f"withdrawal request expired at {expires_at}", details={"expires_at": expires_at})
    return nxt
