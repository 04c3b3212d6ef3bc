"""Membership changes through the real API: propose, approve, wait out the delay, apply.

A membership addition or rekey waits the policy's membership delay (with a veto) before
it takes effect, so a test that needs the new member runs the whole path here.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import World

from tandem.core.identity import IdentityCard

# The default policy's change delay, which the default membership section reuses.
MEMBER_DELAY = 86400


def post_signed(world: World, who: str, type_: str, path: str, body: dict[str, Any]) -> Any:
    env = world.client.sign(world[who], type_, body)
    return world.client.request("POST", path, json_body={"envelope": env})


def apply_change(world: World, who: str, proposal_id: str) -> dict[str, Any]:
    result: dict[str, Any] = post_signed(
        world, who, "proposal.apply", f"/v1/proposals/{proposal_id}/apply", {"proposal": proposal_id}
    )
    return result


def veto_member_change(world: World, who: str, proposal_id: str, reason: str = "") -> dict[str, Any]:
    result: dict[str, Any] = post_signed(
        world,
        who,
        "proposal.veto",
        f"/v1/proposals/{proposal_id}/veto",
        {"proposal": proposal_id, "reason": reason},
    )
    return result


def wait_out_delay(world: World, seconds: int = MEMBER_DELAY) -> None:
    world.clock.advance(seconds + 1)
    world.client._sessions.clear()


def approve(world: World, who: str, proposal_id: str) -> dict[str, Any]:
    return world.client.members.approve(world[who], proposal_id, totp=world.code(who))


def carry_out(world: World, proposal_id: str, *, approvers: tuple[str, ...] = ("bob",)) -> dict[str, Any]:
    """Approve (by each approver in turn), wait out the delay, apply; the applied proposal."""
    for who in approvers:
        approve(world, who, proposal_id)
    wait_out_delay(world)
    return apply_change(world, approvers[0], proposal_id)


def add_member(
    world: World, card: IdentityCard, *, proposer: str = "alice", approvers: tuple[str, ...] = ("bob",)
) -> dict[str, Any]:
    prop = world.client.members.propose_add(world[proposer], card)
    return carry_out(world, prop["id"], approvers=approvers)


def rekey_member(
    world: World,
    member_id: str,
    card: IdentityCard,
    *,
    proposer: str = "alice",
    approvers: tuple[str, ...] = ("bob",),
) -> dict[str, Any]:
    prop = world.client.members.propose_rekey(world[proposer], member_id, card)
    return carry_out(world, prop["id"], approvers=approvers)
