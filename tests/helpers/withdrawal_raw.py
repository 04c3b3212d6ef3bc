"""Test shortcut for a manager whose client does not check: create a withdrawal from an
intent exactly as given (no local normalisation or validation), through the real API,
with a real operation key and a real resealed share. The server's own checks are what
these requests meet."""

from __future__ import annotations

from typing import Any

import httpx
from sqlmodel import select
from tests.conftest import World
from tests.helpers.audit import post

from tandem.core import withdrawal as wcore
from tandem.core.split import reseal_for_operation
from tandem.store.models import OutpointReservation, Withdrawal


def create_unchecked(world: World, intent: dict[str, Any], who: str = "alice") -> httpx.Response:
    manager = world[who]
    if "from" not in intent:
        raise ValueError("give intent.from")
    prepared = world.client.withdrawals.prepare(manager, intent["wallet"])
    service_public = bytes.fromhex(world.client.deployment()["service"]["sign_public"])
    _side, sealed = reseal_for_operation(manager, prepared["keyset"], prepared["operation"], service_public)
    env = world.client.sign(
        manager,
        "withdrawal.create",
        {"intent": intent, "operation": prepared["operation"], "share_digest": wcore.share_digest(sealed)},
    )
    return post(world, "/v1/withdrawals", {"envelope": env, "sealed_share": sealed})


def withdrawal_state(world: World) -> dict[str, Any]:
    """Withdrawals and reservations: what a refused create must not touch."""
    with world.svc.db.read() as s:
        return {
            "withdrawals": sorted((w.id, w.status) for w in s.exec(select(Withdrawal)).all()),
            "reservations": sorted(
                (r.network, r.txid, r.vout, r.withdrawal) for r in s.exec(select(OutpointReservation)).all()
            ),
        }
