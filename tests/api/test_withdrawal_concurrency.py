"""THREATS.md 11: many concurrent releases of one approved withdrawal sign exactly once.

Runs on every backend of the ``world`` fixture (SQLite, and PostgreSQL when configured).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from tests.conftest import World
from tests.helpers.withdrawals import btc_intent, create_approved, setup, verify_bitcoin

from tandem.core import withdrawal as wcore
from tandem.errors import AlreadyReleasedError

CALLS = 64


def test_64_concurrent_releases_sign_exactly_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    envelopes = [
        world.client.withdrawals.release_envelope(world["bob" if i % 2 else "cora"], w["id"])
        for i in range(CALLS)
    ]

    signatures = 0
    lock = threading.Lock()
    real_sign = wcore.sign_transaction

    def counting_sign(*args: Any, **kwargs: Any) -> tuple[bytes, str]:
        nonlocal signatures
        with lock:
            signatures += 1
        return real_sign(*args, **kwargs)

    monkeypatch.setattr(wcore, "sign_transaction", counting_sign)
    start = threading.Barrier(CALLS)

    def release(i: int) -> str:
        start.wait()
        try:
            answer = world.svc.withdrawals.release_withdrawal(envelopes[i], idempotency_key=f"key-{i}")
        except AlreadyReleasedError:
            return "already_released"
        assert answer.status_code == 200
        return str(answer.body["signed_tx"])

    with ThreadPoolExecutor(max_workers=CALLS) as pool:
        results = list(pool.map(release, range(CALLS)))

    signed = [r for r in results if r != "already_released"]
    assert len(signed) == 1
    assert results.count("already_released") == CALLS - 1
    assert signatures == 1
    lines, _ = world.client.audit.export(world["olga"])
    log = [json.loads(line) for line in lines]
    released = [e for e in log if e["kind"] == "withdrawal.released"]
    assert len(released) == 1
    assert released[0]["data"]["txid"] == world.client.withdrawals.get(world["olga"], w["id"])["txid"]
    refusals = [e for e in log if e["kind"] == "withdrawal.release.refused"]
    assert len(refusals) == CALLS - 1
    assert {e["code"] for e in refusals} == {"already_released"}
    verify_bitcoin(signed[0], w["prevouts"], s.keyset.keys[0][1])
