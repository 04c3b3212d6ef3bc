"""The member's side of proof of ownership: issue a challenge, re-seal a share to the
challenge's operation keys, fetch the bundle and check it locally.

A member's client re-seals its share only to an operation key that Tandem's service key
signed *for this challenge and this key set* (the operation's purpose names the
challenge), so a share cannot be redirected to another use of the key set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from tandem.client.transport import Transport
from tandem.core import proofs as core
from tandem.core import split
from tandem.core.identity import MemberSecrets
from tandem.errors import InputError, VerificationError


class Proofs:
    """``client.proofs``: challenges, contributions and the bundle."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def issue(
        self,
        member: MemberSecrets,
        *,
        statement: str,
        scope: Mapping[str, Any],
        expires_at: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """Issue a challenge (custodian or auditor). ``nonce`` defaults to 128 random bits
        chosen by the server; an auditor may bring its own (e.g. a recent block hash)."""
        body: dict[str, Any] = {"statement": statement, "scope": dict(scope)}
        if expires_at is not None:
            body["expires_at"] = expires_at
        if nonce is not None:
            body["nonce"] = nonce
        env = self._client.sign(member, "proof.challenge", body)
        result: dict[str, Any] = self._client.request(
            "POST", "/v1/proofs/challenges", json_body={"envelope": env}
        )
        return result

    def get(self, member: MemberSecrets, challenge_id: str) -> dict[str, Any]:
        return self._client.get(member, f"/v1/proofs/{challenge_id}")  # type: ignore[no-any-return]

    def renew_operations(self, member: MemberSecrets, challenge_id: str) -> dict[str, Any]:
        env = self._client.sign(member, "proof.operations", {"challenge": challenge_id})
        result: dict[str, Any] = self._client.request(
            "POST", f"/v1/proofs/{challenge_id}/operations", json_body={"envelope": env}
        )
        return result

    def reseal_shares(self, member: MemberSecrets, view: Mapping[str, Any]) -> list[dict[str, str]]:
        """This member's share of every key set of a challenge, re-sealed to its operation key
        after checking the key was signed by the pinned service key for this challenge and
        key set, and that the key set is the one the member countersigned. Every key set is
        checked before the first share is resealed."""
        pin = self._client.pinned(member)
        challenge_id = view["id"]
        shares = []
        for entry in view["keysets"]:
            if entry.get("operation") is None:
                raise InputError(
                    f"key set {entry['keyset']} has no live operation key; "
                    "renew the challenge's operations first"
                )
            statement = pin.verify_operation(entry["operation"])
            if statement["purpose"] != f"proof:{challenge_id}" or statement["keyset"] != entry["keyset"]:
                raise InputError(
                    f"the operation key offered for key set {entry['keyset']} is not "
                    f"for this challenge ({statement['purpose']}, {statement['keyset']})"
                )
            if entry.get("sealed") is None:
                raise InputError(f"the server did not send key set {entry['keyset']}'s sealed document")
            pin.check_keyset(entry["sealed"])
        for entry in view["keysets"]:
            _side, sealed = self._client.reseal_for_operation(
                member,
                entry["sealed"],
                entry["operation"],
                keyset_id=entry["keyset"],
                purpose=f"proof:{challenge_id}",
            )
            shares.append(
                {
                    "keyset": entry["keyset"],
                    "operation": split.operation_id(entry["operation"]),
                    "sealed_share": sealed,
                }
            )
        return shares

    def contribute(
        self,
        member: MemberSecrets,
        challenge_id: str,
        *,
        totp: str | None = None,
        view: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Re-seal this member's shares for every key set of the challenge and send them in
        one ``proof.contribute`` action (one TOTP code covers them all).

        ``view`` is the challenge as the member was shown it: the shares go to the key sets
        and operations of that very object, never of a second fetch. Without it, one fetch."""
        if view is None:
            view = self.get(member, challenge_id)
        if view.get("id") != challenge_id:
            raise VerificationError(f"the challenge reviewed is {view.get('id')!r}, not {challenge_id}")
        shares = self.reseal_shares(member, view)
        if len(shares) == 1:
            body: dict[str, Any] = {"challenge": challenge_id, **shares[0]}
        else:
            body = {"challenge": challenge_id, "shares": shares}
        payload: dict[str, Any] = {"envelope": self._client.sign(member, "proof.contribute", body)}
        if totp is not None:
            payload["totp"] = totp
        result: dict[str, Any] = self._client.request(
            "POST", f"/v1/proofs/{challenge_id}/contributions", json_body=payload
        )
        return result

    def bundle(self, member: MemberSecrets, challenge_id: str) -> tuple[bytes, dict[str, Any]]:
        """The bundle's canonical bytes (what to hand the auditor) and the parsed document;
        refuses unless the bytes hash to the bundle hash the challenge records."""
        doc = self._client.get(member, f"/v1/proofs/{challenge_id}/bundle")
        data = core.bundle_bytes(doc)
        bundle = core.parse_bundle(data)
        recorded = self.get(member, challenge_id)["bundle_hash"]
        if hashlib.sha256(data).hexdigest() != recorded:
            raise VerificationError("the bundle served does not hash to the bundle hash recorded")
        return data, bundle

    def run(
        self,
        *,
        issuer: MemberSecrets,
        manager: MemberSecrets,
        custodian: MemberSecrets,
        scope: Mapping[str, Any],
        code: str | Callable[[], str],
        statement: str = "Proof of ownership requested for the periodic statement of position",
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """The whole round for a demo: challenge, both contributions, bundle, local check.
        ``code`` is the custodian's TOTP code, or a function returning a fresh one."""
        view = self.issue(issuer, statement=statement, scope=scope, nonce=nonce)
        self.contribute(manager, view["id"])
        totp = code() if callable(code) else code
        self.contribute(custodian, view["id"], totp=totp)
        _data, bundle = self.bundle(issuer, view["id"])
        core.verify_bundle(bundle, nonce=view["nonce"]).require()
        return bundle

    def list(
        self, member: MemberSecrets, *, status: str | None = None, first: int | None = None
    ) -> list[dict[str, Any]]:
        """Every challenge (with ``status``, only those; with ``first``, only that many), oldest first."""
        params = {"status": status} if status else {}
        return self._client.get_all(member, "/v1/proofs", first=first, **params)
