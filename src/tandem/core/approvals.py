"""The one approval engine: who may approve what, and whether enough of them did.

Withdrawals, ceremonies, membership and policy proposals, proof challenges and the
offline signer all ask the same question the same way, so the server and the offline
signer cannot disagree. The rules, in the order an approval is checked:

1. it is for this request's content (digest), and it approves (a rejection never counts);
2. it was given under the policy version the request was made under
   (``policy_version``) - the stricter of the two rules the flows once had: such an
   approval is not skipped, it refuses the request, whoever gave it;
3. the requester never approves its own request (``self_approval``);
4. the approver is a member now, and was one when it approved (``not_a_member``);
5. it approved under its own role, and that role is asked for (``role_mismatch``,
   ``role_not_allowed``; auditors never approve);
6. it is fresh: not past its own expiry, nor older than the approval TTL (``expired``);
7. one approval per member: a second one is never a second vote (``duplicate``).

Counting is by member, never by signature: python-tuf once counted one key's repeated
signatures toward a threshold (GHSA-pwqf-9h7j-7mv8). The verdict depends only on the
set of approvals, not on their order; time comes in as ``now``.

:func:`admit` is the same rules asked at the door, before an approval is stored: it
raises :class:`SelfApprovalError` (one message, wherever it is asked) or
:class:`RoleNotAllowedError` for a role the request does not ask for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from tandem.core.roles import Role, a_role
from tandem.errors import PolicyVersionError, QuorumNotMetError, RoleNotAllowedError, SelfApprovalError

_ROLE_ORDER = (Role.CUSTODIAN, Role.MANAGER, Role.AUDITOR)

SELF_APPROVAL_MESSAGE = "the requester cannot approve their own request"


class Refusal(StrEnum):
    """Why an approval did not count: stable codes for the audit log and for people."""

    DIGEST = "digest_mismatch"
    REJECTED = "rejected"
    SELF_APPROVAL = "self_approval"
    NOT_A_MEMBER = "not_a_member"
    ROLE_MISMATCH = "role_mismatch"
    ROLE_NOT_ALLOWED = "role_not_allowed"
    POLICY_VERSION = "policy_version"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, kw_only=True)
class Standing:
    """A member's place in the membership: its role and the window it held it in
    (``since`` inclusive, ``until`` exclusive; ``None`` is open)."""

    role: Role
    since: int | None = None
    until: int | None = None

    def holds(self, at: int) -> bool:
        return (self.since is None or self.since <= at) and (self.until is None or at < self.until)


def standing_by_role(roles: Mapping[str, Role]) -> dict[str, Standing]:
    """The membership as the flows hold it today: current members and their roles."""
    return {member: Standing(role=Role(role)) for member, role in roles.items()}


@dataclass(frozen=True, kw_only=True)
class Request:
    """What is being approved. ``requester`` is ``None`` where nobody asks for someone
    else's consent (a proof challenge: both sides contribute, the issuer may be one)."""

    requester: str | None
    kind: str
    digest: str | None = None
    policy_version: int | None = None
    created_at: int | None = None


@dataclass(frozen=True, kw_only=True)
class Given:
    """One approval, its signature already verified by the caller. ``role`` is the role
    it was given as (``None``: the member's role); ``expires_at`` is the expiry the
    approver signed, where the flow has one."""

    member: str
    at: int
    role: Role | None = None
    digest: str | None = None
    policy_version: int | None = None
    expires_at: int | None = None
    approve: bool = True

    def _order(self) -> tuple[str, int, int, int, str, str, bool]:
        return (
            self.member,
            self.at,
            -1 if self.expires_at is None else self.expires_at,
            -1 if self.policy_version is None else self.policy_version,
            self.digest or "",
            "" if self.role is None else self.role.value,
            self.approve,
        )


@dataclass(frozen=True)
class Refused:
    member: str
    code: Refusal
    reason: str


def _ordered_counts(counts: Mapping[Role, int]) -> dict[Role, int]:
    return {role: counts[role] for role in _ROLE_ORDER if role in counts}


def check_required(required: Mapping[Role, int]) -> dict[Role, int]:
    """A quorum rule that could be met by nobody, or only by auditors, is a mistake."""
    wanted = {Role(role): count for role, count in required.items()}
    for role, count in wanted.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"required {role.value} count must be a whole number >= 0")
    if wanted.get(Role.AUDITOR):
        raise ValueError("auditors never approve, so an auditor quorum could never be met")
    if sum(wanted.values()) < 1:
        raise ValueError("a quorum must require at least one approval")
    # A zero count means "not required", exactly as if the role were not named.
    return {role: n for role, n in _ordered_counts(wanted).items() if n}


@dataclass(frozen=True, kw_only=True)
class QuorumResult:
    """Who counted toward ``required``, who is missing, and every approval that did not
    count with its reason. ``require()`` raises when the request may not proceed."""

    required: Mapping[Role, int]
    approved_by: Mapping[Role, frozenset[str]]
    missing: Mapping[Role, int]
    refused: tuple[Refused, ...] = ()
    stale: tuple[tuple[str, int], ...] = field(default=())

    @property
    def counted(self) -> frozenset[str]:
        return frozenset(m for members in self.approved_by.values() for m in members)

    @property
    def met(self) -> bool:
        return not self.missing and not self.stale

    @property
    def ignored(self) -> tuple[tuple[str, str], ...]:
        """(member, reason) for each approval that did not count."""
        return tuple((r.member, r.reason) for r in self.refused)

    def require(self) -> None:
        if self.stale:
            member, version = self.stale[0]
            raise PolicyVersionError(
                f"approval by {member} names policy version {version}, not the request's; approve again",
                details={"member": member, "approved_version": version},
            )
        if self.missing:
            short = [
                f"{role.value} {len(self.approved_by.get(role, frozenset()))}/{self.required[role]}"
                for role in _ROLE_ORDER
                if role in self.missing
            ]
            raise QuorumNotMetError(
                f"approvals: {', '.join(short)}",
                details={
                    role.value: {
                        "approved": len(self.approved_by.get(role, frozenset())),
                        "required": self.required[role],
                    }
                    for role in self.missing
                },
            )


def _refusal(
    request: Request,
    given: Given,
    *,
    membership: Mapping[str, Standing],
    wanted: Mapping[Role, int],
    now: int,
    ttl_seconds: int | None,
) -> tuple[Refusal, str] | None:
    """The first rule ``given`` breaks, or ``None`` when it may count."""
    standing = membership.get(given.member)
    if request.digest is not None and given.digest is not None and given.digest != request.digest:
        return Refusal.DIGEST, "the approval is for different content"
    if not given.approve:
        return Refusal.REJECTED, "a rejection is not an approval"
    if (
        request.policy_version is not None
        and given.policy_version is not None
        and given.policy_version != request.policy_version
    ):
        return Refusal.POLICY_VERSION, (
            f"given under policy version {given.policy_version}, "
            f"the request is under {request.policy_version}"
        )
    if request.requester is not None and given.member == request.requester:
        return Refusal.SELF_APPROVAL, SELF_APPROVAL_MESSAGE
    if standing is None or not standing.holds(now):
        return Refusal.NOT_A_MEMBER, "not a current member"
    if not standing.holds(given.at):
        return Refusal.NOT_A_MEMBER, "not a member when it approved"
    claimed = standing.role if given.role is None else given.role
    if standing.role != claimed:
        return Refusal.ROLE_MISMATCH, f"approved as {claimed} but their role is {standing.role}"
    if standing.role == Role.AUDITOR:
        return Refusal.ROLE_NOT_ALLOWED, "auditors never approve"
    if not wanted.get(standing.role):
        return Refusal.ROLE_NOT_ALLOWED, f"no {standing.role} approval is required"
    if given.expires_at is not None and now >= given.expires_at:
        return Refusal.EXPIRED, f"the approval expired at {given.expires_at}"
    if ttl_seconds is not None and now >= given.at + ttl_seconds:
        return Refusal.EXPIRED, f"the approval is older than {ttl_seconds}s"
    return None


def evaluate(
    request: Request,
    approvals: Iterable[Given],
    *,
    membership: Mapping[str, Standing],
    required: Mapping[Role, int],
    now: int,
    ttl_seconds: int | None = None,
) -> QuorumResult:
    """Count distinct members who may approve ``request`` toward ``required``."""
    wanted = check_required(required)
    counted: dict[Role, set[str]] = {role: set() for role in wanted}
    refused: list[Refused] = []
    stale: list[tuple[str, int]] = []
    for given in sorted(approvals, key=Given._order):
        problem = _refusal(
            request, given, membership=membership, wanted=wanted, now=now, ttl_seconds=ttl_seconds
        )
        if problem is None:
            role = membership[given.member].role
            if given.member not in counted[role]:
                counted[role].add(given.member)
                continue
            problem = (Refusal.DUPLICATE, "already counted once")
        code, reason = problem
        refused.append(Refused(given.member, code, reason))
        if code is Refusal.POLICY_VERSION and given.policy_version is not None:
            stale.append((given.member, given.policy_version))
    approved_by = {role: frozenset(members) for role, members in counted.items()}
    missing = {
        role: count - len(approved_by[role])
        for role, count in wanted.items()
        if len(approved_by[role]) < count
    }
    return QuorumResult(
        required=MappingProxyType(wanted),
        approved_by=MappingProxyType(approved_by),
        missing=MappingProxyType(missing),
        refused=tuple(refused),
        stale=tuple(stale),
    )


def check_not_requester(request: Request, member: str) -> None:
    """The one self-approval check: a requester neither approves nor rejects its own
    request (it cancels it instead)."""
    if request.requester is not None and member == request.requester:
        raise SelfApprovalError(SELF_APPROVAL_MESSAGE)


def admit(
    request: Request,
    *,
    member: str,
    role: Role,
    required: Mapping[Role, int],
    what: str,
) -> None:
    """Refuse at the door an approval (or a decision) that could never count: the
    requester's own, or one by a role ``required`` does not ask for. ``what`` names the
    request in the message ("this withdrawal")."""
    check_not_requester(request, member)
    wanted = {Role(r): n for r, n in required.items() if n}
    if role not in wanted:
        needed = ", ".join(f"{r.value} {n}" for r, n in _ordered_counts(wanted).items())
        raise RoleNotAllowedError(
            f"{a_role(role.value)} may not approve {what}; it needs approval by {needed}"
        )
