"""What the approval engine (:mod:`tandem.core.approvals`) needs from the store: the
membership in force and the stored approvals, read the same way for every flow."""

from __future__ import annotations

from sqlmodel import Session, col, select

from tandem.core.approvals import Standing
from tandem.core.lifecycles import MemberState
from tandem.core.roles import Role
from tandem.store.models import Approval, Member


def current_membership(session: Session) -> dict[str, Standing]:
    """Members in force now, with their roles: a member removed since an approval was
    given is absent, so that approval no longer counts."""
    return membership_of(active_members(session))


def active_members(session: Session) -> list[Member]:
    """The rows of the members in force now. While the caller holds the list, the
    session finds each of them by id without a query."""
    return list(session.exec(select(Member).where(Member.status == MemberState.ACTIVE)).all())


def membership_of(members: list[Member]) -> dict[str, Standing]:
    """:func:`current_membership` from rows :func:`active_members` read."""
    return {m.id: Standing(role=Role(m.role)) for m in members}


def approvals_of(session: Session, subjects: list[str]) -> dict[str, list[Approval]]:
    """The stored approvals of several subjects (a page of a list) in one query, each
    subject's in the order given."""
    found: dict[str, list[Approval]] = {s: [] for s in subjects}
    if not subjects:
        return found
    query = (
        select(Approval)
        .where(col(Approval.subject).in_(subjects))
        .order_by(col(Approval.created_at), col(Approval.id))
    )
    for approval in session.exec(query).all():
        found[approval.subject].append(approval)
    return found
