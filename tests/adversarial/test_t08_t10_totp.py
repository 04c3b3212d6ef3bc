"""THREATS 8-10: a TOTP code is used once, even inside its window; brute force is
throttled and then locked after a bounded number of failures; skew beyond one step is
refused; a clock moved backwards never reopens a used code. Core and service level."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
import pytest
from tests.conftest import World, new_member
from tests.helpers.audit import membership_state, post, refusals

from tandem.client.members import proposal_digest
from tandem.core import totp
from tandem.core.roles import Role
from tandem.errors import Error, TotpError, TotpLockedError, TotpReplayError, TotpThrottledError
from tandem.store.models import Member

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_790_000_000 - (1_790_000_000 % 30) + 7  # 7 s into a step


def code(step: int, secret: str = SECRET) -> str:
    return totp.code_at(secret, step)


def wrong_code(secret: str, now: int) -> str:
    """A 6-digit code valid at no step within the window (so it is truly wrong)."""
    valid = {totp.code_at(secret, now // 30 + d) for d in range(-3, 4)}
    for n in range(1_000_000):
        candidate = f"{(n * 7919 + 123457) % 1_000_000:06d}"
        if candidate not in valid:
            return candidate
    raise AssertionError("unreachable")


# --- core: once only ------------------------------------------------------------------------


def test_core_code_accepted_once_then_replayed() -> None:
    step = NOW // 30
    got, state = totp.check_totp(SECRET, code(step), now=NOW, state=totp.TotpState())
    assert got == step
    assert state == totp.TotpState(last_step=step)
    for later in (NOW, NOW + 1, NOW + 22):  # still inside the same step
        with pytest.raises(TotpReplayError) as err:
            totp.check_totp(SECRET, code(step), now=later, state=state)
        assert err.value.code == "totp_replayed"


def test_core_older_code_inside_window_refused_after_newer_used() -> None:
    step = NOW // 30
    _, state = totp.check_totp(SECRET, code(step + 1), now=NOW, state=totp.TotpState())
    with pytest.raises(TotpReplayError):
        totp.check_totp(SECRET, code(step), now=NOW, state=state)
    with pytest.raises(TotpReplayError):
        totp.check_totp(SECRET, code(step - 1), now=NOW, state=state)


# --- core: skew -----------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_core_within_one_step_accepted(delta: int) -> None:
    step = NOW // 30
    got, _ = totp.check_totp(SECRET, code(step + delta), now=NOW, state=totp.TotpState())
    assert got == step + delta


@pytest.mark.parametrize("delta", [-20, -3, -2, 2, 3, 20])
def test_core_beyond_one_step_refused(delta: int) -> None:
    with pytest.raises(TotpError) as err:
        totp.check_totp(SECRET, code(NOW // 30 + delta), now=NOW, state=totp.TotpState())
    assert err.value.code == "totp_invalid"


@pytest.mark.parametrize("seconds_back", [1, 7, 30, 31, 60, 90, 3600, 86400])
def test_core_backwards_clock_never_reopens_a_used_code(seconds_back: int) -> None:
    step = NOW // 30
    _, state = totp.check_totp(SECRET, code(step), now=NOW, state=totp.TotpState())
    earlier = NOW - seconds_back
    # No code of the used step or before it opens again, whatever the rewound clock
    # would otherwise accept; inside the window the refusal says why.
    for s in range(earlier // 30 - 1, min(earlier // 30 + 1, step) + 1):
        with pytest.raises(TotpError) as err:
            totp.check_totp(SECRET, code(s), now=earlier, state=state)
        assert err.value.code in {"totp_replayed", "totp_invalid"}
        if abs(s - earlier // 30) <= 1:
            assert err.value.code == "totp_replayed"


@pytest.mark.parametrize(
    "bad", ["", "12345", "1234567", "12345a", " 12345", "１２３４５６", "١٢٣٤٥٦", "12 345", None, 123456]
)
def test_core_malformed_codes_refused(bad: Any) -> None:
    with pytest.raises(TotpError) as err:
        totp.check_totp(SECRET, bad, now=NOW, state=totp.TotpState())
    assert err.value.code == "totp_invalid"


# --- core: throttle and lock ----------------------------------------------------------------


def test_core_throttle_then_lock_after_bounded_failures() -> None:
    state = totp.TotpState()
    now = NOW
    bad = wrong_code(SECRET, now)
    counted = 0
    throttled_seen = False
    for _ in range(200):
        try:
            totp.check_totp(SECRET, bad, now=now, state=state)
        except TotpLockedError:
            break
        except TotpThrottledError as exc:
            throttled_seen = True
            # A throttled attempt is not even checked: the right code is refused too,
            # so an attacker learns nothing from it, and it does not count.
            with pytest.raises(TotpThrottledError):
                totp.check_totp(SECRET, code(now // 30), now=now, state=state)
            unchanged = totp.record_failure(state, now=now, error=exc)
            assert unchanged == state
            now += totp.throttle_delay(state.failures)
            continue
        except TotpError as exc:
            counted += 1
            state = totp.record_failure(state, now=now, error=exc)
            continue
        raise AssertionError("a wrong code was accepted")
    assert throttled_seen
    assert counted == totp.LOCK_AFTER
    assert state.failures == totp.LOCK_AFTER
    assert state.locked_until == now + totp.LOCK_SECONDS or state.locked_until is not None
    assert totp.THROTTLE_AFTER <= totp.LOCK_AFTER <= 10


def test_core_lock_survives_a_correct_code_and_expires() -> None:
    state = totp.TotpState(
        failures=totp.LOCK_AFTER, last_failure_at=NOW, locked_until=NOW + totp.LOCK_SECONDS
    )
    for t in (NOW, NOW + 60, NOW + totp.LOCK_SECONDS - 1):
        with pytest.raises(TotpLockedError) as err:
            totp.check_totp(SECRET, code(t // 30), now=t, state=state)
        assert err.value.code == "totp_locked"
        assert err.value.status == 429
        assert totp.record_failure(state, now=t, error=err.value) == state  # the lock is not extended
    later = NOW + totp.LOCK_SECONDS
    step, fresh = totp.check_totp(SECRET, code(later // 30), now=later, state=state)
    assert fresh == totp.TotpState(last_step=step)


def test_core_throttle_delays_are_bounded_and_increasing() -> None:
    delays = [totp.throttle_delay(n) for n in range(0, 30)]
    assert delays[: totp.THROTTLE_AFTER] == [0] * totp.THROTTLE_AFTER
    assert all(a <= b for a, b in itertools.pairwise(delays))
    assert max(delays) <= 60


def test_core_lock_is_reached_again_immediately_after_it_expires() -> None:
    """Failures are not forgiven by the lock expiring: the next miss locks again."""
    state = totp.TotpState(
        failures=totp.LOCK_AFTER, last_failure_at=NOW, locked_until=NOW + totp.LOCK_SECONDS
    )
    later = NOW + totp.LOCK_SECONDS
    with pytest.raises(TotpError) as err:
        totp.check_totp(SECRET, wrong_code(SECRET, later), now=later, state=state)
    after = totp.record_failure(state, now=later, error=err.value)
    assert after.locked_until == later + totp.LOCK_SECONDS


# --- service level ----------------------------------------------------------------------------


def member_row(world: World, name: str) -> Member:
    with world.svc.db.read() as s:
        row = s.get(Member, world[name].member_id)
        assert row is not None
        return row


def approve(world: World, who: str, prop: dict[str, Any], totp_code: str) -> httpx.Response:
    env = world.client.sign(
        world[who], "proposal.approve", {"proposal": prop["id"], "digest": proposal_digest(prop)}
    )
    return post(world, f"/v1/proposals/{prop['id']}/approve", {"envelope": env, "totp": totp_code})


def new_proposal(world: World, name: str = "nina") -> dict[str, Any]:
    return world.client.members.propose_add(world["alice"], new_member(name, Role.AUDITOR).card())


def step_code(world: World, who: str, delta: int = 0) -> str:
    return totp.code_at(world[who].totp_secret, world.clock() // 30 + delta)


def test_service_same_code_twice_inside_its_window(world: World) -> None:
    first, second = new_proposal(world, "nina"), new_proposal(world, "nora")
    c = world.code("bob")
    assert approve(world, "bob", first, c).status_code == 200
    before = membership_state(world)
    world.clock.advance(3)  # same 30 s step
    response = approve(world, "bob", second, c)
    assert response.status_code == 401
    assert response.json()["code"] == "totp_replayed"
    assert membership_state(world) == before
    hits = refusals(world, "totp_replayed")
    assert len(hits) == 1
    assert hits[0]["kind"] == "proposal.approve.refused"
    assert member_row(world, "bob").totp_failures == 1


def test_service_code_used_by_enrolment_cannot_then_approve(world: World) -> None:
    """Enrolment's confirmation code is consumed too (the fixture enrolled at T0)."""
    prop = new_proposal(world)
    world.clock.now = world.clock.now  # no advance: still the enrolment step
    response = approve(world, "bob", prop, step_code(world, "bob"))
    assert response.json()["code"] == "totp_replayed"


def test_service_brute_force_throttled_then_locked_then_unlocked(world: World) -> None:
    prop = new_proposal(world)
    bob = world["bob"]
    before = membership_state(world)
    statuses: list[str] = []
    counted = 0
    for _ in range(100):
        bad = wrong_code(bob.totp_secret, world.clock())
        response = approve(world, "bob", prop, bad)
        assert response.status_code in (401, 429), response.text
        got = response.json()["code"]
        statuses.append(got)
        if got == "totp_locked":
            break
        if got == "totp_throttled":
            assert response.status_code == 429
            # The right code is refused while throttled, and that costs nothing.
            right = approve(world, "bob", prop, step_code(world, "bob"))
            assert right.json()["code"] == "totp_throttled"
            world.clock.advance(totp.throttle_delay(member_row(world, "bob").totp_failures))
            continue
        assert got == "totp_invalid"
        counted += 1
    assert statuses[-1] == "totp_locked"
    assert "totp_throttled" in statuses
    assert counted == totp.LOCK_AFTER
    assert member_row(world, "bob").totp_failures == totp.LOCK_AFTER
    locked = approve(world, "bob", prop, step_code(world, "bob"))
    assert locked.status_code == 429
    assert locked.json()["code"] == "totp_locked"
    assert membership_state(world) == before  # nothing approved, no nonce spent

    assert len(refusals(world, "totp_invalid")) == totp.LOCK_AFTER
    assert refusals(world, "totp_locked")
    assert refusals(world, "totp_throttled")

    # Still locked a little before the 15 minutes are up, even with the right code.
    world.clock.advance(totp.LOCK_SECONDS - 120)
    assert approve(world, "bob", prop, step_code(world, "bob")).json()["code"] == "totp_locked"

    world.svc.members.unlock_totp(bob.member_id)
    row = member_row(world, "bob")
    assert (row.totp_failures, row.totp_locked_until) == (0, None)
    world.clock.advance(30)
    done = approve(world, "bob", prop, step_code(world, "bob"))
    assert done.status_code == 200, done.text
    world.client._sessions.clear()
    lines, _ = world.client.audit.export(world["olga"])
    assert any(json.loads(line)["kind"] == "member.totp_unlocked" for line in lines)


def test_service_lock_expires_after_fifteen_minutes(world: World) -> None:
    prop = new_proposal(world)
    with world.svc.db.write() as s:
        row = s.get(Member, world["bob"].member_id)
        row.totp_failures = totp.LOCK_AFTER
        row.totp_last_failure_at = world.clock()
        row.totp_locked_until = world.clock() + totp.LOCK_SECONDS
        s.add(row)
    world.clock.advance(totp.LOCK_SECONDS)
    assert approve(world, "bob", prop, step_code(world, "bob")).status_code == 200


def test_service_lock_is_per_member(world: World) -> None:
    prop = new_proposal(world)
    with world.svc.db.write() as s:
        row = s.get(Member, world["bob"].member_id)
        row.totp_failures = totp.LOCK_AFTER
        row.totp_locked_until = world.clock() + totp.LOCK_SECONDS
        s.add(row)
    assert approve(world, "cora", prop, world.code("cora")).status_code == 200


@pytest.mark.parametrize("delta", [-2, 2, -3, 3])
def test_service_skew_beyond_one_step_refused(world: World, delta: int) -> None:
    prop = new_proposal(world)
    world.clock.advance(600)  # well past the enrolment step
    before = membership_state(world)
    response = approve(world, "bob", prop, step_code(world, "bob", delta))
    assert response.status_code == 401
    assert response.json()["code"] == "totp_invalid"
    assert membership_state(world) == before
    assert len(refusals(world, "totp_invalid")) == 1


@pytest.mark.parametrize("delta", [-1, 1])
def test_service_skew_of_one_step_accepted(world: World, delta: int) -> None:
    prop = new_proposal(world)
    world.clock.advance(600)
    response = approve(world, "bob", prop, step_code(world, "bob", delta))
    assert response.status_code == 200, response.text


def test_service_backwards_clock_never_reopens_a_used_code(world: World) -> None:
    first, second, third = (
        new_proposal(world, "nina"),
        new_proposal(world, "nora"),
        new_proposal(world, "nell"),
    )
    world.clock.advance(600)
    used = step_code(world, "bob")
    assert approve(world, "bob", first, used).status_code == 200
    before = membership_state(world)
    world.clock.advance(-30)  # the server's clock is set back one step
    assert approve(world, "bob", second, used).json()["code"] == "totp_replayed"
    assert approve(world, "bob", second, step_code(world, "bob")).json()["code"] == "totp_replayed"
    world.clock.advance(-240)  # ...and further
    assert approve(world, "bob", third, step_code(world, "bob")).json()["code"] in {
        "totp_replayed",
        "totp_invalid",
    }
    assert membership_state(world) == before


def test_service_wrong_code_does_not_consume_the_action(world: World) -> None:
    """A refused second factor rolls the whole action back: the same envelope with the
    right code then succeeds (the nonce was not spent by the refusal)."""
    prop = new_proposal(world)
    env = world.client.sign(
        world["bob"],
        "proposal.approve",
        {"proposal": prop["id"], "digest": proposal_digest(prop)},
    )
    world.clock.advance(60)
    bad = post(
        world,
        f"/v1/proposals/{prop['id']}/approve",
        {"envelope": env, "totp": wrong_code(world["bob"].totp_secret, world.clock())},
    )
    assert bad.json()["code"] == "totp_invalid"
    good = post(
        world, f"/v1/proposals/{prop['id']}/approve", {"envelope": env, "totp": step_code(world, "bob")}
    )
    assert good.status_code == 200, good.text


def test_replacing_a_seed_needs_a_code_of_the_old_one(world: World) -> None:
    from tandem.errors import RemoteError

    bob = world["bob"]
    old_secret = bob.totp_secret
    bob.totp_secret = "KRUGKIDROVUWG2ZAMJZG653OEBTG66BA"
    try:
        world.clock.advance(60)
        with pytest.raises(RemoteError) as err:
            world.client.members.enrol_totp(bob)
        assert err.value.remote_code == "totp_invalid"
        with pytest.raises(RemoteError) as err:
            world.client.members.enrol_totp(bob, old_code=wrong_code(old_secret, world.clock()))
        assert err.value.remote_code == "totp_invalid"
    finally:
        bob.totp_secret = old_secret
    # The old seed still works: the swap never happened.
    prop = new_proposal(world)
    assert approve(world, "bob", prop, world.code("bob")).status_code == 200


def test_unlock_of_unknown_member_is_a_clean_error(world: World) -> None:
    with pytest.raises(Error) as err:
        world.svc.members.unlock_totp("mem_" + "0" * 20)
    assert err.value.code == "not_found"


def test_service_one_code_raced_across_many_approvals_wins_once(world: World) -> None:
    """Concurrent approvals of different proposals with one code: exactly one wins (the
    store's compare-and-set on last_step, serialised writers)."""
    import threading

    props = [new_proposal(world, f"n{i}") for i in range(6)]
    world.clock.advance(600)
    c = step_code(world, "bob")
    envelopes = [
        world.client.sign(
            world["bob"], "proposal.approve", {"proposal": p["id"], "digest": proposal_digest(p)}
        )
        for p in props
    ]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(envelopes))

    def attempt(env: dict[str, Any]) -> None:
        barrier.wait()
        try:
            world.svc.proposals.decide_proposal(env, totp=c, approve=True)
            outcomes.append("ok")
        except Error as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt, args=(e,)) for e in envelopes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes.count("ok") == 1
    # The losers are replays, and after three of them the member is throttled.
    assert set(outcomes) - {"ok"} <= {"totp_replayed", "totp_throttled"}
    assert "totp_replayed" in outcomes
    # The winner's addition met its quorum and now waits out its delay (THREATS 35).
    assert len([p for p in membership_state(world)["proposals"] if p[1] == "approved"]) == 1


@pytest.mark.parametrize(
    "seed",
    [b"!!!!!!!!!!!!!!!!!!!!", "\u00e9".encode() * 10, b"A" * 17, b"\x00" * 20, b"abc", b"A" * 15],
    ids=["punctuation", "non-ascii", "bad-padding-length", "nul", "too-short", "15-chars"],
)
def test_enrolment_of_a_malformed_seed_refused_cleanly(world: World, seed: bytes) -> None:
    """A seed that is not base32 (or too short) is the member's input error: 4xx with a
    code and an audit entry, never a 500, and the old seed stays in force."""
    from tandem.core.identity import b64
    from tandem.core.service_key import seal_to

    c = world.client
    sealed = seal_to(bytes.fromhex(c.deployment()["service"]["seal_public"]), seed)
    env = c.sign(world["olga"], "member.totp_enrol", {"sealed_secret": b64(sealed)})
    before = member_row(world, "olga").totp_sealed
    response = post(
        world, "/v1/totp/enrol", {"envelope": env, "confirm_code": "123456", "totp": world.code("olga")}
    )
    assert 400 <= response.status_code < 500, response.text
    assert member_row(world, "olga").totp_sealed == before
    assert refusals(world, response.json()["code"])
