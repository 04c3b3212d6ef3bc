"""The member's side of the books: sign and send client and allocation proposals and
approvals, scans, reconciliations, price imports and statements; read the register."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tandem.client import Client
from tandem.core.identity import MemberSecrets
from tandem.errors import RemoteError


def _post(client: Client, path: str, body: dict[str, Any]) -> Any:
    return client.request("POST", path, json_body=body)


def propose_client(
    client: Client, manager: MemberSecrets, *, client_id: str, name: str, segregation: str
) -> Any:
    env = client.sign(manager, "client.propose", {"id": client_id, "name": name, "segregation": segregation})
    return _post(client, "/v1/books/clients", {"envelope": env})


def open_proposals(client: Client, member: MemberSecrets) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = client.get_all(member, "/v1/books/proposals")
    return result


def approve(client: Client, custodian: MemberSecrets, proposal_id: str, *, totp: str) -> Any:
    """Approve a client or allocation proposal, over the digest read and shown here."""
    found = [p for p in open_proposals(client, custodian) if p["proposal"] == proposal_id]
    if not found:
        from tandem.errors import NotFoundError

        raise NotFoundError(f"no open client or allocation proposal {proposal_id}")
    p = found[0]
    kind = "client" if p["kind"] == "client.create" else "allocation"
    env = client.sign(custodian, f"{kind}.approve", {"proposal": proposal_id, "digest": p["digest"]})
    path = (
        f"/v1/books/clients/proposals/{proposal_id}/approve"
        if kind == "client"
        else (f"/v1/books/allocations/{proposal_id}/approve")
    )
    return _post(client, path, {"envelope": env, "totp": totp})


def propose_allocation(
    client: Client, manager: MemberSecrets, *, deposit: str, client_id: str, amount: str
) -> Any:
    env = client.sign(
        manager, "allocation.propose", {"deposit": deposit, "client": client_id, "amount": amount}
    )
    return _post(client, "/v1/books/allocations", {"envelope": env})


def scan(client: Client, member: MemberSecrets) -> Any:
    return _post(client, "/v1/books/scan", {"envelope": client.sign(member, "register.scan", {})})


def reconcile(client: Client, member: MemberSecrets, *, snapshot: dict[str, Any] | None = None) -> Any:
    body: dict[str, Any] = {"envelope": client.sign(member, "reconciliation.run", {})}
    if snapshot is not None:
        body["snapshot"] = snapshot
    return _post(client, "/v1/books/reconciliations", body)


def reconcile_with_progress(
    client: Client,
    member: MemberSecrets,
    *,
    progress: Callable[[int, int | None], None],
    poll_seconds: float = 0.5,
) -> Any:
    """Reconcile against the server's chains as a background job, calling ``progress``
    (addresses read, of how many) while it runs; the signed report when it is done."""
    body = {"envelope": client.sign(member, "reconciliation.run", {}), "background": True}
    job = _post(client, "/v1/books/reconciliations", body)
    return follow_job(client, member, job, progress=progress, poll_seconds=poll_seconds)


def reconciliation_job(client: Client, member: MemberSecrets, job_id: str) -> Any:
    return client.get(member, f"/v1/books/reconciliations/jobs/{job_id}")


def reconciliation_jobs(client: Client, member: MemberSecrets, *, first: int | None = None) -> list[Any]:
    """The background reconciliations, newest first (``first``: only that many)."""
    return client.get_all(member, "/v1/books/reconciliations/jobs", first=first)


def follow_job(
    client: Client,
    member: MemberSecrets,
    job: dict[str, Any],
    *,
    progress: Callable[[int, int | None], None],
    poll_seconds: float = 0.5,
) -> Any:
    """Poll a background reconciliation until it ends: its signed report when done; a
    failed job raises its error, an interrupted one (the server stopped) says so."""
    while True:
        progress(job["done"], job["total"])
        if job["state"] == "done":
            return job["result"]
        if job["state"] == "failed":
            raise RemoteError(job["error"]["code"], job["error"]["message"], 502)
        if job["state"] == "interrupted":
            raise RemoteError("interrupted", job["error"]["message"], 409)
        time.sleep(poll_seconds)
        job = reconciliation_job(client, member, job["job"])


def import_prices(client: Client, member: MemberSecrets, prices: list[dict[str, Any]]) -> Any:
    return _post(
        client, "/v1/books/prices", {"envelope": client.sign(member, "prices.import", {"prices": prices})}
    )


def statements(
    client: Client, member: MemberSecrets, *, period: str, client_id: str | None, custodian: str
) -> Any:
    body: dict[str, Any] = {"period": period, **({"client": client_id} if client_id else {})}
    return _post(
        client,
        "/v1/books/statements",
        {"envelope": client.sign(member, "statement.issue", body), "custodian": custodian},
    )


def broadcast(client: Client, member: MemberSecrets, withdrawal_id: str) -> Any:
    w = client.get(member, f"/v1/withdrawals/{withdrawal_id}")
    env = client.sign(member, "withdrawal.broadcast", {"withdrawal": withdrawal_id, "txid": w["txid"]})
    return _post(client, f"/v1/books/withdrawals/{withdrawal_id}/broadcast", {"envelope": env})


def track(client: Client, member: MemberSecrets, withdrawal_id: str) -> Any:
    env = client.sign(member, "withdrawal.confirm", {"withdrawal": withdrawal_id})
    return _post(client, f"/v1/books/withdrawals/{withdrawal_id}/track", {"envelope": env})
