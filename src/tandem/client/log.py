"""A member's own account of who the members are, from the log and its pinned genesis.

The server's ``/v1/members`` answer, its policy view and its address book are what the
server *says*. A member's client believes only the genesis it pinned (by hash) and
member signatures that chain back to it (ARCHITECTURE.md, "Trust model"). So before it
relies on the member list (the keys it would seal a share to, the approvers it would
count), it exports the log, verifies chain and checkpoint under the service key the
pinned genesis names, replays it with :class:`tandem.core.membership.LogState`, which
applies an effect only when member-signed proposals and approvals justify it, and
compares. A log written with the service key alone (THREATS 26), or a member list the
log does not justify, is refused here, naming the entry or the member.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tandem.client.transport import Transport
from tandem.core import audit
from tandem.core.canonical import loads_strict
from tandem.core.identity import MemberSecrets
from tandem.core.membership import LogState, MemberRecord, genesis_hash
from tandem.core.roles import Role
from tandem.errors import Error, VerificationError

__all__ = ["Audit", "check_member_list", "seal_recipients", "verify_log"]


def verify_log(lines: Sequence[str], checkpoint: Mapping[str, Any], *, genesis_hash_pin: str) -> LogState:
    """Verify an exported log from the pinned genesis and replay it; the derived state.

    The service key comes from the pinned genesis itself, never from the server's
    deployment answer, so a proxy with its own key cannot make its log verify.
    """
    if not lines:
        raise VerificationError("the log is empty; it must start with the pinned genesis")
    try:
        first = loads_strict(lines[0])
        doc = first["data"]["genesis"]
        named = bytes.fromhex(doc["service"]["sign_public"])
    except (Error, KeyError, TypeError, ValueError):
        raise VerificationError("the log does not start with a genesis entry") from None
    if genesis_hash(doc) != genesis_hash_pin:
        raise VerificationError(
            f"the log starts from genesis {genesis_hash(doc)}, not the pinned {genesis_hash_pin}"
        )
    state = LogState(genesis_hash_pin=genesis_hash_pin)
    audit.verify_export([line.encode() for line in lines], checkpoint, named, replay=state.observe_entry)
    return state


def check_member_list(state: LogState, rows: Iterable[Mapping[str, Any]]) -> None:
    """Refuse a server member list that differs from the one the log justifies: a member
    the log never added, a key the log never rekeyed to, a role or status changed."""
    seen: set[str] = set()
    for row in rows:
        member_id = row.get("id")
        rec = state.members.get(member_id) if isinstance(member_id, str) else None
        if rec is None:
            raise VerificationError(f"the server lists member {member_id!r}, whom the log never added")
        seen.add(rec.id)
        problems = []
        if row.get("role") != rec.role.value:
            problems.append(f"role {row.get('role')!r}, the log says {rec.role.value!r}")
        if row.get("sign_public") != rec.sign_public.hex() or row.get("seal_public") != rec.seal_public.hex():
            problems.append("keys the log never gave it")
        if (row.get("status") == "active") != rec.active:
            problems.append(
                f"status {row.get('status')!r}, the log says {'active' if rec.active else 'removed'}"
            )
        if problems:
            raise VerificationError(
                f"the server's record of {rec.name!r} ({rec.id}) has " + "; ".join(problems)
            )
    missing = sorted(m.id for m in state.members.values() if m.active and m.id not in seen)
    if missing:
        raise VerificationError(f"the server's member list leaves out {', '.join(missing)}")


def seal_recipients(state: LogState, role: Role) -> dict[str, bytes]:
    """Member id -> X25519 key for every active member of ``role``: the only keys a
    member's client would seal that side's share to."""
    return {m.id: m.seal_public for m in state.members.values() if m.active and m.role is role}


class Audit:
    """``client.audit``: the exported log, verified here from the pinned genesis."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def export(self, member: MemberSecrets) -> tuple[list[str], dict[str, Any]]:
        """The log's lines as served and a signed checkpoint of exactly that many."""
        text = self._client.get(member, "/v1/audit/export")
        lines = [line for line in str(text).split("\n") if line]
        checkpoint: dict[str, Any] = self._client.get(member, "/v1/audit/checkpoint", tree_size=len(lines))
        return lines, checkpoint

    def log_state(self, member: MemberSecrets, *, genesis_hash_pin: str) -> LogState:
        """The state the exported log justifies, once it verifies from the pinned genesis."""
        lines, checkpoint = self.export(member)
        return verify_log(lines, checkpoint, genesis_hash_pin=genesis_hash_pin)

    def trusted_members(self, member: MemberSecrets, *, genesis_hash_pin: str) -> list[MemberRecord]:
        """The current members as the log justifies them, once the server's list agrees."""
        state = self.log_state(member, genesis_hash_pin=genesis_hash_pin)
        check_member_list(state, self._client.get_all(member, "/v1/members"))
        return [m for m in state.members.values() if m.active]
