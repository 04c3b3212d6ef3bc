"""The one approval engine: each rule refuses with its own code, and the verdict depends
on the set of approvals only (not their order, not repeated copies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core import approvals as engine
from tandem.core.approvals import Given, Refusal, Request, Standing
from tandem.core.roles import Role
from tandem.errors import PolicyVersionError, QuorumNotMetError, RoleNotAllowedError, SelfApprovalError

C = Role.CUSTODIAN
M = Role.MANAGER
A = Role.AUDITOR
NOW = 10_000

MEMBERS: Mapping[str, Standing] = {
    "mona": Standing(role=M),
    "max": Standing(role=M),
    "carla": Standing(role=C),
    "chen": Standing(role=C),
    "cleo": Standing(role=C, since=9_450),
    "cato": Standing(role=C, until=NOW),
    "aude": Standing(role=A),
}
REQUEST = Request(requester="mona", kind="withdrawal", digest="d1", policy_version=2, created_at=9_000)


def ok(member: str, **changes: object) -> Given:
    """A good custodian-side approval of REQUEST by ``member``, with ``changes``."""
    base = Given(member=member, at=9_500, digest="d1", policy_version=2, expires_at=NOW + 100)
    return replace(base, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    name: str
    approval: Given
    code: Refusal | None  # None: it counts


CASES = [
    Case("counts", ok("carla"), None),
    Case("member role taken when none is claimed", ok("carla", role=None), None),
    Case("other content", ok("carla", digest="d2"), Refusal.DIGEST),
    Case("a rejection", ok("carla", approve=False), Refusal.REJECTED),
    Case("requester", ok("mona", role=M), Refusal.SELF_APPROVAL),
    Case("stranger", ok("sam"), Refusal.NOT_A_MEMBER),
    Case("removed before now", ok("cato"), Refusal.NOT_A_MEMBER),
    Case("approved before joining", ok("cleo", at=9_440), Refusal.NOT_A_MEMBER),
    Case("joined before approving", ok("cleo", at=9_450), None),
    Case("claims another role", ok("max", role=C), Refusal.ROLE_MISMATCH),
    Case("role not asked for", ok("max", role=M), Refusal.ROLE_NOT_ALLOWED),
    Case("auditor", ok("aude", role=A), Refusal.ROLE_NOT_ALLOWED),
    Case("old policy version", ok("carla", policy_version=1), Refusal.POLICY_VERSION),
    Case("past its own expiry", ok("carla", expires_at=NOW), Refusal.EXPIRED),
    Case("older than the TTL", ok("carla", at=NOW - 600), Refusal.EXPIRED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_rule_has_its_code(case: Case) -> None:
    result = engine.evaluate(
        REQUEST, [case.approval], membership=MEMBERS, required={C: 1}, now=NOW, ttl_seconds=600
    )
    if case.code is None:
        assert result.met
        assert result.counted == {case.approval.member}
        assert result.refused == ()
        result.require()
    else:
        assert not result.met
        assert result.counted == frozenset()
        assert [(r.member, r.code) for r in result.refused] == [(case.approval.member, case.code)]
        with pytest.raises((QuorumNotMetError, PolicyVersionError)):
            result.require()


def test_a_second_approval_by_one_member_is_a_duplicate() -> None:
    # GHSA-pwqf-9h7j-7mv8: one signer's repeated signatures are one vote.
    result = engine.evaluate(
        REQUEST, [ok("carla"), ok("carla", at=9_600)], membership=MEMBERS, required={C: 2}, now=NOW
    )
    assert result.counted == {"carla"}
    assert [r.code for r in result.refused] == [Refusal.DUPLICATE]
    with pytest.raises(QuorumNotMetError, match="custodian 1/2"):
        result.require()


def test_an_expired_approval_does_not_hide_a_fresh_one_by_the_same_member() -> None:
    approvals = [ok("carla", expires_at=NOW - 1), ok("carla", at=9_900)]
    for order in (approvals, approvals[::-1]):
        result = engine.evaluate(REQUEST, order, membership=MEMBERS, required={C: 1}, now=NOW)
        assert result.met
        assert [r.code for r in result.refused] == [Refusal.EXPIRED]


def test_an_old_policy_version_refuses_even_when_the_quorum_is_met() -> None:
    """The stricter rule: the server once skipped such an approval where the offline
    signer refused the bundle. Now both refuse, because both ask this engine."""
    result = engine.evaluate(
        REQUEST,
        [ok("carla"), ok("chen", policy_version=1)],
        membership=MEMBERS,
        required={C: 1},
        now=NOW,
    )
    assert not result.missing
    assert not result.met
    with pytest.raises(PolicyVersionError, match="chen names policy version 1") as err:
        result.require()
    assert err.value.code == "policy_version_mismatch"


def test_missing_counts_per_role() -> None:
    result = engine.evaluate(REQUEST, [ok("carla")], membership=MEMBERS, required={C: 2, M: 1}, now=NOW)
    assert dict(result.missing) == {C: 1, M: 1}
    with pytest.raises(QuorumNotMetError, match=r"approvals: custodian 1/2, manager 0/1"):
        result.require()


def test_no_requester_lets_anyone_eligible_count() -> None:
    # A proof challenge: the issuing custodian may be the one who contributes.
    request = Request(requester=None, kind="proof")
    result = engine.evaluate(
        request,
        [Given(member="carla", at=1, role=C), Given(member="mona", at=1, role=M)],
        membership=MEMBERS,
        required={C: 1, M: 1},
        now=NOW,
    )
    assert result.met


@pytest.mark.parametrize("required", [{}, {C: 0}, {A: 1, C: 1}, {C: -1}, {C: True}])
def test_nonsense_requirements_refused(required: dict[Role, int]) -> None:
    with pytest.raises(ValueError):
        engine.evaluate(REQUEST, [], membership=MEMBERS, required=required, now=NOW)


# --- admit: the same rules at the door, one message for self-approval ----------------------


def test_admit_refuses_the_requester_with_one_message() -> None:
    with pytest.raises(SelfApprovalError, match=r"^the requester cannot approve their own request$"):
        engine.admit(REQUEST, member="mona", role=M, required={C: 1, M: 1}, what="this withdrawal")


def test_admit_answers_a_wrong_role_with_its_own_code() -> None:
    with pytest.raises(RoleNotAllowedError, match="a manager may not approve this withdrawal") as err:
        engine.admit(REQUEST, member="max", role=M, required={C: 1, M: 0}, what="this withdrawal")
    assert err.value.code == "role_not_allowed"
    engine.admit(REQUEST, member="carla", role=C, required={C: 1}, what="this withdrawal")


# --- the verdict is a function of the set of approvals ------------------------------------

_members = st.sampled_from([*sorted(MEMBERS), "sam"])
_approvals = st.builds(
    Given,
    member=_members,
    at=st.integers(min_value=3_000, max_value=NOW + 10),
    role=st.sampled_from([None, C, M, A]),
    digest=st.sampled_from([None, "d1", "d2"]),
    policy_version=st.sampled_from([None, 1, 2]),
    expires_at=st.one_of(st.none(), st.integers(min_value=NOW - 10, max_value=NOW + 10)),
    approve=st.booleans(),
)


def _verdict(result: engine.QuorumResult) -> tuple[object, ...]:
    return (
        result.met,
        dict(result.approved_by),
        dict(result.missing),
        frozenset((r.member, r.code) for r in result.refused if r.code is not Refusal.DUPLICATE),
        frozenset(result.stale),
    )


@settings(max_examples=300, deadline=None)
@given(
    approvals=st.lists(_approvals, max_size=8),
    data=st.data(),
    required=st.sampled_from([{C: 1}, {C: 2}, {C: 1, M: 1}]),
)
def test_verdict_invariant_under_order_and_duplicates(
    approvals: list[Given], data: st.DataObject, required: dict[Role, int]
) -> None:
    def run(items: list[Given]) -> engine.QuorumResult:
        return engine.evaluate(
            REQUEST, items, membership=MEMBERS, required=required, now=NOW, ttl_seconds=3_000
        )

    base = run(approvals)
    shuffled = data.draw(st.permutations(approvals))
    assert run(list(shuffled)) == base  # the whole result, refusals included
    copies = data.draw(st.lists(st.sampled_from(approvals), max_size=4)) if approvals else []
    assert _verdict(run([*shuffled, *copies])) == _verdict(base)
    # Counted members are distinct, eligible, and never the requester.
    assert "mona" not in base.counted
    assert all(MEMBERS[m].role in required for m in base.counted)
