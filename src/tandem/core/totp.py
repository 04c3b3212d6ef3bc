"""RFC 6238 TOTP with replay protection, throttling and lock-out; the clock is an argument.

A code is accepted for time step ``t`` only if ``t`` lies within one step of now AND
``t`` is strictly later than the last step this member ever had accepted. The second
rule makes each code usable once and means a clock that goes backwards can never
reopen a code already used. The caller stores the returned state atomically
(compare-and-set on ``last_step``), so two concurrent uses of one code cannot both win.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace

import pyotp

from tandem.errors import TotpError, TotpLockedError, TotpReplayError, TotpThrottledError

STEP_SECONDS = 30
DIGITS = 6
WINDOW = 1
THROTTLE_AFTER = 3  # failures before each further attempt must wait
LOCK_AFTER = 10  # failures in a row that lock the member's second factor
LOCK_SECONDS = 15 * 60


@dataclass(frozen=True)
class TotpState:
    last_step: int | None = None
    failures: int = 0
    last_failure_at: int | None = None
    locked_until: int | None = None


def code_at(secret: str, step: int, *, digits: int = DIGITS) -> str:
    return str(pyotp.TOTP(secret, digits=digits, interval=STEP_SECONDS).generate_otp(step))


def current_code(secret: str, now: int) -> str:
    return code_at(secret, now // STEP_SECONDS)


def throttle_delay(failures: int) -> int:
    """Seconds a member must wait before the next attempt after ``failures`` misses."""
    if failures < THROTTLE_AFTER:
        return 0
    return int(min(2 ** (failures - THROTTLE_AFTER + 1), 60))


def check_totp(secret: str, code: str, *, now: int, state: TotpState) -> tuple[int, TotpState]:
    """Verify ``code``; return the accepted step and the new state, or raise.

    A refused attempt still has to be counted: callers store
    :func:`record_failure` of the old state when this raises.
    """
    if state.locked_until is not None and now < state.locked_until:
        raise TotpLockedError(
            f"second factor locked after {state.failures} failed attempts; "
            f"try again in {state.locked_until - now} s or ask an operator to unlock"
        )
    delay = throttle_delay(state.failures)
    if delay and state.last_failure_at is not None and now < state.last_failure_at + delay:
        raise TotpThrottledError(
            f"too many failed codes; wait {state.last_failure_at + delay - now} s before retrying"
        )
    if not isinstance(code, str) or len(code) != DIGITS or not code.isascii() or not code.isdigit():
        raise TotpError("TOTP code must be 6 digits")
    current = now // STEP_SECONDS
    matched: int | None = None
    # Check every candidate without early exit, so timing does not reveal which matched.
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(code_at(secret, step), code):
            matched = step if matched is None else max(matched, step)
    if matched is None:
        raise TotpError("TOTP code is wrong or outside the allowed clock skew (±30 s)")
    if state.last_step is not None and matched <= state.last_step:
        wait = max(1, (state.last_step + 1) * STEP_SECONDS - now)
        raise TotpReplayError(
            f"this TOTP code (or an earlier one) was already used; the next code comes in {wait} s",
            details={"retry_in_seconds": wait},
        )
    return matched, TotpState(last_step=matched, failures=0, last_failure_at=None, locked_until=None)


def record_failure(state: TotpState, *, now: int, error: TotpError) -> TotpState:
    """The state after a refused attempt. Lock/throttle refusals do not extend themselves."""
    if isinstance(error, TotpLockedError | TotpThrottledError):
        return state
    failures = state.failures + 1
    locked_until = now + LOCK_SECONDS if failures >= LOCK_AFTER else state.locked_until
    return replace(state, failures=failures, last_failure_at=now, locked_until=locked_until)
