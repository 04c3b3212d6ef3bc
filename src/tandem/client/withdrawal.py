"""The member's side of withdrawals and offline bundles (the policy: ``client/policy.py``).

The approving client never takes the server's word for what it approves: it decodes the
raw unsigned transaction with the chain module itself, compares it field by field with
the intent, rebuilds it from the intent, recomputes both digests, checks the signing key
is the wallet's, and only then signs ``(request id, intent hash, tx digest, policy
version, expiry)``. Shares are resealed here, through ``Transport.reseal_for_operation``:
only for a key set the member countersigned, only to an operation key signed by the
service key its genesis pin names (or to the offline signer's own key).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tandem.client.transport import Transport
from tandem.core import split
from tandem.core import withdrawal as wcore
from tandem.core.chains import psbt as bip174
from tandem.core.identity import IdentityCard, MemberSecrets, b64
from tandem.core.policy import DEFAULT_FEE_WARN_BPS as FEE_WARN_BPS
from tandem.errors import InputError, VerificationError

# --- reviewing, offline: nothing here talks to the server ---------------------------------


@dataclass(frozen=True)
class Review:
    """What the approving client established itself from the raw request."""

    intent_hash: str
    tx_digest: str
    fingerprint: str
    decoded: dict[str, Any]
    # Fee, rate, share of the amount and any warning, computed here from the raw bytes.
    fee: dict[str, Any] | None = None


def review(view: dict[str, Any]) -> Review:
    """Decode and check a request locally; raises VerificationError on any mismatch.

    Nothing here trusts the server's digests or decoded view: both digests are
    recomputed from the intent and the raw bytes, and then compared with the server's.
    """
    intent = wcore.require_normal_intent(view["intent"])
    if (intent.wallet, intent.chain, intent.network) != (view["wallet"], view["chain"], view["network"]):
        raise VerificationError("the request's wallet or chain differs from its intent")
    public_key = bytes.fromhex(view["public_key"])
    keyset = split.SealedKeyset.from_dict(view["keyset"])
    if keyset.keyset_id != intent.wallet or keyset.key(view["key_id"]).public_key != public_key:
        raise VerificationError("the signing key shown is not the wallet's key")
    decoded = wcore.check_transaction(
        intent, public_key=public_key, unsigned=bytes.fromhex(view["unsigned_tx"]), prevouts=view["prevouts"]
    )
    ih = wcore.intent_hash(view["intent"])
    td = wcore.tx_digest(
        chain=intent.chain,
        network=intent.network,
        public_key=view["public_key"],
        unsigned_tx=view["unsigned_tx"],
        prevouts=view["prevouts"],
    )
    if ih != view["intent_hash"] or td != view["tx_digest"]:
        raise VerificationError("the server's digests differ from the ones computed here")
    # The server's threshold may only make the warning stricter, never silence it.
    warn_bps = min(FEE_WARN_BPS, _int_or(view.get("decision", {}).get("fee_warn_bps"), FEE_WARN_BPS))
    fee = wcore.fee_review(intent, decoded, warn_bps=warn_bps)
    return Review(intent_hash=ih, tx_digest=td, fingerprint=wcore.fingerprint(ih), decoded=decoded, fee=fee)


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def withdrawal_psbt(view: dict[str, Any]) -> bytes:
    """The request's unsigned Bitcoin transaction as a BIP-174 PSBT, for a standard wallet.

    Made here from what :func:`review` checked: the unsigned bytes and, for each input,
    its full previous transaction from the signed intent (``NON_WITNESS_UTXO``) and the
    output it spends (``WITNESS_UTXO``), so a wallet shows the same amounts and fee.
    """
    if view.get("chain") != "bitcoin":
        raise InputError("a PSBT is for Bitcoin withdrawals")
    review(view)
    intent = wcore.require_normal_intent(view["intent"])
    made = bip174.psbt_for_unsigned(bytes.fromhex(view["unsigned_tx"]), [u.prev_tx for u in intent.utxos])
    return made.serialize()


def add_share(bundle: dict[str, Any], member: MemberSecrets, *, now: int) -> dict[str, Any]:
    """Reseal this member's share into the bundle, after verifying everything in it."""
    verified = wcore.verify_bundle(bundle, now=now)
    card = IdentityCard.from_json(bundle["signer"])
    keyset = split.SealedKeyset.from_dict(bundle["keyset"])
    side, box = keyset.sealed_share_for(member.member_id)
    resealed = split.reseal_share(
        box,
        bytes(member.seal_private_key),
        card.seal_public,
        keyset_id=keyset.keyset_id,
        side=side,
        operation_id=wcore.offline_operation_id(verified.withdrawal["id"]),
        expected_commitment=keyset.commitments.get(side),
    )
    shares = dict(bundle.get("shares") or {})
    shares[side] = {"member": member.member_id, "sealed": b64(resealed)}
    return {**bundle, "shares": shares}


def offline_sign(
    bundle: dict[str, Any], signer: MemberSecrets, *, now: int, genesis_hash: str | None = None
) -> dict[str, Any]:
    """No server, no database: verify the bundle and sign with the signer's X25519 key."""
    return wcore.offline_sign(bundle, bytes(signer.seal_private_key), now=now, genesis_hash_pin=genesis_hash)


def released_record(created: dict[str, Any], released: dict[str, Any]) -> dict[str, Any]:
    """What a released withdrawal leaves for the books: its ids, intent and signed bytes."""
    return {
        "id": created["id"],
        "chain": created["chain"],
        "network": created["network"],
        "from_address": created["intent"]["from"],
        "intent": created["intent"],
        "fingerprint": created["fingerprint"],
        "raw_tx": released["signed_tx"],
        "txid": released["txid"],
        "prevouts": created["prevouts"] if created["chain"] == "bitcoin" else [],
    }


# --- the flow -----------------------------------------------------------------------------


class Withdrawals:
    """``client.withdrawals``: request, review and approve, release, and the offline bundle."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def _post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._client.request("POST", path, json_body=body, headers=headers)
        return result

    def _get_doc(self, member: MemberSecrets, path: str, **params: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, path, **params)
        return result

    def prepare(self, manager: MemberSecrets, keyset_id: str) -> dict[str, Any]:
        env = self._client.sign(manager, "withdrawal.prepare", {"keyset": keyset_id})
        return self._post("/v1/withdrawals/operations", {"envelope": env})

    def create(self, manager: MemberSecrets, intent: dict[str, Any]) -> dict[str, Any]:
        """Prepare an operation, reseal the manager's share to it, sign and send the intent.

        ``from`` may be left out: the wallet's address on the intent's chain and network is
        filled in. The intent is normalised before it is signed.
        """
        if "wallet" not in intent:
            raise InputError("intent.wallet (the key set id) is required")
        prepared = self.prepare(manager, intent["wallet"])
        doc = dict(intent)
        if "from" not in doc:
            mine = [
                a["address"]
                for a in prepared["addresses"]
                if a["chain"] == doc.get("chain") and a["network"] == doc.get("network")
            ]
            if len(mine) != 1:
                raise InputError(f"wallet has {len(mine)} addresses on that chain/network; give intent.from")
            doc["from"] = mine[0]
        if doc.get("chain") in ("ethereum", "bitcoin") and doc["chain"] not in doc:
            # Nonce and fees, or inputs and fee rate, left out: the server's chain backend
            # suggests them (chain_not_configured when it has none: give them by hand).
            params = {k: doc.get(k) for k in ("wallet", "chain", "network", "asset")}
            doc[doc["chain"]] = self._get_doc(manager, "/v1/books/suggest", **params)[doc["chain"]]
        given = doc.get("solana")
        if doc.get("chain") == "solana" and (
            given is None or (isinstance(given, dict) and "recent_blockhash" not in given)
        ):
            # A recent blockhash (or the named nonce account's stored nonce), the mint's
            # decimals and whether the destination's token account exists, from the chain.
            # {"priority": true} asks for a priority fee: a compute-unit price from the
            # cluster's recent prioritization fees, at the limit the transfer needs.
            params = {k: doc.get(k) for k in ("wallet", "chain", "network", "asset", "destination")}
            asked = dict(given or {})
            priority = asked.pop("priority", False)
            if not isinstance(priority, bool):
                raise InputError("intent.solana.priority must be true or false")
            if priority:
                params["priority"] = "true"
            if asked.get("nonce_account") is not None:
                params["nonce_account"] = asked["nonce_account"]
            got = self._get_doc(manager, "/v1/books/suggest", **params)
            doc["solana"] = {**got["solana"], **asked}
        normal = wcore.normalize_intent(doc)
        _side, sealed = self._client.reseal_for_operation(
            manager, prepared["keyset"], prepared["operation"], keyset_id=intent["wallet"]
        )
        env = self._client.sign(
            manager,
            "withdrawal.create",
            {
                "intent": normal,
                "operation": prepared["operation"],
                "share_digest": wcore.share_digest(sealed),
            },
        )
        return self._post(
            "/v1/withdrawals",
            {"envelope": env, "sealed_share": sealed},
        )

    def get(self, member: MemberSecrets, withdrawal_id: str) -> dict[str, Any]:
        return self._get_doc(member, f"/v1/withdrawals/{withdrawal_id}")

    def approve(
        self,
        member: MemberSecrets,
        withdrawal_id: str,
        *,
        totp: str,
        expected_fingerprint: str | None = None,
        view: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Review locally, reseal this member's share to the request's operation, sign, send.

        ``view`` is the request as the member was shown it: the approval is built from that
        very object, never from a second fetch that could differ. Without it, the request is
        fetched once here. The share goes with the approval only while the operation holds
        none of this member's side (a stored share is never replaced).
        """
        payload = {"totp": totp, **self.signed_approval(member, withdrawal_id, expected_fingerprint, view)}
        return self._post(f"/v1/withdrawals/{withdrawal_id}/approve", payload)

    def signed_approval(
        self,
        member: MemberSecrets,
        withdrawal_id: str,
        expected_fingerprint: str | None = None,
        view: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One approval as it is sent, without its TOTP code: ``{envelope[, sealed_share]}``,
        the signed ``withdrawal.approve`` built from the request reviewed locally."""
        if view is None:
            view = self.get(member, withdrawal_id)
        if view.get("id") != withdrawal_id:
            raise VerificationError(f"the request reviewed is {view.get('id')!r}, not {withdrawal_id}")
        checked = review(view)
        if expected_fingerprint is not None and expected_fingerprint != checked.fingerprint:
            raise VerificationError(
                f"fingerprint is {checked.fingerprint}, the requester read out {expected_fingerprint}"
            )
        now = self._client.clock()
        expires_at = min(view["expires_at"], now + view["decision"]["approval_ttl_seconds"])
        body = wcore.approval_body(
            withdrawal=withdrawal_id,
            intent_hash_hex=checked.intent_hash,
            tx_digest_hex=checked.tx_digest,
            policy_version=view["policy_version"],
            expires_at=expires_at,
        )
        item: dict[str, Any] = {}
        if member.role.value not in view.get("shares", ()):
            _side, sealed = self._client.reseal_for_operation(
                member, view["keyset"], view["operation"], keyset_id=view["wallet"]
            )
            body.update(
                operation=split.operation_id(view["operation"]), share_digest=wcore.share_digest(sealed)
            )
            item["sealed_share"] = sealed
        item["envelope"] = self._client.sign(member, "withdrawal.approve", body)
        return item

    def approve_many(
        self,
        member: MemberSecrets,
        views: list[dict[str, Any]],
        *,
        totp: str,
        expected_fingerprints: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Approve several reviewed requests with one TOTP code (``POST /v1/withdrawals/approvals``).

        Each approval is signed exactly as :meth:`approve` signs it, from the very
        view the member was shown (``views``); a signed ``withdrawal.batch_approve`` names them
        by withdrawal id and nonce. The server checks the code once and answers per item:
        ``{approved, refused, results: [{withdrawal, outcome, status | code, message}]}``.
        """
        fingerprints = expected_fingerprints or {}
        items = [self.signed_approval(member, v["id"], fingerprints.get(v["id"]), v) for v in views]
        batch = self._client.sign(
            member,
            "withdrawal.batch_approve",
            {
                "withdrawals": [v["id"] for v in views],
                "nonces": [i["envelope"]["action"]["nonce"] for i in items],
            },
        )
        return self._post("/v1/withdrawals/approvals", {"envelope": batch, "totp": totp, "items": items})

    def _close(
        self, member: MemberSecrets, withdrawal_id: str, event: str, reason: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"withdrawal": withdrawal_id}
        if reason:
            body["reason"] = reason
        env = self._client.sign(member, f"withdrawal.{event}", body)
        return self._post(f"/v1/withdrawals/{withdrawal_id}/{event}", {"envelope": env})

    def reject(self, member: MemberSecrets, withdrawal_id: str, *, reason: str) -> dict[str, Any]:
        return self._close(member, withdrawal_id, "reject", reason)

    def cancel(
        self, member: MemberSecrets, withdrawal_id: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        return self._close(member, withdrawal_id, "cancel", reason)

    def veto(self, member: MemberSecrets, withdrawal_id: str, *, reason: str | None = None) -> dict[str, Any]:
        return self._close(member, withdrawal_id, "veto", reason)

    def renew_operation(self, member: MemberSecrets, withdrawal_id: str) -> dict[str, Any]:
        """Ask for a new operation key (the signer lost the old one, e.g. at a restart)."""
        env = self._client.sign(member, "withdrawal.renew", {"withdrawal": withdrawal_id})
        return self._post(f"/v1/withdrawals/{withdrawal_id}/operation", {"envelope": env})

    def contribute_share(
        self, member: MemberSecrets, withdrawal_id: str, *, totp: str | None = None
    ) -> dict[str, Any]:
        """Reseal this member's share to the request's current operation key and send it
        (a custodian's with its TOTP code)."""
        view = self.get(member, withdrawal_id)
        review(view)
        _side, sealed = self._client.reseal_for_operation(
            member, view["keyset"], view["operation"], keyset_id=view["wallet"]
        )
        operation = split.operation_id(view["operation"])
        env = self._client.sign(
            member,
            "withdrawal.contribute",
            {"withdrawal": withdrawal_id, "operation": operation, "share_digest": wcore.share_digest(sealed)},
        )
        payload: dict[str, Any] = {"envelope": env, "sealed_share": sealed}
        if totp is not None:
            payload["totp"] = totp
        return self._post(f"/v1/withdrawals/{withdrawal_id}/shares", payload)

    def release_envelope(self, member: MemberSecrets, withdrawal_id: str) -> dict[str, Any]:
        return self._client.sign(member, "withdrawal.release", {"withdrawal": withdrawal_id})

    def release(
        self,
        member: MemberSecrets,
        withdrawal_id: str,
        *,
        idempotency_key: str | None = None,
        envelope: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Release; pass the same ``idempotency_key`` and ``envelope`` to retry safely."""
        env = envelope or self.release_envelope(member, withdrawal_id)
        return self._post(
            f"/v1/withdrawals/{withdrawal_id}/release",
            {"envelope": env},
            headers={"Idempotency-Key": idempotency_key or secrets.token_hex(16)},
        )

    def record_broadcast(self, member: MemberSecrets, withdrawal_id: str, *, txid: str) -> dict[str, Any]:
        """Record that the released transaction went out (its txid must be the released one)."""
        env = self._client.sign(member, "withdrawal.broadcast", {"withdrawal": withdrawal_id, "txid": txid})
        return self._post(f"/v1/withdrawals/{withdrawal_id}/broadcast", {"envelope": env})

    def confirm(self, member: MemberSecrets, withdrawal_id: str) -> dict[str, Any]:
        env = self._client.sign(member, "withdrawal.confirm", {"withdrawal": withdrawal_id})
        return self._post(f"/v1/withdrawals/{withdrawal_id}/confirm", {"envelope": env})

    def abandon(self, member: MemberSecrets, withdrawal_id: str, *, reason: str) -> dict[str, Any]:
        """Record that the released transaction will never be broadcast; frees its nonce."""
        env = self._client.sign(member, "withdrawal.abandon", {"withdrawal": withdrawal_id, "reason": reason})
        return self._post(f"/v1/withdrawals/{withdrawal_id}/abandon", {"envelope": env})

    def export_bundle(
        self, member: MemberSecrets, withdrawal_id: str, signer_card: IdentityCard
    ) -> dict[str, Any]:
        """Fetch the bundle, check it offline-style, and add this member's share, resealed to the
        offline signer's X25519 key and bound to this withdrawal."""
        bundle = self._client.get(member, f"/v1/withdrawals/{withdrawal_id}/bundle")
        self._client.pinned(member).check_keyset(bundle["keyset"])
        bundle["signer"] = signer_card.to_json()
        return add_share(bundle, member, now=self._client.clock())

    def import_result(self, member: MemberSecrets, result: dict[str, Any]) -> dict[str, Any]:
        if result.get("format") != wcore.RESULT_FORMAT:
            raise InputError(f"not a {wcore.RESULT_FORMAT} document")
        wid = result["withdrawal"]
        env = self._client.sign(
            member, "withdrawal.import", {"withdrawal": wid, "signed_tx": result["signed_tx"]}
        )
        return self._post(
            f"/v1/withdrawals/{wid}/import",
            {"envelope": env},
        )

    def run(
        self,
        *,
        manager: MemberSecrets,
        custodians: list[MemberSecrets],
        keyset_id: str,
        intent: dict[str, Any],
        code: Callable[[MemberSecrets], str],
    ) -> dict[str, Any]:
        """Create, approve (custodians in order until the policy is satisfied), release.

        ``code(member)`` returns a fresh TOTP code for that member. Returns chain, network,
        from_address, intent, raw_tx, txid and (Bitcoin) the prevouts with their scripts.
        """
        created = self.create(manager, {**intent, "wallet": keyset_id})
        wid = created["id"]
        status = created["status"]
        for custodian in custodians:
            if status == wcore.APPROVED:
                break
            status = self.approve(custodian, wid, totp=code(custodian))["status"]
        if status != wcore.APPROVED:
            raise InputError(f"withdrawal {wid} is {status} after every custodian approved")
        return released_record(created, self.release(custodians[0], wid))

    def list(
        self, member: MemberSecrets, *, status: str | None = None, first: int | None = None
    ) -> list[dict[str, Any]]:
        """Every withdrawal (with ``status``, only those; with ``first``, only that many),
        following the list's pages."""
        params = {"status": status} if status else {}
        rows: list[dict[str, Any]] = self._client.get_all(member, "/v1/withdrawals", first=first, **params)
        return rows
