"""What the approval engine (:mod:`tandem.core.approvals`) needs from the store: the
membership in force and the stored approvals, read the same way for every flow."""

from __future__ import annotations

from sqlmodel import Session, select

from tandem.core.approvals import Standing
from tandem.core.lifecycles import MemberState
from tandem.core.roles import Role
from tandem.store.models import Member


def current_membership(session: Session) -> dict[str, Standing]:
    """Members in force now, with their roles: a member removed since an approval was
    given is absent, so that approval no longer counts."""
    return {
        m.id: Standing(role=Role(m.role))
        for m in session.exec(select(Member).where(Member.status == MemberState.ACTIVE)).all()
    }
