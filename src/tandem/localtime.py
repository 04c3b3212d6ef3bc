"""Times as a person reads them: ISO-8601 in the reader's local zone, with its offset.

Raw Unix seconds stay in every JSON field that a program reads; these helpers only add
the readable form beside them. No clock is read here: the instant is always an argument.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tandem.core.membership import veto_roles


def local_iso(ts: int) -> str:
    """``ts`` (Unix seconds) in this machine's local zone, e.g. ``2026-12-03T11:02:07+01:00``."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def pending_change(kind: str, status: str, effective_at: int | None, now: int) -> dict[str, Any] | None:
    """What a delayed change still waiting for its time says to a reader: when it takes
    effect (local time) and which roles may veto it until then. None once in force."""
    if status != "approved" or effective_at is None or effective_at <= now:
        return None
    roles = sorted(r.value for r in veto_roles(kind))
    return {
        "effective_at": effective_at,
        "effective_at_local": local_iso(effective_at),
        "seconds_left": effective_at - now,
        "veto_by": roles,
        "veto_command": ("tandem proposal veto" if kind.startswith("member.") else "tandem policy veto"),
    }


def pending_change_line(notice: dict[str, Any], proposal_id: str = "<proposal id>") -> str:
    """One line for a terminal, in the reader's own local time (not the server's)."""
    when = local_iso(int(notice["effective_at"]))
    who = " or ".join(f"any {r}" for r in notice["veto_by"])
    return (
        f"takes effect at {when} (in {_span(int(notice['seconds_left']))}); until then {who} "
        f"can veto it with `{notice['veto_command']} {proposal_id}`"
    )


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
