"""Use cases for withdrawals: create, approve, reject, cancel, veto, release (exactly
once), offline bundles and their import; plus the policy and address-book use cases
(implemented in services/policies.py) exposed on the same service object.

Every use case runs inside :meth:`Runner.run`: one write transaction, writers
serialised, so each status check-then-set below is a compare-and-set that cannot race.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from tandem.chainio.base import Mint
from tandem.core import approvals as engine
from tandem.core import withdrawal as wcore
from tandem.core.actions import parse_envelope
from tandem.core.approvals import QuorumResult, Standing
from tandem.core.canonical import canonical, check_fields, loads_strict
from tandem.core.ceremony_def import CHAIN_RULES
from tandem.core.chains import solana_tx as stx
from tandem.core.lifecycles import KEYSETS
from tandem.core.policy import (
    DEFAULT_FEE_WARN_BPS,
    DEFAULT_RELEASE_TTL_SECONDS,
    AddressBookEntry,
    Fee,
    Policy,
    PolicyDecision,
    check_policy_version,
    check_request_expiry,
    check_time_lock,
    evaluate,
    parse_policy,
)
from tandem.core.roles import Role
from tandem.core.split import verify_operation
from tandem.errors import (
    ConflictError,
    Error,
    EscalatedError,
    EscalationUnsatisfiableError,
    ExpiredError,
    IdempotencyConflictError,
    InputError,
    InvalidStateError,
    NonceInUseError,
    NotFoundError,
    ReplayError,
    ReshareRequiredError,
    TamperedError,
    TxidMismatchError,
)
from tandem.services import bundles, outpoints, policies
from tandem.services.approvals import active_members, approvals_of, current_membership, membership_of
from tandem.services.base import Call, Runner, Unrecorded, fault_point, verify_as_made
from tandem.services.keyuse import KeyUseService, operation_shares
from tandem.store import audit_log, facts, pages
from tandem.store.models import (
    AddressRow,
    Approval,
    Deployment,
    Idempotency,
    KeyRow,
    KeySet,
    Member,
    PolicyRow,
    Withdrawal,
    WithdrawalNonce,
)

SIDES = (Role.MANAGER, Role.CUSTODIAN)
OPERATION_PURPOSE = "withdrawal"
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TXID = re.compile(r"(0x)?[0-9a-fA-F]{64}")
_SOLANA_TXID = re.compile(r"[1-9A-HJ-NP-Za-km-z]{64,88}")  # a signature, base58


@dataclass(frozen=True)
class ReleaseAnswer:
    """What a release request answers; a retry under the same idempotency key gets the same."""

    status_code: int
    body: dict[str, Any]


def _text(body: Any, key: str, *, required: bool = True, max_len: int = 500) -> str:
    value = body.get(key, None if required else "")
    if not isinstance(value, str) or len(value) > max_len or (required and not value):
        raise InputError(f"body.{key} must be text of 1-{max_len} characters")
    return value


class WithdrawalService:
    """Withdrawals, on the runner and the operation keys that release them."""

    def __init__(self, runner: Runner, keys: KeyUseService) -> None:
        self.runner = runner
        self.keys = keys

    def explain_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        now = self.runner.clock()
        with self.runner.db.read() as session:
            row = self._row(session, withdrawal_id)
            current = policies.current_policy(session, now)
            return {
                "withdrawal": row.id,
                "status": _status(row, now),
                "policy_version": row.policy_version,
                "current_policy_version": current.version,
                "decision": loads_strict(row.decision),
            }

    # --- the request ------------------------------------------------------------------------

    def prepare_withdrawal(self, envelope: Any) -> dict[str, Any]:
        """A one-time operation key for a withdrawal from ``keyset``; the manager's client
        reseals its share to it before it signs ``withdrawal.create``."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(call.action.body, required=("keyset",), where="body")
            keyset = self._active_keyset(call.session, body["keyset"])
            doc = self.keys.new_operation(call, keyset_id=keyset.id, purpose=OPERATION_PURPOSE)
            addresses = [
                {"key_id": key_id, "chain": chain, "network": network, "address": address}
                for key_id, chain, network, address in _keyset_addresses(call.session, keyset.id)
            ]
            self.runner.audit(
                call, "withdrawal.prepared", {"keyset": keyset.id, "operation": doc["statement"]["operation"]}
            )
            return {"operation": doc, "keyset": loads_strict(keyset.sealed), "addresses": addresses}

        return self.runner.run(
            "withdrawal.prepare",
            envelope,
            use_case,
            types="withdrawal.prepare",
            roles=(Role.MANAGER,),
            signing=True,
        )

    def create_withdrawal(
        self, envelope: Any, *, sealed_share: Any, mint_facts: MintFacts | None = None
    ) -> dict[str, Any]:
        """``mint_facts``, when the server reads a Solana network, states a mint's program
        and decimals there: a token intent must name the same (see :func:`_check_mint`).
        The node is asked before the write transaction, and only for a manager's signed
        request, so a slow node never holds the writers up and a stranger cannot make the
        server query it."""
        mint = self._ask_mint(envelope, mint_facts)

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            session, now = call.session, call.now
            body = check_fields(
                call.action.body, required=("intent", "operation", "share_digest"), where="body"
            )
            intent = wcore.require_normal_intent(body["intent"])
            keyset, key = self._source_of(session, intent)
            operation = self._unused_operation(call, body, keyset.id, sealed_share)
            made = self._decide(session, intent, key, now)
            _check_mint(intent, mint)
            withdrawal_id = "wd_" + secrets.token_hex(8)
            if intent.eth is not None:
                _claim_nonce(session, intent, withdrawal_id=withdrawal_id, now=now)
            self.keys.store_share(
                call, operation=operation, keyset_id=keyset.id, side="manager", sealed_b64=sealed_share
            )
            row = _new_row(
                call, withdrawal_id, body=body, intent=intent, keyset_id=keyset.id, key=key, made=made
            )
            session.add(row)
            session.flush()
            _no_approvals_yet(session, row.id)
            outpoints.reserve(session, withdrawal=row, intent=intent, now=now)
            self.runner.audit(call, "withdrawal.created", _created_entry(row, intent, made))
            return self._public(session, row, now, detail=True)

        return self.runner.run(
            "withdrawal.create",
            envelope,
            use_case,
            types="withdrawal.create",
            roles=(Role.MANAGER,),
            signing=True,
        )

    def _ask_mint(self, envelope: Any, mint_facts: MintFacts | None) -> _MintAnswer | None:
        """What the chain says of a Solana token intent's mint, asked outside any write
        transaction; None when there is nothing to ask (or the request will be refused
        for what it is inside the use case, and recorded there)."""
        if mint_facts is None:
            return None
        try:
            action = parse_envelope(envelope)
            intent = wcore.require_normal_intent(action.body.get("intent"))
            if intent.sol is None or intent.token is None:
                return None
            with self.runner.db.read() as session:
                self.runner.authenticate(session, action, roles=(Role.MANAGER,))
        except Error:
            return None
        try:
            return _MintAnswer(intent.network, intent.token, mint_facts(intent.network, intent.token), None)
        except Error as exc:  # refused inside the use case, so that it is recorded
            return _MintAnswer(intent.network, intent.token, None, exc)

    def _source_of(self, session: Session, intent: wcore.Intent) -> tuple[KeySet, KeyRow]:
        """The intent's wallet, active and of the chain's curve, and the key behind its
        ``from`` address."""
        keyset = self._active_keyset(session, intent.wallet)
        wanted = CHAIN_RULES[intent.chain].curve
        if keyset.curve != wanted:
            raise InputError(
                f"key set {keyset.id} holds {keyset.curve} keys; {intent.chain} withdrawals need {wanted}"
            )
        key_id = next(
            (
                k
                for k, chain, network, address in _keyset_addresses(session, keyset.id)
                if (chain, network, address) == (intent.chain, intent.network, intent.from_address)
            ),
            None,
        )
        if key_id is None:
            raise InputError(
                f"{intent.from_address} is not an address of wallet {keyset.id} "
                f"on {intent.chain}/{intent.network}"
            )
        key = facts.kept_row(session, KeyRow, key_id)
        if key is None:
            raise NotFoundError(f"no key {key_id}")
        return keyset, key

    def _unused_operation(self, call: Call, body: dict[str, Any], keyset_id: str, sealed_share: Any) -> str:
        """The operation the request names: issued by this service for this key set and
        purpose, unexpired, held in memory, not in use yet, and the share sent is the one
        the signed action names."""
        statement = verify_operation(body["operation"], self.runner.key.sign_public)
        operation: str = statement["operation"]
        if statement["keyset"] != keyset_id or statement["purpose"] != OPERATION_PURPOSE:
            raise InputError("the operation was issued for another key set or purpose")
        if statement["expires_at"] <= call.now:
            raise ExpiredError("the operation key has expired; prepare a new one")
        self.keys.operations.get(operation)
        if operation_shares(call.session, operation):
            raise ConflictError("that operation is already in use; prepare a new one")
        if not isinstance(sealed_share, str) or wcore.share_digest(sealed_share) != body["share_digest"]:
            raise InputError("the sealed share sent is not the one the signed action names (share_digest)")
        return operation

    @staticmethod
    def _decide(session: Session, intent: wcore.Intent, key: KeyRow, now: int) -> _Made:
        """Build the transaction, decode it back, and let the policy in force decide."""
        public_key = bytes.fromhex(key.public_key)
        book = _address_book(session, now)
        built = wcore.build_transaction(
            intent, public_key, allowed_tokens=wcore.allowed_tokens(book, intent.network, intent.chain)
        )
        # Our own decoder must agree with our own builder before anyone is asked to
        # approve; the worst-case fee it decodes is a fact the policy decides on.
        view = wcore.check_transaction(
            intent, public_key=public_key, unsigned=built.unsigned, prevouts=built.prevouts
        )
        fee = wcore.fee_of(intent, view)
        policy = _current_policy(session, now)
        decision = evaluate(
            policy,
            intent.facts(fee),
            now=now,
            address_book=book,
            history=policies.history_for(session, policy, intent.wallet, now),
        )
        decision.require()
        return _Made(built=built, view=view, fee=fee, policy=policy, decision=decision)

    # --- decisions ------------------------------------------------------------------------

    def approve_withdrawal(
        self, envelope: Any, *, totp: str | None, sealed_share: Any = None
    ) -> dict[str, Any]:
        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            assert call.envelope is not None
            session, now, actor = call.session, call.now, call.actor
            body = wcore.parse_approval(call.action.body)
            row = self._row(session, body["withdrawal"])
            decision = loads_strict(row.decision)
            role = Role(actor.role)
            engine.admit(
                _request(row),
                member=actor.id,
                role=role,
                required=_required(row),
                what=f"this withdrawal (rule {decision['rule']!r}"
                + (", escalated at release)" if row.escalated else ")"),
            )
            row.status = wcore.transition(row.status, "approve", expires_at=row.expires_at, now=now)
            current = _current_policy(session, now)
            check_policy_version(body["policy_version"], current.version)
            check_policy_version(row.policy_version, current.version)
            if body["intent_hash"] != row.intent_hash or body["tx_digest"] != row.tx_digest:
                raise ConflictError(
                    "the approval is for different content than this request "
                    "(intent hash or transaction digest mismatch)"
                )
            latest = min(row.expires_at, now + decision["approval_ttl_seconds"])
            if not now < body["expires_at"] <= latest:
                raise InputError(f"approval.expires_at must be after now and at most {latest}")
            if any(a.member == actor.id for a in _approvals(session, row.id)):
                raise ConflictError("this member has already approved; approvals count per member")
            self._approval_share(call, row, body, role, sealed_share)
            _add_approval(
                session,
                Approval(
                    subject=row.id,
                    member=actor.id,
                    role=actor.role,
                    envelope=canonical(call.envelope).decode(),
                    created_at=now,
                ),
            )
            result = self._quorum(session, row, now)
            if result.met:
                row.status = wcore.transition(row.status, "quorum", expires_at=row.expires_at, now=now)
            session.add(row)
            self.runner.audit(
                call,
                "withdrawal.approved",
                {
                    "withdrawal": row.id,
                    "intent_hash": row.intent_hash,
                    "tx_digest": row.tx_digest,
                    "policy_version": row.policy_version,
                    "quorum_met": result.met,
                    "status": row.status,
                },
            )
            fault_point("withdrawal.approve.before_commit")
            return self._public(session, row, now, detail=False)

        return self.runner.run(
            "withdrawal.approve",
            envelope,
            use_case,
            types="withdrawal.approve",
            roles=SIDES,
            require_totp=True,
            totp=totp,
        )

    def _approval_share(
        self, call: Call, row: Withdrawal, body: dict[str, Any], role: Role, sealed_share: Any
    ) -> None:
        """Store the share an approval carries, resealed to the request's operation key;
        a custodian's approval without one stands only if its share is already there."""
        if "operation" in body:
            operation = loads_strict(row.context)["operation"]["statement"]["operation"]
            if body["operation"] != operation:
                raise InputError("the share was resealed for another operation than this request's")
            if not isinstance(sealed_share, str) or wcore.share_digest(sealed_share) != body["share_digest"]:
                raise InputError("the sealed share sent is not the one the signed action names")
            self.keys.store_share(
                call, operation=operation, keyset_id=row.keyset, side=role.value, sealed_b64=sealed_share
            )
        elif role is Role.CUSTODIAN and not self.keys.has_share(
            call,
            operation=loads_strict(row.context)["operation"]["statement"]["operation"],
            side=role.value,
        ):
            raise InputError(
                "a custodian's approval carries the custodian share, resealed to this request's operation key"
            )

    def _close(self, envelope: Any, *, event: str, roles: tuple[Role, ...]) -> dict[str, Any]:
        action_type = f"withdrawal.{event}"

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(
                call.action.body, required=("withdrawal",), optional=("reason",), where="body"
            )
            reason = _text(body, "reason", required=event == "reject")
            row = self._row(call.session, body["withdrawal"])
            if event == "reject":
                engine.check_not_requester(_request(row), call.actor.id)
            if event == "veto" and (row.time_lock_until is None or call.now >= row.time_lock_until):
                raise InvalidStateError(
                    "a veto stops a time-locked withdrawal during its lock; "
                    "this one is not (or no longer) time-locked - reject it instead"
                )
            row.status = wcore.transition(row.status, event, expires_at=row.expires_at, now=call.now)
            call.session.add(row)
            _free_claims(call.session, row)
            past = {"reject": "rejected", "cancel": "cancelled", "veto": "vetoed"}[event]
            self.runner.audit(call, f"withdrawal.{past}", {"withdrawal": row.id, "reason": reason})
            return self._public(call.session, row, call.now, detail=False)

        return self.runner.run(action_type, envelope, use_case, types=action_type, roles=roles)

    def reject_withdrawal(self, envelope: Any) -> dict[str, Any]:
        return self._close(envelope, event="reject", roles=SIDES)

    def cancel_withdrawal(self, envelope: Any) -> dict[str, Any]:
        return self._close(envelope, event="cancel", roles=(Role.MANAGER,))

    def veto_withdrawal(self, envelope: Any) -> dict[str, Any]:
        return self._close(envelope, event="veto", roles=(Role.CUSTODIAN,))

    # --- after release: what became of the signed transaction -------------------------------

    def _record_end(self, envelope: Any, *, event: str) -> dict[str, Any]:
        """The operator records a release's end: ``broadcast`` (naming its txid),
        ``confirm`` or ``abandon`` (with a reason; its Ethereum nonce is freed). Whatever
        is recorded, a release counts against velocity from its release time; one with
        nothing recorded past its lifetime reads as ``lapsed``. ``drop`` is what tracking
        records when the node no longer knows a broadcast transaction: released again,
        to be sent again; it is signed by the member's ``withdrawal.confirm`` that asked."""
        action_type = "withdrawal.confirm" if event == "drop" else f"withdrawal.{event}"
        fields = {
            "broadcast": ("withdrawal", "txid"),
            "confirm": ("withdrawal",),
            "drop": ("withdrawal",),
            "abandon": ("withdrawal", "reason"),
        }
        past = {"broadcast": "broadcast", "confirm": "confirmed", "drop": "dropped", "abandon": "abandoned"}

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(
                call.action.body,
                required=fields[event],
                optional=() if event == "abandon" else ("reason",),
                where="body",
            )
            reason = _text(body, "reason", required=event == "abandon")
            row = self._row(call.session, body["withdrawal"])
            if event == "broadcast":
                self._check_txid(row, body["txid"])
            row.status = wcore.transition(row.status, event, expires_at=row.expires_at, now=call.now)
            stamps = {"broadcast": "broadcast_at", "confirm": "confirmed_at", "abandon": "abandoned_at"}
            stamp = stamps.get(event)
            if stamp is not None:
                setattr(row, stamp, call.now)
            call.session.add(row)
            if event == "abandon":
                _free_claims(call.session, row)
            self.runner.audit(
                call,
                f"withdrawal.{past[event]}",
                {"withdrawal": row.id, "txid": row.txid, "status": row.status, "reason": reason},
            )
            return self._public(call.session, row, call.now, detail=False)

        kind = "withdrawal.track" if event == "drop" else action_type
        return self.runner.run(kind, envelope, use_case, types=action_type, roles=SIDES)

    @staticmethod
    def _check_txid(row: Withdrawal, txid: Any) -> None:
        pattern = _SOLANA_TXID if row.chain == "solana" else _TXID
        if not isinstance(txid, str) or not pattern.fullmatch(txid):
            raise InputError("body.txid must be the transaction id (hex; base58 on Solana)")
        if row.txid is not None and txid.lower().removeprefix("0x") != row.txid.lower().removeprefix("0x"):
            raise TxidMismatchError(
                f"txid {txid} is not the transaction released for {row.id} ({row.txid})",
                details={"released_txid": row.txid},
            )

    def record_broadcast(self, envelope: Any) -> dict[str, Any]:
        return self._record_end(envelope, event="broadcast")

    def confirm_withdrawal(self, envelope: Any) -> dict[str, Any]:
        return self._record_end(envelope, event="confirm")

    def record_dropped(self, envelope: Any) -> dict[str, Any]:
        return self._record_end(envelope, event="drop")

    def abandon_withdrawal(self, envelope: Any) -> dict[str, Any]:
        return self._record_end(envelope, event="abandon")

    # --- shares after a restart -------------------------------------------------------------

    def renew_operation(self, envelope: Any) -> dict[str, Any]:
        """A new operation key for an open request whose key the signer lost (restart, or
        a share refused). Approvals stay valid: they bind the request, not the key; both
        sides contribute their shares again with :meth:`contribute_share`."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(call.action.body, required=("withdrawal",), where="body")
            row = self._row(call.session, body["withdrawal"])
            wcore.transition(row.status, "approve", expires_at=row.expires_at, now=call.now)
            keyset = self._active_keyset(call.session, row.keyset)
            ctx = loads_strict(row.context)
            old = ctx["operation"]["statement"]["operation"]
            doc = self.keys.new_operation(call, keyset_id=keyset.id, purpose=OPERATION_PURPOSE)
            ctx["operation"] = doc
            row.context = canonical(ctx).decode()
            call.session.add(row)
            self.keys.operations.discard(old)
            self.runner.audit(
                call,
                "withdrawal.operation_renewed",
                {"withdrawal": row.id, "old": old, "operation": doc["statement"]["operation"]},
            )
            return {"withdrawal": row.id, "operation": doc, "keyset": loads_strict(keyset.sealed)}

        return self.runner.run(
            "withdrawal.renew", envelope, use_case, types="withdrawal.renew", roles=SIDES, signing=True
        )

    def contribute_share(
        self, envelope: Any, *, sealed_share: Any, totp: str | None = None
    ) -> dict[str, Any]:
        """A member's share, resealed to the request's current operation key (a
        custodian's with a TOTP code, as its approval needed one)."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(
                call.action.body, required=("withdrawal", "operation", "share_digest"), where="body"
            )
            row = self._row(call.session, body["withdrawal"])
            wcore.transition(row.status, "approve", expires_at=row.expires_at, now=call.now)
            operation = loads_strict(row.context)["operation"]["statement"]["operation"]
            if body["operation"] != operation:
                raise InputError(
                    "the share was resealed for another operation than this request's current one"
                )
            if not isinstance(sealed_share, str) or wcore.share_digest(sealed_share) != body["share_digest"]:
                raise InputError("the sealed share sent is not the one the signed action names")
            self.keys.operations.get(operation)
            side = call.actor.role
            self.keys.store_share(
                call, operation=operation, keyset_id=row.keyset, side=side, sealed_b64=sealed_share
            )
            self.runner.audit(
                call,
                "withdrawal.share_contributed",
                {"withdrawal": row.id, "operation": operation, "side": side},
            )
            return {"withdrawal": row.id, "operation": operation, "side": side}

        return self.runner.run(
            "withdrawal.contribute",
            envelope,
            use_case,
            types="withdrawal.contribute",
            roles=SIDES,
            totp=totp,
            signing=True,
        )

    # --- release ----------------------------------------------------------------------------

    def release_withdrawal(self, envelope: Any, *, idempotency_key: str | None) -> ReleaseAnswer:
        """Sign exactly once. A retry with the same key and body gets the first answer."""
        if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
            raise InputError("Idempotency-Key must be 1-128 letters, digits, '.', '_', ':' or '-'")
        try:
            request_hash = hashlib.sha256(canonical(envelope)).hexdigest()
        except Error:
            request_hash = ""

        def answered(session: Session) -> ReleaseAnswer | None:
            # A retry gets the first answer, looked up in the write transaction itself
            # (writers are serialised, so no release with this key can commit meanwhile).
            try:
                return _seen_answer(session, idempotency_key, request_hash)
            except IdempotencyConflictError as exc:
                raise Unrecorded(exc) from None

        def use_case(call: Call) -> ReleaseAnswer:
            assert call.action is not None
            assert call.actor is not None
            session, now = call.session, call.now
            body = check_fields(call.action.body, required=("withdrawal",), where="body")
            row = self._row(session, body["withdrawal"])
            guard = self._guard_release(call, row)
            if isinstance(guard, ReleaseAnswer):
                answer = guard
            else:
                ctx = loads_strict(row.context)
                operation = ctx["operation"]["statement"]["operation"]
                intent = wcore.parse_intent(loads_strict(row.intent))
                unsigned = bytes.fromhex(row.unsigned_tx)
                fault_point("release.before_sign")
                with self.keys.private_keys(
                    call, keyset_id=row.keyset, operation=operation, key_ids=[row.key_id]
                ) as keys:
                    signed, txid = wcore.sign_transaction(
                        row.chain, unsigned, ctx["prevouts"], bytes(keys[row.key_id])
                    )
                wcore.check_signed_transaction(
                    row.chain,
                    signed,
                    unsigned=unsigned,
                    prevouts=ctx["prevouts"],
                    from_address=intent.from_address,
                )
                answer = self._mark_released(call, row, signed=signed, txid=txid, offline=False, result=guard)
                fault_point("release.after_sign")
            if idempotency_key is not None and answer.body.get("code") != EscalatedError.code:
                # An escalation is not the request's final answer: once the approvals are
                # in, the same key must be able to release.
                session.add(
                    Idempotency(
                        key=idempotency_key,
                        actor=call.actor.id,
                        request_hash=request_hash,
                        status_code=answer.status_code,
                        response=canonical(answer.body).decode(),
                        created_at=now,
                    )
                )
            return answer

        try:
            answer = self.runner.run(
                "withdrawal.release",
                envelope,
                use_case,
                types="withdrawal.release",
                roles=SIDES,
                signing=True,
                answered=answered if idempotency_key is not None else None,
            )
        except ReplayError:
            # The same request may have just completed on another connection.
            cached = self._cached_answer(idempotency_key, request_hash) if idempotency_key else None
            if cached is None:
                raise
            return _raise_tampered(cached)
        return _raise_tampered(answer)

    def import_withdrawal(self, envelope: Any) -> dict[str, Any]:
        """Record a transaction the offline signer signed, after checking it is the approved
        transaction signed by the wallet key, under the same guards as an online release."""

        def use_case(call: Call) -> ReleaseAnswer:
            assert call.action is not None
            body = check_fields(call.action.body, required=("withdrawal", "signed_tx"), where="body")
            row = self._row(call.session, body["withdrawal"])
            guard = self._guard_release(call, row)
            if isinstance(guard, ReleaseAnswer):
                return guard
            if not isinstance(body["signed_tx"], str):
                raise InputError("body.signed_tx must be hex")
            try:
                signed = bytes.fromhex(body["signed_tx"])
            except ValueError:
                raise InputError("body.signed_tx must be hex") from None
            ctx = loads_strict(row.context)
            intent = wcore.parse_intent(loads_strict(row.intent))
            txid = wcore.check_signed_transaction(
                row.chain,
                signed,
                unsigned=bytes.fromhex(row.unsigned_tx),
                prevouts=ctx["prevouts"],
                from_address=intent.from_address,
            )
            answer = self._mark_released(call, row, signed=signed, txid=txid, offline=True, result=guard)
            # The online operation key of this request can never be needed again.
            self.keys.operations.discard(ctx["operation"]["statement"]["operation"])
            return answer

        answer = self.runner.run(
            "withdrawal.import", envelope, use_case, types="withdrawal.import", roles=SIDES, signing=True
        )
        return _raise_tampered(answer).body

    def _guard_release(self, call: Call, row: Withdrawal) -> ReleaseAnswer | QuorumResult:
        """Every check before a key is touched. Returns the tampered answer (already
        recorded) when the stored request no longer matches what was approved, else the
        one quorum evaluation of this release (its approvers go into the audit entry)."""
        session, now = call.session, call.now
        if row.status == wcore.TAMPERED:
            raise TamperedError("this request was marked tampered; nothing will be signed for it")
        wcore.transition(row.status, "release", expires_at=row.expires_at, now=now)
        check_request_expiry(row.expires_at, now)
        check_time_lock(row.time_lock_until, now)
        policy = _current_policy(session, now)
        check_policy_version(row.policy_version, policy.version)
        # Read once for the whole release: the members in force count toward the quorum
        # (and an escalation), and while ``members`` holds their rows the tamper check
        # finds the requester and the approvers among them without a query.
        members = active_members(session)
        membership = membership_of(members)
        reason, view = self._tamper_check(session, row)
        if reason is not None:
            row.status = wcore.transition(row.status, "tamper", expires_at=row.expires_at, now=now)
            session.add(row)
            _free_claims(session, row)
            self.runner.audit(call, "withdrawal.tampered", {"withdrawal": row.id, "reason": reason})
            err = TamperedError(
                f"withdrawal {row.id} was changed after approval ({reason}); "
                "it is marked tampered and nothing was signed"
            )
            return ReleaseAnswer(err.status, err.to_dict())
        assert view is not None  # the check passed, so the stored bytes decoded
        required = self._recheck_at_release(session, row, now, policy, view)
        result = self._quorum(session, row, now, required=required, membership=membership)
        if not result.met and any(n > _required(row).get(role, 0) for role, n in required.items()):
            return self._escalate(call, row, required, result, membership)
        result.require()
        return result

    def _escalate(
        self,
        call: Call,
        row: Withdrawal,
        required: dict[Role, int],
        result: QuorumResult,
        membership: dict[str, Standing],
    ) -> ReleaseAnswer:
        """The policy asks at release for approvals the request lacks (a wallet limit's
        escalation). If they can be given, the request records them as required and waits
        for them again (``pending``; the approval route then admits those roles); if not
        enough members other than the requester hold a role, it is refused for good."""
        session, now = call.session, call.now
        for role, n in sorted(required.items()):
            eligible = sum(1 for m, st in membership.items() if st.role is role and m != row.requester)
            if eligible < n:
                raise EscalationUnsatisfiableError(
                    f"at release the policy escalates this withdrawal to {n} {role.value} "
                    f"approval(s), but only {eligible} {role.value}(s) other than the requester "
                    "can approve: it can never be released; cancel it and request within the limits",
                    details={"role": role.value, "required": n, "eligible": eligible},
                )
        row.escalated = canonical({r.value: n for r, n in required.items()}).decode()
        row.status = wcore.transition(row.status, "escalate", expires_at=row.expires_at, now=now)
        session.add(row)
        missing = {r.value: n for r, n in result.missing.items() if n}
        self.runner.audit(
            call,
            "withdrawal.escalated",
            {
                "withdrawal": row.id,
                "required": {r.value: n for r, n in required.items()},
                "missing": missing,
                "status": row.status,
            },
        )
        err = EscalatedError(
            f"withdrawal {row.id} was escalated at release: it now needs "
            + ", ".join(f"{n} more {role}" for role, n in sorted(missing.items()))
            + " approval(s); it waits for them again and nothing was signed",
            details={"required": {r.value: n for r, n in required.items()}, "missing": missing},
        )
        return ReleaseAnswer(err.status, err.to_dict())

    def _recheck_at_release(
        self, session: Session, row: Withdrawal, now: int, policy: Policy, view: dict[str, Any]
    ) -> dict[Role, int]:
        """Yesterday's checks are not enough (THREATS 31, 32, 38): the policy runs again
        now, on the address book in force now and on what was *released* in the window
        (plus this withdrawal), so a destination removed since approval, a window that
        filled meanwhile, or releases stockpiled for a joint broadcast are refused. Any
        stronger quorum it now asks for is added to the one decided at creation; the time
        lock stays the one decided at creation. ``view``: the tamper check's decoding of
        the stored bytes, moments ago in this transaction."""
        intent = wcore.parse_intent(loads_strict(row.intent))
        decision = evaluate(
            policy,
            intent.facts(wcore.fee_of(intent, view)),
            now=now,
            address_book=_address_book(session, now),
            history=policies.history_for(session, policy, row.keyset, now, released_only=True),
        )
        decision.require()
        stored = {Role(k): v for k, v in loads_strict(row.decision)["required"].items()}
        return {
            role: max(stored.get(role, 0), decision.required.get(role, 0))
            for role in set(stored) | set(decision.required)
        }

    def _mark_released(
        self, call: Call, row: Withdrawal, *, signed: bytes, txid: str, offline: bool, result: QuorumResult
    ) -> ReleaseAnswer:
        row.status = wcore.transition(row.status, "release", expires_at=row.expires_at, now=call.now)
        row.signed_tx = signed.hex()
        row.txid = txid
        row.released_at = call.now
        ttl = loads_strict(row.decision).get("release_ttl_seconds", DEFAULT_RELEASE_TTL_SECONDS)
        row.release_expires_at = call.now + ttl
        call.session.add(row)
        approvers = sorted(result.counted)
        self.runner.audit(
            call,
            "withdrawal.released",
            {
                "withdrawal": row.id,
                "txid": txid,
                "intent_hash": row.intent_hash,
                "tx_digest": row.tx_digest,
                "approved_by": approvers,
                "offline": offline,
                "release_expires_at": row.release_expires_at,
            },
        )
        return ReleaseAnswer(200, self._public(call.session, row, call.now, detail=False))

    def _cached_answer(self, key: str | None, request_hash: str) -> ReleaseAnswer | None:
        if key is None:
            return None
        with self.runner.db.read() as session:
            return _seen_answer(session, key, request_hash)

    # --- integrity and quorum ----------------------------------------------------------------

    def _tamper_reason(self, session: Session, row: Withdrawal) -> str | None:
        """Recompute everything from the stored row; None when it is what was approved."""
        return self._tamper_check(session, row)[0]

    def _tamper_check(self, session: Session, row: Withdrawal) -> tuple[str | None, dict[str, Any] | None]:
        """:meth:`_tamper_reason`, with the view decoded from the stored bytes when they
        verify (the release's policy re-check decides on its fee)."""
        try:
            intent_doc = loads_strict(row.intent)
            intent = wcore.require_normal_intent(intent_doc)
            ih = wcore.intent_hash(intent_doc)
            if ih != row.intent_hash:
                return "the stored intent does not hash to the request's intent hash", None
            if (intent.wallet, intent.chain, intent.network) != (row.keyset, row.chain, row.network):
                return "the stored intent names another wallet or chain than the request", None
            ctx = loads_strict(row.context)
            key = facts.kept_row(session, KeyRow, row.key_id)
            if key is None or key.keyset != row.keyset or key.public_key != ctx["public_key"]:
                return "the signing key is not the request's", None
            td = wcore.tx_digest(
                chain=row.chain,
                network=row.network,
                public_key=key.public_key,
                unsigned_tx=row.unsigned_tx,
                prevouts=ctx["prevouts"],
            )
            if td != row.tx_digest:
                return "the stored transaction does not hash to the request's transaction digest", None
            view = wcore.check_transaction(
                intent,
                public_key=bytes.fromhex(key.public_key),
                unsigned=bytes.fromhex(row.unsigned_tx),
                prevouts=ctx["prevouts"],
            )
            create = parse_envelope(ctx["create"])
            requester = session.get(Member, row.requester)
            if (
                requester is None
                or create.actor != requester.id
                or dict(create.body).get("intent") != intent_doc
            ):
                return "the stored intent is not the one the requester signed", None
            verify_as_made(session, create, requester)
            for a in _approvals(session, row.id):
                action = parse_envelope(loads_strict(a.envelope))
                member = session.get(Member, a.member)
                if member is None or action.actor != member.id:
                    return "an approval record names another signer", None
                verify_as_made(session, action, member)
                body = action.body
                if (
                    body.get("withdrawal") != row.id
                    or body.get("intent_hash") != ih
                    or body.get("tx_digest") != td
                ):
                    return "the stored request differs from what was approved", None
        except Error as exc:
            return f"the stored request does not verify: {exc.message}", None
        except (KeyError, TypeError, ValueError, AttributeError):
            return "the stored request is malformed", None
        return None, view

    def _quorum(
        self,
        session: Session,
        row: Withdrawal,
        now: int,
        *,
        required: dict[Role, int] | None = None,
        membership: dict[str, Standing] | None = None,
    ) -> QuorumResult:
        """Distinct current members, unexpired approvals under the request's policy version,
        toward ``required`` (by default the one decided at creation)."""
        decision = loads_strict(row.decision)
        if required is None:
            required = _required(row)
        return engine.evaluate(
            _request(row),
            [_given(a) for a in _approvals(session, row.id)],
            membership=_membership(session) if membership is None else membership,
            required=required,
            now=now,
            ttl_seconds=decision["approval_ttl_seconds"],
        )

    # --- reads ------------------------------------------------------------------------------

    def list_withdrawals(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of withdrawals, oldest first: ``{"items", "next_cursor"}``. The
        status filter (the effective status, expiry and lapse included) runs in SQL, and
        the page's approvals are read in one query: three statements whatever the size."""
        now = self.runner.clock()
        query = select(Withdrawal)
        if status is not None:
            query = query.where(_status_condition(status, now))
        with self.runner.db.read() as session:
            page = pages.read_page(
                session,
                query,
                kind="withdrawals",
                order=(col(Withdrawal.created_at), col(Withdrawal.id)),
                limit=limit,
                cursor=cursor,
            )
            _load_approvals(session, [r.id for r in page.rows])
            items = [self._public(session, r, now, detail=False) for r in page.rows]
        return {"items": items, "next_cursor": page.next_cursor}

    def get_withdrawal(self, withdrawal_id: str) -> dict[str, Any]:
        now = self.runner.clock()
        with self.runner.db.read() as session:
            return self._public(session, self._row(session, withdrawal_id), now, detail=True)

    def withdrawal_bundle(self, withdrawal_id: str) -> dict[str, Any]:
        """Everything an offline signer needs except the shares (which members' clients
        reseal to the signer's key) and the signer's card."""
        now = self.runner.clock()
        with self.runner.db.read() as session:
            row = self._row(session, withdrawal_id)
            status = _status(row, now)
            if status != wcore.APPROVED:
                raise InvalidStateError(f"withdrawal is {status}; only an approved request can be exported")
            dep = session.exec(select(Deployment)).first()
            if dep is None:
                raise NotFoundError("no deployment")
            # The log selection the signer's checks need, not the whole log (ADR 0011).
            selection = bundles.select_for(session, self.runner.key, deployment=dep.id, row=row)
            genesis_entry = audit_log.entry(session, 0)
            policy_row = session.get(PolicyRow, row.policy_version)
            keyset = session.get(KeySet, row.keyset)
            if policy_row is None or keyset is None:
                raise NotFoundError("the request's policy or key set is missing")
            ctx = loads_strict(row.context)
            approvals = _approvals(session, row.id)
            return {
                "format": wcore.BUNDLE_FORMAT,
                "genesis": loads_strict(dep.genesis_doc),
                "genesis_signatures": genesis_entry["data"]["signatures"],
                "audit": selection.to_json(),
                "policy": loads_strict(policy_row.doc),
                "withdrawal": {
                    "id": row.id,
                    "wallet": row.keyset,
                    "key_id": row.key_id,
                    "chain": row.chain,
                    "network": row.network,
                    "requester": row.requester,
                    "intent": loads_strict(row.intent),
                    "intent_hash": row.intent_hash,
                    "unsigned_tx": row.unsigned_tx,
                    "prevouts": ctx["prevouts"],
                    "public_key": ctx["public_key"],
                    "tx_digest": row.tx_digest,
                    "decision": loads_strict(row.decision),
                    "policy_version": row.policy_version,
                    "created_at": row.created_at,
                    "expires_at": row.expires_at,
                    "time_lock_until": row.time_lock_until,
                },
                "actions": {
                    "create": ctx["create"],
                    "approvals": [loads_strict(a.envelope) for a in approvals],
                },
                "keyset": loads_strict(keyset.sealed),
                "signer": None,
                "shares": {},
            }

    # --- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, withdrawal_id: Any) -> Withdrawal:
        row = session.get(Withdrawal, withdrawal_id) if isinstance(withdrawal_id, str) else None
        if row is None:
            raise NotFoundError("no such withdrawal")
        return row

    @staticmethod
    def _active_keyset(session: Session, keyset_id: Any) -> KeySet:
        keyset = facts.kept_row(session, KeySet, keyset_id) if isinstance(keyset_id, str) else None
        if keyset is None:
            raise NotFoundError(f"no key set {keyset_id}")
        if not KEYSETS.allows(keyset.status, "sign"):
            raise ReshareRequiredError(
                f"key set {keyset.id} is {keyset.status}; nothing signs with it until "
                "a reshare ceremony rotates its data key"
            )
        return keyset

    def _public(self, session: Session, row: Withdrawal, now: int, *, detail: bool) -> dict[str, Any]:
        ctx = loads_strict(row.context)
        approvals = _approvals(session, row.id)
        out: dict[str, Any] = {
            "id": row.id,
            "wallet": row.keyset,
            "key_id": row.key_id,
            "chain": row.chain,
            "network": row.network,
            "requester": row.requester,
            "intent": loads_strict(row.intent),
            "intent_hash": row.intent_hash,
            "fingerprint": wcore.fingerprint(row.intent_hash),
            "tx_digest": row.tx_digest,
            "policy_version": row.policy_version,
            "status": _status(row, now),
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "time_lock_until": row.time_lock_until,
            "released_at": row.released_at,
            "release_expires_at": row.release_expires_at,
            "broadcast_at": row.broadcast_at,
            "confirmed_at": row.confirmed_at,
            "abandoned_at": row.abandoned_at,
            "needs_attention": _status(row, now) == wcore.LAPSED,
            "txid": row.txid,
            "signed_tx": row.signed_tx,
            "decision": loads_strict(row.decision),
            # What the request needs now (the decision's, raised by an escalation).
            "required": {r.value: n for r, n in _required(row).items()},
            "escalated": row.escalated is not None,
            "approvals": [
                {
                    "member": a.member,
                    "role": a.role,
                    "at": a.created_at,
                    "expires_at": loads_strict(a.envelope)["action"]["body"].get("expires_at"),
                }
                for a in approvals
            ],
            "fee": ctx.get("fee"),
            "change": ctx.get("change"),
        }
        if detail:
            keyset = session.get(KeySet, row.keyset)
            out.update(
                unsigned_tx=row.unsigned_tx,
                prevouts=ctx["prevouts"],
                public_key=ctx["public_key"],
                operation=ctx["operation"],
                keyset=loads_strict(keyset.sealed) if keyset else None,
                # Sides whose share the current operation already holds (never replaced).
                shares=sorted(operation_shares(session, ctx["operation"]["statement"]["operation"])),
            )
            try:
                intent = wcore.parse_intent(out["intent"])
                # Checked and stored at create; a row from before the column decodes now.
                # A convenience for the page: members' clients decode the bytes themselves.
                out["decoded"] = (
                    loads_strict(row.decoded)
                    if row.decoded is not None
                    else wcore.check_transaction(
                        intent,
                        public_key=bytes.fromhex(ctx["public_key"]),
                        unsigned=bytes.fromhex(row.unsigned_tx),
                        prevouts=ctx["prevouts"],
                    )
                )
                out["fee_review"] = wcore.fee_review(
                    intent,
                    out["decoded"],
                    warn_bps=out["decision"].get("fee_warn_bps", DEFAULT_FEE_WARN_BPS),
                )
            except Error as exc:
                out["decoded"] = None
                out["fee_review"] = None
                out["decode_error"] = exc.message
        return out


def _status(row: Withdrawal, now: int) -> str:
    return wcore.effective_status(row.status, row.expires_at, now, release_expires_at=row.release_expires_at)


@dataclass(frozen=True)
class _Made:
    """What creation decided: the transaction built, its decoded view, its worst-case
    fee, the policy in force and that policy's decision."""

    built: wcore.BuiltTx
    view: dict[str, Any]
    fee: Fee
    policy: Policy
    decision: PolicyDecision


def _new_row(
    call: Call,
    withdrawal_id: str,
    *,
    body: dict[str, Any],
    intent: wcore.Intent,
    keyset_id: str,
    key: KeyRow,
    made: _Made,
) -> Withdrawal:
    assert call.actor is not None
    built, decision = made.built, made.decision
    context = {
        "prevouts": list(built.prevouts),
        "fee": str(built.fee),
        "change": str(built.change),
        "public_key": key.public_key,
        "operation": body["operation"],
        "create": call.envelope,
    }
    return Withdrawal(
        id=withdrawal_id,
        keyset=keyset_id,
        key_id=key.id,
        chain=intent.chain,
        network=intent.network,
        requester=call.actor.id,
        intent=canonical(body["intent"]).decode(),
        intent_hash=wcore.intent_hash(body["intent"]),
        unsigned_tx=built.unsigned.hex(),
        context=canonical(context).decode(),
        tx_digest=wcore.tx_digest(
            chain=intent.chain,
            network=intent.network,
            public_key=key.public_key,
            unsigned_tx=built.unsigned.hex(),
            prevouts=built.prevouts,
        ),
        decision=canonical(decision.to_json()).decode(),
        policy_version=made.policy.version,
        status=wcore.PENDING,
        created_at=call.now,
        expires_at=decision.request_expires_at,
        time_lock_until=decision.time_lock_until,
        asset=intent.asset,
        amount=str(intent.amount),
        fee=str(made.fee.amount),
        fee_asset=made.fee.asset,
        decoded=canonical(made.view).decode(),
    )


def _created_entry(row: Withdrawal, intent: wcore.Intent, made: _Made) -> dict[str, Any]:
    """The data of a ``withdrawal.created`` entry."""
    return {
        "withdrawal": row.id,
        "wallet": intent.wallet,
        "chain": intent.chain,
        "network": intent.network,
        "asset": intent.asset,
        "amount": str(intent.amount),
        "fee": str(made.fee.amount),
        "fee_asset": made.fee.asset,
        "destination": intent.destination,
        "intent_hash": row.intent_hash,
        "tx_digest": row.tx_digest,
        "fingerprint": wcore.fingerprint(row.intent_hash),
        "policy_version": made.policy.version,
        "rule": made.decision.rule_name,
        "required": made.decision.to_json()["required"],
        "expires_at": row.expires_at,
        "time_lock_until": row.time_lock_until,
    }


# --- facts a write reads from the per-process cache (tandem.store.facts) ---------------------


def _keyset_addresses(session: Session, keyset_id: str) -> tuple[tuple[str, str, str, str], ...]:
    """(key id, chain, network, address) of each address of ``keyset_id``."""

    def load(s: Session) -> tuple[tuple[str, str, str, str], ...]:
        rows = s.exec(select(AddressRow).where(AddressRow.keyset == keyset_id)).all()
        return tuple((a.key_id, a.chain, a.network, a.address) for a in rows)

    return facts.kept(session, ("addresses", keyset_id), load)


def _current_policy(session: Session, now: int) -> Policy:
    """:func:`policies.current_policy`: the newest version whose cool-down has passed."""
    versions = facts.kept(session, "policies", _policy_versions)
    for effective_at, policy in versions:
        if effective_at <= now:
            return policy
    raise NotFoundError("no policy in force")


def _policy_versions(session: Session) -> tuple[tuple[int, Policy], ...]:
    rows = session.exec(select(PolicyRow).order_by(col(PolicyRow.version).desc())).all()
    return tuple((r.effective_at, parse_policy(loads_strict(r.doc))) for r in rows)


# (network, mint) -> the mint as that Solana network states it, or None when the server
# reads no node there. A mint it will not withdraw (not a mint, a Token-2022 mint with
# extensions) is refused by the lookup itself, as the fill refuses it.
MintFacts = Callable[[str, str], Mint | None]


@dataclass(frozen=True)
class _MintAnswer:
    network: str
    mint: str
    facts: Mint | None
    refusal: Error | None


def _check_mint(intent: wcore.Intent, answer: _MintAnswer | None) -> None:
    """A Solana token intent names the program that owns its mint (Token-2022 by name,
    SPL Token by naming none) and the mint's decimals. Checked against the chain when the
    server reads the intent's network (once the policy has allowed the mint); without a
    node there, the approvers' own decoding of the bytes is the check."""
    if (
        answer is None
        or intent.sol is None
        or (answer.network, answer.mint) != (intent.network, intent.token)
    ):
        return
    if answer.refusal is not None:
        raise answer.refusal
    if answer.facts is None:
        return
    mint, owner = answer.mint, answer.facts.program
    named = intent.sol.token_program or stx.TOKEN_PROGRAM
    if owner != named and owner == stx.TOKEN_2022_PROGRAM:
        raise InputError(f"mint {mint} is a Token-2022 mint: intent.solana.token_program must name {owner}")
    if owner != named:
        raise InputError(
            f"mint {mint} is an SPL Token mint: intent.solana.token_program is named only for Token-2022"
        )
    if intent.sol.decimals != answer.facts.decimals:
        raise InputError(
            f"mint {mint} has {answer.facts.decimals} decimals on {intent.network}; "
            f"intent.solana.decimals says {intent.sol.decimals}"
        )


def _address_book(session: Session, now: int) -> list[AddressBookEntry]:
    """:func:`policies.address_book`: the entries in force at ``now``."""
    additions, removals = facts.kept(session, "address_book", policies.address_book_facts)
    return wcore.address_book_at(additions, removals, now)


def _membership(session: Session) -> dict[str, Standing]:
    """:func:`current_membership`, a copy the caller may keep."""
    return dict(facts.kept(session, "membership", current_membership))


def _seen_answer(session: Session, key: str | None, request_hash: str) -> ReleaseAnswer | None:
    """The answer stored for Idempotency-Key ``key``, if any; a different request under
    the same key is refused."""
    seen = session.get(Idempotency, key) if key is not None else None
    if seen is None:
        return None
    if seen.request_hash != request_hash:
        raise IdempotencyConflictError("that Idempotency-Key was used for a different request")
    return ReleaseAnswer(seen.status_code, loads_strict(seen.response))


def _claim_nonce(session: Session, intent: wcore.Intent, *, withdrawal_id: str, now: int) -> None:
    """One live withdrawal per (chain, network, from, nonce) (THREATS 37). A claim left
    by a request that has since expired or ended unspent is taken over; any other is a
    refusal. The table's primary key refuses a second claim even if this check raced."""
    assert intent.eth is not None  # only Ethereum intents carry a nonce
    key = (intent.chain, intent.network, intent.from_address, intent.eth.nonce)
    held = session.get(WithdrawalNonce, key)
    if held is not None:
        other = session.get(Withdrawal, held.withdrawal)
        if other is not None and wcore.holds_nonce(other.status, other.expires_at, now):
            raise NonceInUseError(
                f"nonce {intent.eth.nonce} of {intent.from_address} on {intent.chain}/{intent.network} "
                f"belongs to withdrawal {other.id} ({_status(other, now)}); reject or cancel it, "
                "or record it abandoned, before reusing the nonce",
                details={"nonce": intent.eth.nonce, "withdrawal": other.id},
            )
        session.delete(held)
        session.flush()
    session.add(
        WithdrawalNonce(
            chain=intent.chain,
            network=intent.network,
            address=intent.from_address,
            nonce=intent.eth.nonce,
            withdrawal=withdrawal_id,
            created_at=now,
        )
    )
    session.flush()


def _free_claims(session: Session, row: Withdrawal) -> None:
    """A request that ended without its transaction being spent gives back what it held:
    its Ethereum nonce and its Bitcoin outputs."""
    for claim in session.exec(select(WithdrawalNonce).where(WithdrawalNonce.withdrawal == row.id)).all():
        session.delete(claim)
    outpoints.release(session, row)


def _raise_tampered(answer: ReleaseAnswer) -> ReleaseAnswer:
    """Raise a refusal that was committed with its entry (tampered, escalated)."""
    if answer.status_code != 200:
        err: Error
        if answer.body.get("code") == EscalatedError.code:
            err = EscalatedError(answer.body.get("message", "escalated"), details=answer.body.get("details"))
        else:
            err = TamperedError(answer.body.get("message", "tampered"))
        # The entry is already in the log; the app's handler must not add a refusal.
        err.audited = True
        raise err
    return answer


def _required(row: Withdrawal) -> dict[Role, int]:
    """The approvals this request needs now: the decision made at creation, raised by
    any escalation recorded at a release attempt."""
    required = {Role(k): v for k, v in loads_strict(row.decision)["required"].items()}
    if row.escalated:
        for k, v in loads_strict(row.escalated).items():
            required[Role(k)] = max(required.get(Role(k), 0), v)
    return required


def _request(row: Withdrawal) -> engine.Request:
    return engine.Request(
        requester=row.requester,
        kind="withdrawal",
        digest=row.tx_digest,
        policy_version=row.policy_version,
        created_at=row.created_at,
    )


def _given(a: Approval) -> engine.Given:
    """A stored approval as the engine reads it; its signature is re-verified by the
    tamper check before any release."""
    body = loads_strict(a.envelope)["action"]["body"]
    return engine.Given(
        member=a.member,
        role=Role(a.role),
        at=a.created_at,
        digest=body["tx_digest"],
        policy_version=body["policy_version"],
        expires_at=body["expires_at"],
    )


_APPROVALS_KEY = "tandem.withdrawal_approvals"


def _approvals(session: Session, withdrawal_id: str) -> list[Approval]:
    """A withdrawal's approval records, oldest first: read once per transaction (the
    tamper check, the quorum and the answer of one release share the one query);
    :func:`_add_approval` keeps the memo in step with what this transaction writes."""
    memo: dict[str, list[Approval]] = session.info.setdefault(_APPROVALS_KEY, {})
    found = memo.get(withdrawal_id)
    if found is None:
        found = memo[withdrawal_id] = list(
            session.exec(
                select(Approval)
                .where(Approval.subject == withdrawal_id)
                .order_by(col(Approval.created_at), col(Approval.id))
            ).all()
        )
    return list(found)


def _load_approvals(session: Session, withdrawal_ids: list[str]) -> None:
    """The approvals of several withdrawals in one query, into the transaction's memo."""
    memo: dict[str, list[Approval]] = session.info.setdefault(_APPROVALS_KEY, {})
    wanted = [w for w in withdrawal_ids if w not in memo]
    if not wanted:
        return
    memo.update(approvals_of(session, wanted))


def _status_condition(status: str, now: int) -> Any:
    """SQL for ``wcore.effective_status(...) == status``."""
    st = col(Withdrawal.status)
    if status == wcore.EXPIRED:
        return and_(st.in_(sorted(wcore.OPEN)), col(Withdrawal.expires_at) <= now)
    if status == wcore.LAPSED:
        return and_(
            st == wcore.RELEASED,
            col(Withdrawal.release_expires_at).is_not(None),
            col(Withdrawal.release_expires_at) <= now,
        )
    if status in wcore.OPEN:
        return and_(st == status, col(Withdrawal.expires_at) > now)
    if status == wcore.RELEASED:
        return and_(
            st == status,
            or_(col(Withdrawal.release_expires_at).is_(None), col(Withdrawal.release_expires_at) > now),
        )
    return st == status


def _add_approval(session: Session, approval: Approval) -> None:
    """Insert an approval, and note it in the transaction's memo (the newest is last)."""
    existing = _approvals(session, approval.subject)
    session.add(approval)
    session.flush()
    session.info[_APPROVALS_KEY][approval.subject] = [*existing, approval]


def _no_approvals_yet(session: Session, withdrawal_id: str) -> None:
    """A withdrawal created in this transaction has no approval: no query for that."""
    session.info.setdefault(_APPROVALS_KEY, {})[withdrawal_id] = []
