"""Quorum counting: distinct, eligible members of the right role, never the requester."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from tandem.core.policy import Approval, quorum
from tandem.core.roles import Role
from tandem.errors import QuorumNotMetError

C = Role.CUSTODIAN
M = Role.MANAGER
A = Role.AUDITOR

MEMBERS: Mapping[str, Role] = {
    "mona": M,
    "max": M,
    "mila": M,
    "carla": C,
    "chen": C,
    "aude": A,
}


def one_custodian() -> dict[Role, int]:
    return {C: 1}


def test_one_custodian_meets_one_custodian() -> None:
    result = quorum(one_custodian(), [Approval("carla", C)], requester="mona", eligible=MEMBERS)
    assert result.met
    assert result.approved_by[C] == frozenset({"carla"})
    assert dict(result.missing) == {}
    result.require()


def test_no_approvals_reports_custodian_0_of_1() -> None:
    result = quorum(one_custodian(), [], requester="mona", eligible=MEMBERS)
    assert not result.met
    assert dict(result.missing) == {C: 1}
    with pytest.raises(QuorumNotMetError, match="custodian 0/1"):
        result.require()


def test_distinct_members_are_counted() -> None:
    approvals = [Approval("carla", C), Approval("chen", C)]
    result = quorum({C: 2}, approvals, requester="mona", eligible=MEMBERS)
    assert result.met
    assert result.approved_by[C] == frozenset({"carla", "chen"})


def test_double_signature_counts_once() -> None:
    # GHSA-pwqf-9h7j-7mv8: python-tuf counted one key's repeated signatures toward a
    # threshold. Two approvals from one custodian are one custodian.
    approvals = [Approval("carla", C), Approval("carla", C)]
    result = quorum({C: 2}, approvals, requester="mona", eligible=MEMBERS)
    assert not result.met
    assert result.approved_by[C] == frozenset({"carla"})
    assert ("carla", "already counted once") in result.ignored
    with pytest.raises(QuorumNotMetError, match="custodian 1/2"):
        result.require()


def test_requester_never_counts() -> None:
    # A custodian requester (should the service ever allow one) still cannot approve.
    approvals = [Approval("carla", C)]
    result = quorum(one_custodian(), approvals, requester="carla", eligible=MEMBERS)
    assert not result.met
    with pytest.raises(QuorumNotMetError, match="custodian 0/1"):
        result.require()


def test_requesting_manager_cannot_fill_a_manager_slot() -> None:
    approvals = [Approval("carla", C), Approval("mona", M)]
    result = quorum({C: 1, M: 1}, approvals, requester="mona", eligible=MEMBERS)
    assert not result.met
    assert dict(result.missing) == {M: 1}
    with pytest.raises(QuorumNotMetError, match="manager 0/1"):
        result.require()
    other_manager = quorum(
        {C: 1, M: 1}, [*approvals, Approval("max", M)], requester="mona", eligible=MEMBERS
    )
    assert other_manager.met


def test_removed_member_does_not_count() -> None:
    eligible = {k: v for k, v in MEMBERS.items() if k != "carla"}
    result = quorum(one_custodian(), [Approval("carla", C)], requester="mona", eligible=eligible)
    assert not result.met
    assert ("carla", "not a current member") in result.ignored
    with pytest.raises(QuorumNotMetError, match="custodian 0/1"):
        result.require()


def test_approval_under_the_wrong_role_does_not_count() -> None:
    # A manager's approval presented as a custodian one counts for neither role.
    result = quorum({C: 1, M: 1}, [Approval("max", C)], requester="mona", eligible=MEMBERS)
    assert not result.met
    assert result.approved_by[C] == frozenset()
    assert result.approved_by[M] == frozenset()
    assert ("max", "approved as custodian but their role is manager") in result.ignored
    with pytest.raises(QuorumNotMetError, match="custodian 0/1, manager 0/1"):
        result.require()


def test_auditor_never_counts() -> None:
    approvals = [Approval("aude", A), Approval("aude", C)]
    result = quorum(one_custodian(), approvals, requester="mona", eligible=MEMBERS)
    assert not result.met
    assert A not in result.approved_by
    with pytest.raises(QuorumNotMetError, match="custodian 0/1"):
        result.require()


def test_auditor_listed_as_custodian_approval_is_refused_as_wrong_role() -> None:
    result = quorum(one_custodian(), [Approval("aude", C)], requester="mona", eligible=MEMBERS)
    assert ("aude", "approved as custodian but their role is auditor") in result.ignored


def test_every_short_role_is_reported_with_counts() -> None:
    result = quorum({C: 2, M: 1}, [Approval("carla", C)], requester="mona", eligible=MEMBERS)
    assert dict(result.missing) == {C: 1, M: 1}
    with pytest.raises(QuorumNotMetError, match=r"approvals: custodian 1/2, manager 0/1"):
        result.require()


@pytest.mark.parametrize(
    "required",
    [{}, {C: 0}, {A: 1, C: 1}, {C: -1}],
)
def test_nonsense_requirements_refused(required: dict[Role, int]) -> None:
    with pytest.raises(ValueError):
        quorum(required, [], requester="mona", eligible=MEMBERS)
