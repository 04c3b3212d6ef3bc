"""The member's side of membership: genesis, the second factor and membership proposals.

A TOTP seed is sealed to the service key the pinned genesis names, never to one a
response offers. A proposal is approved over the digest recomputed here from the content
the member was shown, never over a digest the server sends.
"""

from __future__ import annotations

from typing import Any

from tandem.client.pin import PinnedDeployment
from tandem.client.transport import CLAIM_HEADER, Transport
from tandem.core import totp as totp_core
from tandem.core.canonical import digest_hex, domain_bytes
from tandem.core.identity import IdentityCard, MemberSecrets, b64
from tandem.core.membership import GENESIS_FORMAT
from tandem.core.service_key import seal_to
from tandem.errors import InputError, PinError, VerificationError

__all__ = ["Members", "draft_genesis", "proposal_digest", "sign_genesis"]


# --- genesis, offline ------------------------------------------------------------------------


def draft_genesis(
    *,
    deployment: str,
    entity: str,
    created_at: int,
    service: dict[str, Any],
    cards: list[IdentityCard],
    policy: dict[str, Any] | None = None,
    address_book: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    terms: dict[str, Any] = {}
    if policy is not None:
        terms["policy"] = policy
    if address_book is not None:
        terms["address_book"] = address_book
    return {
        **terms,
        "format": GENESIS_FORMAT,
        "deployment": deployment,
        "entity": entity,
        "created_at": created_at,
        "service": {
            "sign_public": service["sign_public"],
            "seal_public": service["seal_public"],
        },
        "members": [c.to_json() for c in cards],
    }


def sign_genesis(member: MemberSecrets, doc: dict[str, Any]) -> tuple[str, str]:
    return member.member_id, b64(member.sign(domain_bytes("genesis", doc)))


def proposal_digest(proposal: dict[str, Any]) -> str:
    """Recomputed locally from the content shown, never taken from the server."""
    return digest_hex(
        "proposal",
        {
            "id": proposal["id"],
            "kind": proposal["kind"],
            "body": proposal["body"],
            "proposer": proposal["proposer"],
        },
    )


class Members:
    """``client.members``: genesis, TOTP enrolment and membership proposals."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._client.request("POST", path, json_body=body)
        return result

    # --- genesis -------------------------------------------------------------------------

    def submit_genesis(
        self, doc: dict[str, Any], signatures: dict[str, str], *, claim_token: str | None = None
    ) -> dict[str, Any]:
        """Post genesis with the one-time claim token ``tandem init`` printed. The
        genesis submitted here is this client's own copy: unless it holds a pin already,
        the client pins it (after checking the server accepted that very document)."""
        client = self._client
        local = PinnedDeployment.from_genesis(doc)
        headers = {CLAIM_HEADER: claim_token} if claim_token is not None else None
        result: dict[str, Any] = client.request(
            "POST",
            "/v1/genesis",
            json_body={"genesis": doc, "signatures": signatures},
            headers=headers,
        )
        if result.get("genesis_hash") != local.genesis_hash:
            raise PinError("the server answered with another genesis hash than the document posted")
        if client.pin is None:
            client.pin = local
        client.deployment(refresh=True)
        return result

    # --- second factor -------------------------------------------------------------------

    def enrol_totp(
        self,
        member: MemberSecrets,
        *,
        old_code: str | None = None,
        secret: str | None = None,
        confirm_code: str | None = None,
    ) -> dict[str, Any]:
        """Register ``secret`` (default: the member's own seed) as the member's second
        factor. ``confirm_code`` is a code of that seed as the authenticator shows it;
        without one it is computed from the seed (scripts, tests)."""
        client = self._client
        seed = secret if secret is not None else member.totp_secret
        if not seed:
            raise InputError("no TOTP seed to enrol: this keystore does not keep one")
        # The seed is sealed to the key genesis names, never to one a response offers.
        sealed = seal_to(client.pinned(member).seal_public, seed.encode("ascii"))
        body = {
            "envelope": client.sign(member, "member.totp_enrol", {"sealed_secret": b64(sealed)}),
            "confirm_code": confirm_code
            if confirm_code is not None
            else totp_core.current_code(seed, client.clock()),
        }
        if old_code is not None:
            body["totp"] = old_code
        return self._post("/v1/totp/enrol", body)

    def totp_code(self, member: MemberSecrets) -> str:
        """The member's current code from the keystore seed (scripts and demos)."""
        if not member.holds_totp_seed:
            raise InputError(
                "this keystore does not keep your TOTP seed (your authenticator app holds it): "
                "type the code it shows, or pass it with --totp"
            )
        return totp_core.current_code(member.totp_secret, self._client.clock())

    # --- membership proposals ------------------------------------------------------------

    def _propose(self, member: MemberSecrets, body: dict[str, Any]) -> dict[str, Any]:
        env = self._client.sign(member, "member.propose", body)
        return self._post("/v1/members/proposals", {"envelope": env})

    def propose_add(self, member: MemberSecrets, card: IdentityCard) -> dict[str, Any]:
        return self._propose(member, {"change": "add", "card": card.to_json()})

    def propose_remove(self, member: MemberSecrets, member_id: str) -> dict[str, Any]:
        return self._propose(member, {"change": "remove", "member": member_id})

    def propose_rekey(self, member: MemberSecrets, member_id: str, card: IdentityCard) -> dict[str, Any]:
        return self._propose(member, {"change": "rekey", "member": member_id, "card": card.to_json()})

    def proposal(self, member: MemberSecrets, proposal_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, f"/v1/proposals/{proposal_id}")
        return result

    def proposals(
        self, member: MemberSecrets, *, status: str | None = None, first: int | None = None
    ) -> list[dict[str, Any]]:
        """Every proposal (with ``status``, only those; with ``first``, only that many)."""
        params = {"status": status} if status else {}
        rows: list[dict[str, Any]] = self._client.get_all(member, "/v1/proposals", first=first, **params)
        return rows

    def approve(
        self,
        member: MemberSecrets,
        proposal_id: str,
        *,
        totp: str,
        proposal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sign the digest of ``proposal``, the proposal as the member was shown it (one
        fetch here without it): never of a second fetch that could differ."""
        if proposal is None:
            proposal = self.proposal(member, proposal_id)
        if proposal.get("id") != proposal_id:
            raise VerificationError(f"the proposal reviewed is {proposal.get('id')!r}, not {proposal_id}")
        digest = proposal_digest(proposal)
        env = self._client.sign(member, "proposal.approve", {"proposal": proposal_id, "digest": digest})
        return self._post(f"/v1/proposals/{proposal_id}/approve", {"envelope": env, "totp": totp})

    def reject(self, member: MemberSecrets, proposal_id: str, *, reason: str) -> dict[str, Any]:
        proposal = self.proposal(member, proposal_id)
        env = self._client.sign(
            member,
            "proposal.reject",
            {"proposal": proposal_id, "digest": proposal_digest(proposal), "reason": reason},
        )
        return self._post(f"/v1/proposals/{proposal_id}/reject", {"envelope": env})

    def veto(self, member: MemberSecrets, proposal_id: str, *, reason: str = "") -> dict[str, Any]:
        """Stop an approved change during its delay (either side)."""
        env = self._client.sign(member, "proposal.veto", {"proposal": proposal_id, "reason": reason})
        return self._post(f"/v1/proposals/{proposal_id}/veto", {"envelope": env})

    def apply(self, member: MemberSecrets, proposal_id: str) -> dict[str, Any]:
        """Carry out an approved membership change once its delay has passed."""
        env = self._client.sign(member, "proposal.apply", {"proposal": proposal_id})
        return self._post(f"/v1/proposals/{proposal_id}/apply", {"envelope": env})
