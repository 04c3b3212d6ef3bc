"""THREATS 11 over real HTTP: 64 concurrent release calls on one approved withdrawal,
against ``tandem serve`` in a subprocess (uvicorn, its thread pool, real connections),
sign exactly once; the other 63 get a clean 409 ``already_released``, never a 5xx.

Each call is its own signed ``withdrawal.release`` action with its own Idempotency-Key,
so nothing short of the server's serialised compare-and-set on the withdrawal's status
stops a second signature. Three withdrawals in a row, on SQLite and (when
TANDEM_TEST_POSTGRES_URL is set) on PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from scripts.harness import (
    Deployment,
    Server,
    Store,
    TotpSteps,
    build_deployment,
    utxos_paying,
)
from tests.adversarial.server_harness import verified_export
from tests.conftest import BACKENDS, PG_URL
from tests.helpers.withdrawals import verify_bitcoin

from tandem.client import Client
from tandem.core.canonical import canonical
from tandem.core.roles import Role

pytestmark = pytest.mark.slow

CALLS = 64
ROUNDS = 3


@dataclass
class Served:
    dep: Deployment
    server: Server
    client: Client
    totp: TotpSteps


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    backend = str(request.param)
    store = Store.new(
        backend, tmp_path_factory.mktemp(f"t11-{backend}") / "data", pg_admin_url=PG_URL, prefix="tandem_t11"
    )
    try:
        dep = build_deployment(store, managers=2, custodians=ROUNDS)
        with Server(store) as server:
            client = Client(server.url, pin=dep.pin.copy())
            yield Served(dep, server, client, TotpSteps())
            client.http.close()
    finally:
        store.drop()


def approved_withdrawal(s: Served, custodian: str) -> dict[str, Any]:
    source = s.dep.addresses[0]
    created = s.client.withdrawals.create(
        s.dep["manager-1"],
        {
            "wallet": s.dep.keyset_id,
            "chain": "bitcoin",
            "network": "testnet",
            "asset": "BTC",
            "amount": "40000",
            "from": source["address"],
            "destination": s.dep.destination,
            "bitcoin": {
                "utxos": utxos_paying(source["address"], [90_000]),
                "fee_rate": 4,
            },
        },
    )
    approved = s.client.withdrawals.approve(
        s.dep[custodian], created["id"], totp=s.totp.code(s.dep[custodian])
    )
    assert approved["status"] == "approved"
    return s.client.withdrawals.get(s.dep.auditor, created["id"])


def burst(url: str, calls: list[tuple[str, bytes, dict[str, str]]]) -> list[tuple[int, dict[str, Any]]]:
    """Every call on its own connection, all let go at once."""
    start = threading.Barrier(len(calls))

    def one(call: tuple[str, bytes, dict[str, str]]) -> tuple[int, dict[str, Any]]:
        path, body, headers = call
        with httpx.Client(base_url=url, timeout=120) as http:
            http.get("/v1/health")  # connect before the barrier
            start.wait()
            r = http.post(path, content=body, headers={"Content-Type": "application/json", **headers})
            try:
                doc = r.json()
            except ValueError:
                doc = {"raw": r.text[:500]}
            return r.status_code, doc

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(one, calls))


def audit_entries(s: Served) -> list[dict[str, Any]]:
    return [json.loads(line) for line in verified_export(s.client, s.dep.auditor, s.dep.service_public)]


def test_64_concurrent_http_releases_sign_exactly_once(served: Served) -> None:
    s = served
    signers = s.dep.of_role(Role.MANAGER) + s.dep.of_role(Role.CUSTODIAN)
    released: dict[str, str] = {}
    for round_no in range(ROUNDS):
        w = approved_withdrawal(s, f"custodian-{round_no + 1}")
        wid = w["id"]
        envelopes = [
            s.client.withdrawals.release_envelope(signers[i % len(signers)], wid) for i in range(CALLS)
        ]
        calls = [
            (
                f"/v1/withdrawals/{wid}/release",
                canonical({"envelope": env}),
                {"Idempotency-Key": f"t11-{wid}-{i}"},
            )
            for i, env in enumerate(envelopes)
        ]
        before = len(audit_entries(s))
        answers = burst(s.server.url, calls)

        statuses = [status for status, _ in answers]
        assert all(status < 500 for status in statuses), statuses
        winners = [i for i, (status, _) in enumerate(answers) if status == 200]
        assert len(winners) == 1, statuses
        losers = [doc for status, doc in answers if status != 200]
        assert {(status, doc.get("code")) for status, doc in answers if status != 200} == {
            (409, "already_released")
        }, losers[:3]
        assert len(losers) == CALLS - 1

        won = answers[winners[0]][1]
        assert won["status"] == "released"
        verify_bitcoin(won["signed_tx"], w["prevouts"], bytes.fromhex(w["public_key"]))
        stored = s.client.withdrawals.get(s.dep.auditor, wid)
        assert (stored["signed_tx"], stored["txid"]) == (won["signed_tx"], won["txid"])
        released[wid] = won["txid"]

        # THREATS 12: the winner's retry (same key, same body) is answered from the record.
        again = httpx.post(
            f"{s.server.url}{calls[winners[0]][0]}",
            content=calls[winners[0]][1],
            headers={"Content-Type": "application/json", **calls[winners[0]][2]},
            timeout=60,
        )
        assert again.status_code == 200
        assert again.json() == won

        new = audit_entries(s)[before:]
        assert [e["data"]["withdrawal"] for e in new if e["kind"] == "withdrawal.released"] == [wid]
        refused = [e for e in new if e["kind"] == "withdrawal.release.refused"]
        assert len(refused) == CALLS - 1
        assert {e["code"] for e in refused} == {"already_released"}

    log = audit_entries(s)
    entries = [e for e in log if e["kind"] == "withdrawal.released"]
    assert {e["data"]["withdrawal"]: e["data"]["txid"] for e in entries} == released
    assert len(entries) == ROUNDS
    assert s.server.health() == {"status": "ok", "sealed": False, "reason": None}
    server_log = s.server.log_tail(10**8)
    assert "unexpected" not in server_log
    assert "Traceback" not in server_log
