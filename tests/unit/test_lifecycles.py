"""Every lifecycle table refuses what it does not list, and expires the same way."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tandem.core.lifecycles import (
    CHALLENGES,
    KEYSETS,
    MEMBERS,
    PROPOSALS,
    ChallengeState,
    KeySetState,
    Lifecycle,
    MemberState,
    ProposalState,
)
from tandem.errors import ExpiredError, InvalidStateError

LIFECYCLES: list[Lifecycle[Any]] = [PROPOSALS, CHALLENGES, KEYSETS, MEMBERS]
SERVICES = Path(__file__).resolve().parents[2] / "src" / "tandem" / "services"


def _moves(lc: Lifecycle[Any]) -> list[tuple[str, str, Any]]:
    return [
        (event, state.value, lc.table[event].get(state)) for event in lc.table for state in lc.states
    ]


@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_only_listed_transitions_happen(lc: Lifecycle[Any]) -> None:
    for event, state, target in _moves(lc):
        if target is None:
            with pytest.raises(InvalidStateError, match=f"is {state}; cannot {event} it"):
                lc.transition(state, event, now=0)
            assert not lc.allows(state, event)
        else:
            assert lc.transition(state, event, now=0) is target
            assert lc.allows(state, event)


@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_unknown_events_and_states_are_refused(lc: Lifecycle[Any]) -> None:
    first = next(iter(lc.states)).value
    with pytest.raises(ValueError, match="unknown"):
        lc.transition(first, "teleport", now=0)
    with pytest.raises(InvalidStateError, match="unknown status"):
        lc.transition("limbo", next(iter(lc.table)), now=0)


@pytest.mark.parametrize(
    ("lc", "state", "expired"),
    [
        (PROPOSALS, ProposalState.PENDING, ProposalState.EXPIRED),
        (CHALLENGES, ChallengeState.OPEN, ChallengeState.EXPIRED),
    ],
    ids=["proposal", "challenge"],
)
def test_expiry_is_handled_the_same_way(lc: Lifecycle[Any], state: Any, expired: Any) -> None:
    events = [e for e in lc.table if state in lc.table[e]]
    assert events
    for event in events:
        lc.transition(state, event, expires_at=100, now=99)
        with pytest.raises(ExpiredError, match="expired at 100"):
            lc.transition(state, event, expires_at=100, now=100)
    assert lc.effective(state, expires_at=100, now=99) is state
    assert lc.effective(state, expires_at=100, now=100) is expired
    # An expired state is read, never stored: nothing leaves it.
    for event in lc.table:
        with pytest.raises(InvalidStateError):
            lc.transition(expired, event, now=0)


def test_an_approved_proposal_is_not_expired_by_its_request_expiry() -> None:
    # A change in its delay is past deciding; its veto window is the clock now.
    assert PROPOSALS.effective(ProposalState.APPROVED, expires_at=1, now=10) is ProposalState.APPROVED
    assert PROPOSALS.transition(ProposalState.APPROVED, "veto", expires_at=1, now=10) is ProposalState.VETOED


def test_key_sets_and_members_do_not_expire() -> None:
    assert KEYSETS.transition(KeySetState.ACTIVE, "sign", expires_at=1, now=10) is KeySetState.ACTIVE
    assert MEMBERS.transition(MemberState.ACTIVE, "rekey", expires_at=1, now=10) is MemberState.ACTIVE
    with pytest.raises(InvalidStateError):
        KEYSETS.transition(KeySetState.RETIRED, "reshare")
    with pytest.raises(InvalidStateError):
        MEMBERS.transition(MemberState.REMOVED, "rekey")


_BARE_STATUS = re.compile(r"""status\s*(==|!=|=)\s*["'][a-z_]+["']""")


def test_services_spell_no_status() -> None:
    """Statuses come from the lifecycle enums (or the withdrawal machine), never literals."""
    hits = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(SERVICES.glob("*.py"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _BARE_STATUS.search(line)
    ]
    assert hits == []
