"""The member's side of the policy and the address book: propose changes, veto one
during its delay, read the policy in force and what it would decide."""

from __future__ import annotations

from typing import Any

from tandem.client.transport import Transport
from tandem.core.identity import MemberSecrets


class Policy:
    """``client.policy``: the policy and the address book."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._client.request("POST", path, json_body=body)
        return result

    def _get_doc(self, member: MemberSecrets, path: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, path, **params)
        return result

    def propose(self, manager: MemberSecrets, policy: dict[str, Any]) -> dict[str, Any]:
        env = self._client.sign(manager, "policy.propose", {"policy": policy})
        return self._post("/v1/policy/proposals", {"envelope": env})

    def propose_address(
        self,
        manager: MemberSecrets,
        *,
        chain: str,
        network: str,
        address: str,
        label: str,
        asset: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "change": "add",
            "chain": chain,
            "network": network,
            "address": address,
            "label": label,
        }
        if asset is not None:
            body["asset"] = asset
        env = self._client.sign(manager, "addressbook.propose", body)
        return self._post("/v1/addressbook/proposals", {"envelope": env})

    def propose_address_removal(self, manager: MemberSecrets, entry_id: str) -> dict[str, Any]:
        env = self._client.sign(manager, "addressbook.propose", {"change": "remove", "entry": entry_id})
        return self._post("/v1/addressbook/proposals", {"envelope": env})

    def veto(self, custodian: MemberSecrets, proposal_id: str, *, reason: str = "") -> dict[str, Any]:
        env = self._client.sign(custodian, "proposal.veto", {"proposal": proposal_id, "reason": reason})
        return self._post(
            f"/v1/policy/proposals/{proposal_id}/veto",
            {"envelope": env},
        )

    def show(self, member: MemberSecrets) -> dict[str, Any]:
        return self._get_doc(member, "/v1/policy")

    def explain(self, member: MemberSecrets, **params: str) -> dict[str, Any]:
        return self._get_doc(member, "/v1/policy/explain", **params)

    def address_book(self, member: MemberSecrets, *, first: int | None = None) -> list[dict[str, Any]]:
        """Every address-book entry (with ``first``, only that many), following the list's pages."""
        rows: list[dict[str, Any]] = self._client.get_all(member, "/v1/addressbook", first=first)
        return rows
