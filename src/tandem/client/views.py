"""Typed readers of the server's answers the CLI and the console print from.

A reader is built from the JSON as it came and is strict about types: a field of the
wrong type is refused (``bad_response``) rather than printed as something else. It is
for showing; what a member signs is still built from the very JSON it was read from
(``doc``), reviewed by :func:`tandem.client.withdrawal.review` or digested by
:func:`tandem.client.members.proposal_digest` on the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.errors import RemoteError

__all__ = ["Approval", "ProposalView", "WithdrawalView"]


class _Reader:
    """Fields of one JSON object, each checked for its type as it is read."""

    def __init__(self, doc: Any, what: str) -> None:
        if not isinstance(doc, Mapping):
            raise _bad(f"the {what} is not a JSON object")
        self.doc: Mapping[str, Any] = doc
        self.what = what

    def _typed(self, name: str, kind: type | tuple[type, ...], words: str, *, optional: bool) -> Any:
        value = self.doc.get(name)
        if value is None and optional:
            return None
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise _bad(f"the {self.what}'s {name} is not {words}")
        return value

    def text(self, name: str) -> str:
        value: str = self._typed(name, str, "a string", optional=False)
        return value

    def opt_text(self, name: str) -> str | None:
        value: str | None = self._typed(name, str, "a string", optional=True)
        return value

    def number(self, name: str) -> int:
        value: int = self._typed(name, int, "an integer", optional=False)
        return value

    def opt_number(self, name: str) -> int | None:
        value: int | None = self._typed(name, int, "an integer", optional=True)
        return value

    def flag(self, name: str) -> bool:
        value: bool | None = self._typed(name, bool, "true or false", optional=True)
        return bool(value)

    def obj(self, name: str, *, optional: bool = False) -> Mapping[str, Any]:
        value: Mapping[str, Any] | None = self._typed(name, Mapping, "an object", optional=optional)
        return value if value is not None else {}

    def items(self, name: str) -> list[Any]:
        value: list[Any] | None = self._typed(name, list, "a list", optional=True)
        return value if value is not None else []


def _bad(message: str) -> RemoteError:
    return RemoteError("bad_response", message, 502)


def _counts(value: Mapping[str, Any], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for role, n in value.items():
        if not isinstance(n, int) or isinstance(n, bool):
            raise _bad(f"the {what}'s required count for {role!r} is not an integer")
        out[str(role)] = n
    return out


def _texts(values: list[Any], what: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise _bad(f"the {what} is not a list of strings")
    return values


@dataclass(frozen=True)
class Approval:
    """One approval already given: who, in which role, when."""

    member: str
    role: str
    at: int
    expires_at: int | None = None

    @classmethod
    def from_json(cls, doc: Any, what: str) -> Approval:
        r = _Reader(doc, f"{what}'s approval")
        return cls(
            member=r.text("member"),
            role=r.text("role"),
            at=r.number("at"),
            expires_at=r.opt_number("expires_at"),
        )


def _approvals(r: _Reader) -> tuple[Approval, ...]:
    return tuple(Approval.from_json(a, r.what) for a in r.items("approvals"))


@dataclass(frozen=True)
class WithdrawalView:
    """A withdrawal request as ``GET /v1/withdrawals[/{id}]`` answers it."""

    id: str
    wallet: str
    chain: str
    network: str
    requester: str
    status: str
    fingerprint: str
    policy_version: int
    created_at: int
    expires_at: int
    # From the signed intent: the base-unit amount (a decimal string), asset and destination.
    amount: str
    asset: str
    destination: str
    # What the request needs now (the decision's, raised by an escalation), and its rule.
    required: Mapping[str, int]
    rule: str | None
    explanation: tuple[str, ...]
    escalated: bool
    approvals: tuple[Approval, ...]
    time_lock_until: int | None
    released_at: int | None
    txid: str | None
    signed_tx: str | None
    # From the server's decoded view, for showing the amount in the asset's units.
    decimals: int | None
    symbol: str | None
    doc: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: Any) -> WithdrawalView:
        r = _Reader(doc, "withdrawal")
        intent = _Reader(r.obj("intent"), "withdrawal's intent")
        decision = _Reader(r.obj("decision"), "withdrawal's decision")
        decoded = _Reader(r.obj("decoded", optional=True), "withdrawal's decoded view")
        required = r.obj("required", optional=True) or decision.obj("required", optional=True)
        return cls(
            id=r.text("id"),
            wallet=r.text("wallet"),
            chain=r.text("chain"),
            network=r.text("network"),
            requester=r.text("requester"),
            status=r.text("status"),
            fingerprint=r.text("fingerprint"),
            policy_version=r.number("policy_version"),
            created_at=r.number("created_at"),
            expires_at=r.number("expires_at"),
            amount=intent.text("amount"),
            asset=intent.text("asset"),
            destination=intent.text("destination"),
            required=_counts(required, "withdrawal"),
            rule=decision.opt_text("rule"),
            explanation=tuple(_texts(decision.items("explanation"), "withdrawal's decision explanation")),
            escalated=r.flag("escalated"),
            approvals=_approvals(r),
            time_lock_until=r.opt_number("time_lock_until"),
            released_at=r.opt_number("released_at"),
            txid=r.opt_text("txid"),
            signed_tx=r.opt_text("signed_tx"),
            decimals=decoded.opt_number("decimals"),
            symbol=decoded.opt_text("symbol"),
            doc=r.doc,
        )

    def approved_by(self, member_id: str) -> bool:
        return any(a.member == member_id for a in self.approvals)


@dataclass(frozen=True)
class ProposalView:
    """A membership, policy or address-book proposal as ``GET /v1/proposals[/{id}]``
    answers it. ``digest`` is the server's; the one signed is recomputed on the client."""

    id: str
    kind: str
    body: Mapping[str, Any]
    proposer: str
    status: str
    created_at: int
    expires_at: int | None
    approved_at: int | None
    effective_at: int | None
    digest: str | None
    approvals: tuple[Approval, ...]
    pending_change: Mapping[str, Any] | None
    required: Mapping[str, int]  # per role, under the policy in force; empty if not stated
    doc: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, doc: Any) -> ProposalView:
        r = _Reader(doc, "proposal")
        pending = r.obj("pending_change", optional=True)
        required = _counts(r.obj("required", optional=True), "proposal")
        return cls(
            id=r.text("id"),
            kind=r.text("kind"),
            body=r.obj("body"),
            proposer=r.text("proposer"),
            status=r.text("status"),
            created_at=r.number("created_at"),
            expires_at=r.opt_number("expires_at"),
            approved_at=r.opt_number("approved_at"),
            effective_at=r.opt_number("effective_at"),
            digest=r.opt_text("digest"),
            approvals=_approvals(r),
            pending_change=pending or None,
            required=required,
            doc=r.doc,
        )

    def approved_by(self, member_id: str) -> bool:
        return any(a.member == member_id for a in self.approvals)
