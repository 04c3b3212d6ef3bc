"""Batch approval: one TOTP code for several reviewed withdrawals.

The member's client signs one ``withdrawal.approve`` per withdrawal, exactly as the
single approval does (each over that request's own intent hash, transaction digest,
policy version and expiry, with its share resealed to that request's operation), and a
``withdrawal.batch_approve`` action ``{withdrawals, nonces}`` naming each of them by
withdrawal id and the nonce of its signed approval. One request carries them all with
one TOTP code.

1. The batch action is authenticated like any other (signature, deployment, freshness,
   role, its nonce spent once) and the TOTP code is checked *once*: the code's step is
   consumed in that transaction, so neither the batch nor any item can be replayed with it.
   The items must be exactly the approvals the batch action names, all signed by its
   signer. A refusal here (wrong code, an item that does not match) refuses the whole
   batch and is audited as ``withdrawal.batch_approve.refused``; nothing is approved.
2. Each item then goes through :meth:`WithdrawalService.approve_withdrawal` itself: the
   same approval engine, checks, share handling and audit entries as the single route,
   one transaction per item. Its second factor is a :class:`TotpGrant` (from
   :meth:`Runner.grant_totp`), a server-side object standing for the code checked in
   step 1, for this signer and this batch only.
   It cannot come from a request: the API parses ``totp`` as a 6-character string.

Results are per item: an item refused (self-approval, a tampered signature, an expired
request...) is audited as ``withdrawal.approve.refused`` with its stable code, and the
other items are still admitted. The answer lists every item with its outcome.
"""

from __future__ import annotations

from typing import Any

from tandem.core.actions import parse_envelope
from tandem.core.canonical import check_fields
from tandem.core.roles import Role
from tandem.errors import Error, InputError
from tandem.services.base import Call, Runner, TotpGrant
from tandem.services.withdrawals import WithdrawalService

MAX_BATCH = 50
BATCH_TYPE = "withdrawal.batch_approve"
SIDES = (Role.MANAGER, Role.CUSTODIAN)


class BatchService:
    """Batch approval, on the runner and the withdrawal service it approves through."""

    def __init__(self, runner: Runner, withdrawals: WithdrawalService) -> None:
        self.runner = runner
        self.withdrawals = withdrawals

    def approve_withdrawals(self, envelope: Any, *, totp: str, items: Any) -> dict[str, Any]:
        """Approve several withdrawals with one TOTP code; per-item results."""
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise InputError(f"a batch holds 1 to {MAX_BATCH} approvals")

        def authorise(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(call.action.body, required=("withdrawals", "nonces"), where="body")
            ids, nonces = body["withdrawals"], body["nonces"]
            if (
                not isinstance(ids, list)
                or not isinstance(nonces, list)
                or not all(isinstance(x, str) for x in [*ids, *nonces])
                or len(ids) != len(items)
                or len(nonces) != len(items)
            ):
                raise InputError("body.withdrawals and body.nonces list each item of the batch, in order")
            if len(set(ids)) != len(ids):
                raise InputError("a batch names each withdrawal once")
            for i, item in enumerate(items):
                action = parse_envelope(item.get("envelope") if isinstance(item, dict) else None)
                subject = action.body.get("withdrawal")
                if action.type != "withdrawal.approve" or action.actor != call.actor.id:
                    raise InputError(f"item {i} is not a withdrawal.approve signed by the batch's signer")
                if subject != ids[i] or action.nonce != nonces[i]:
                    raise InputError(f"item {i} is not the approval the signed batch names")
            self.runner.audit(call, "withdrawal.batch_verified", {"withdrawals": ids, "count": len(ids)})
            return {"member": call.actor.id, "withdrawals": ids}

        opened = self.runner.run(
            BATCH_TYPE, envelope, authorise, types=BATCH_TYPE, roles=SIDES, require_totp=True, totp=totp
        )
        results: list[dict[str, Any]] = []
        with self.runner.grant_totp(opened["member"]) as grant:
            for wid, item in zip(opened["withdrawals"], items, strict=True):
                try:
                    done = self.withdrawals.approve_withdrawal(
                        item["envelope"], totp=grant, sealed_share=item.get("sealed_share")
                    )
                except Error as exc:
                    results.append(
                        {"withdrawal": wid, "outcome": "refused", "code": exc.code, "message": exc.message}
                    )
                else:
                    results.append({"withdrawal": wid, "outcome": "approved", "status": done["status"]})
        approved = sum(1 for r in results if r["outcome"] == "approved")
        return {"approved": approved, "refused": len(results) - approved, "results": results}


__all__ = ["MAX_BATCH", "BatchService", "TotpGrant"]
