"""The member's side of the books: sign and send client and allocation proposals and
approvals, scans, reconciliations, price imports and statements; read the register."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tandem.client.transport import Transport
from tandem.core.identity import MemberSecrets
from tandem.errors import RemoteError


class Books:
    """``client.books``: the register, reconciliations, prices and statements."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._client.request("POST", path, json_body=body)

    def propose_client(self, manager: MemberSecrets, *, client_id: str, name: str, segregation: str) -> Any:
        env = self._client.sign(
            manager, "client.propose", {"id": client_id, "name": name, "segregation": segregation}
        )
        return self._post("/v1/books/clients", {"envelope": env})

    def open_proposals(self, member: MemberSecrets) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._client.get_all(member, "/v1/books/proposals")
        return result

    def approve(self, custodian: MemberSecrets, proposal_id: str, *, totp: str) -> Any:
        """Approve a client or allocation proposal, over the digest read and shown here."""
        found = [p for p in self.open_proposals(custodian) if p["proposal"] == proposal_id]
        if not found:
            from tandem.errors import NotFoundError

            raise NotFoundError(f"no open client or allocation proposal {proposal_id}")
        p = found[0]
        kind = "client" if p["kind"] == "client.create" else "allocation"
        env = self._client.sign(
            custodian, f"{kind}.approve", {"proposal": proposal_id, "digest": p["digest"]}
        )
        path = (
            f"/v1/books/clients/proposals/{proposal_id}/approve"
            if kind == "client"
            else (f"/v1/books/allocations/{proposal_id}/approve")
        )
        return self._post(path, {"envelope": env, "totp": totp})

    def propose_allocation(self, manager: MemberSecrets, *, deposit: str, client_id: str, amount: str) -> Any:
        env = self._client.sign(
            manager, "allocation.propose", {"deposit": deposit, "client": client_id, "amount": amount}
        )
        return self._post("/v1/books/allocations", {"envelope": env})

    def scan(self, member: MemberSecrets) -> Any:
        return self._post("/v1/books/scan", {"envelope": self._client.sign(member, "register.scan", {})})

    def reconcile(self, member: MemberSecrets, *, snapshot: dict[str, Any] | None = None) -> Any:
        body: dict[str, Any] = {"envelope": self._client.sign(member, "reconciliation.run", {})}
        if snapshot is not None:
            body["snapshot"] = snapshot
        return self._post("/v1/books/reconciliations", body)

    def reconcile_with_progress(
        self,
        member: MemberSecrets,
        *,
        progress: Callable[[int, int | None], None],
        poll_seconds: float = 0.5,
    ) -> Any:
        """Reconcile against the server's chains as a background job, calling ``progress``
        (addresses read, of how many) while it runs; the signed report when it is done."""
        body = {"envelope": self._client.sign(member, "reconciliation.run", {}), "background": True}
        job = self._post("/v1/books/reconciliations", body)
        return self.follow_job(member, job, progress=progress, poll_seconds=poll_seconds)

    def reconciliation_job(self, member: MemberSecrets, job_id: str) -> Any:
        return self._client.get(member, f"/v1/books/reconciliations/jobs/{job_id}")

    def reconciliation_jobs(self, member: MemberSecrets, *, first: int | None = None) -> list[Any]:
        """The background reconciliations, newest first (``first``: only that many)."""
        return self._client.get_all(member, "/v1/books/reconciliations/jobs", first=first)

    def follow_job(
        self,
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
            job = self.reconciliation_job(member, job["job"])

    def import_prices(self, member: MemberSecrets, prices: list[dict[str, Any]]) -> Any:
        return self._post(
            "/v1/books/prices", {"envelope": self._client.sign(member, "prices.import", {"prices": prices})}
        )

    def statements(self, member: MemberSecrets, *, period: str, client_id: str | None, custodian: str) -> Any:
        body: dict[str, Any] = {"period": period, **({"client": client_id} if client_id else {})}
        return self._post(
            "/v1/books/statements",
            {"envelope": self._client.sign(member, "statement.issue", body), "custodian": custodian},
        )

    def broadcast(self, member: MemberSecrets, withdrawal_id: str) -> Any:
        w = self._client.get(member, f"/v1/withdrawals/{withdrawal_id}")
        env = self._client.sign(
            member, "withdrawal.broadcast", {"withdrawal": withdrawal_id, "txid": w["txid"]}
        )
        return self._post(f"/v1/books/withdrawals/{withdrawal_id}/broadcast", {"envelope": env})

    def track(self, member: MemberSecrets, withdrawal_id: str) -> Any:
        env = self._client.sign(member, "withdrawal.confirm", {"withdrawal": withdrawal_id})
        return self._post(f"/v1/books/withdrawals/{withdrawal_id}/track", {"envelope": env})
