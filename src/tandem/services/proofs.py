"""Use cases for proof of ownership.

A custodian or auditor issues a challenge; the service makes one operation key per key
set in scope; a manager and a custodian each re-seal their share to it
(``proof.contribute``, the custodian's with a TOTP code). The contribution that
completes the last key set also signs every address in scope and stores the bundle;
the audit log records the challenge, each contribution and the bundle hash.

Which operation belongs to which challenge is held in this process's memory, exactly
as long as the operation keys themselves (see :mod:`tandem.services.keyuse`): after a
restart both are gone, and ``proof.operations`` issues fresh ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
from collections.abc import Iterable
from typing import Any

from sqlmodel import col, select

from tandem.core import approvals as engine
from tandem.core import proofs as core
from tandem.core import split
from tandem.core import withdrawal as wcore
from tandem.core.approvals import QuorumResult
from tandem.core.canonical import canonical, check_fields, loads_strict
from tandem.core.chains import ethereum as eth
from tandem.core.lifecycles import CHALLENGES, KEYSETS, ChallengeState
from tandem.core.roles import Role
from tandem.errors import (
    ConflictError,
    Error,
    ExpiredError,
    InputError,
    InvalidStateError,
    NotFoundError,
    ReshareRequiredError,
    TotpError,
)
from tandem.services.approvals import current_membership
from tandem.services.base import Call, Runner
from tandem.services.keyuse import KeyUseService
from tandem.store import audit_log, pages
from tandem.store.models import AddressRow, KeyRow, KeySet, Member, OperationShare, ProofChallenge

ISSUERS = (Role.CUSTODIAN, Role.AUDITOR)
CONTRIBUTORS = (Role.MANAGER, Role.CUSTODIAN)
# Every key set in scope signs only once a manager and a custodian have both contributed.
PROOF_CONTRIBUTORS = {Role.CUSTODIAN: 1, Role.MANAGER: 1}
DEFAULT_CHALLENGE_SECONDS = 7 * 24 * 3600
_proof_lock = threading.Lock()


def _purpose(challenge_id: str) -> str:
    return f"proof:{challenge_id}"


class ProofService:
    """Proof of ownership, on the runner and the operation keys that sign it."""

    def __init__(self, runner: Runner, keys: KeyUseService) -> None:
        self.runner = runner
        self.keys = keys
        # Process-local map: challenge -> key set -> operation document.
        self._proof_operations: dict[str, dict[str, dict[str, Any]]] = {}

    def _proof_ops(self) -> dict[str, dict[str, dict[str, Any]]]:
        return self._proof_operations

    def _set_proof_ops(self, challenge_id: str, ops: dict[str, dict[str, Any]]) -> None:
        with _proof_lock:
            old = self._proof_ops().pop(challenge_id, {})
            self._proof_ops()[challenge_id] = ops
        for doc in old.values():
            self.keys.operations.discard(split.operation_id(doc))

    def _drop_proof_ops(self, challenge_id: str) -> None:
        with _proof_lock:
            old = self._proof_ops().pop(challenge_id, {})
        for doc in old.values():
            self.keys.operations.discard(split.operation_id(doc))

    def _current_proof_ops(self, challenge_id: str) -> dict[str, dict[str, Any]] | None:
        with _proof_lock:
            ops = self._proof_ops().get(challenge_id)
            return dict(ops) if ops is not None else None

    def _new_proof_ops(
        self, call: Call, challenge_id: str, keysets: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        ops: dict[str, dict[str, Any]] = {}
        try:
            for keyset_id in keysets:
                ops[keyset_id] = self.keys.new_operation(
                    call, keyset_id=keyset_id, purpose=_purpose(challenge_id)
                )
        except Exception:
            for doc in ops.values():
                self.keys.operations.discard(split.operation_id(doc))
            raise
        return ops

    # --- issuing a challenge ------------------------------------------------------------

    def issue_proof_challenge(self, envelope: Any) -> dict[str, Any]:
        """``proof.challenge`` body: ``{statement, scope, expires_at?, nonce?}``."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(
                call.action.body,
                required=("statement", "scope"),
                optional=("expires_at", "nonce"),
                where="body",
            )
            scope = core.check_scope(body["scope"])
            expires_at = body.get("expires_at", call.now + DEFAULT_CHALLENGE_SECONDS)
            if isinstance(expires_at, bool) or not isinstance(expires_at, int):
                raise InputError("body.expires_at must be unix seconds")
            nonce = core.check_nonce(body["nonce"]) if "nonce" in body else secrets.token_hex(16)
            if call.session.exec(select(ProofChallenge).where(ProofChallenge.nonce == nonce)).first():
                raise ConflictError("a challenge with this nonce exists already; nonces are used once")
            rows = self._addresses_for_scope(call, scope, keysets=None)
            keysets = sorted({r.keyset for r in rows})
            self._require_active(call, keysets)
            challenge_id = "pc_" + secrets.token_hex(8)
            doc = core.make_challenge(
                challenge_id=challenge_id,
                deployment=call.deployment.id,
                entity=call.deployment.entity,
                nonce=nonce,
                statement=body["statement"],
                scope=scope,
                keysets=keysets,
                issuer=call.actor.id,
                issuer_role=call.actor.role,
                created_at=call.now,
                expires_at=expires_at,
            )
            call.session.add(
                ProofChallenge(
                    id=challenge_id,
                    nonce=nonce,
                    doc=canonical(doc).decode(),
                    issuer=call.actor.id,
                    status=ChallengeState.OPEN,
                    created_at=call.now,
                    expires_at=expires_at,
                )
            )
            call.session.flush()
            self.runner.audit(call, "proof.challenge", {"challenge": doc, "addresses": len(rows)})
            ops = self._new_proof_ops(call, challenge_id, keysets)
            self._set_proof_ops(challenge_id, ops)
            return self._challenge_view(call, call.session.get(ProofChallenge, challenge_id), call.actor)

        return self.runner.run("proof.challenge", envelope, use_case, types="proof.challenge", roles=ISSUERS)

    def renew_proof_operations(self, envelope: Any) -> dict[str, Any]:
        """``proof.operations`` body ``{challenge}``: fresh operation keys for an open
        challenge (after a restart, or a failed signing); earlier contributions lapse."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(call.action.body, required=("challenge",), where="body")
            row, doc = self._open_challenge(call, body["challenge"])
            self._require_active(call, doc["keysets"])
            ops = self._new_proof_ops(call, row.id, doc["keysets"])
            self._set_proof_ops(row.id, ops)
            self.runner.audit(
                call,
                "proof.operations",
                {
                    "challenge": row.id,
                    "operations": {k: split.operation_id(v) for k, v in sorted(ops.items())},
                },
            )
            return self._challenge_view(call, row, call.actor)

        return self.runner.run(
            "proof.operations",
            envelope,
            use_case,
            types="proof.operations",
            roles=(Role.MANAGER, Role.CUSTODIAN, Role.AUDITOR),
        )

    # --- contributions and signing ------------------------------------------------------

    def contribute_proof(self, envelope: Any, *, totp: str | None) -> dict[str, Any]:
        """``proof.contribute`` body ``{challenge, keyset, operation, sealed_share}``, or
        ``{challenge, shares: [{keyset, operation, sealed_share}, ...]}`` to contribute to
        several key sets under one TOTP code. A custodian's needs a TOTP code."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            shares = _contribution_shares(call.action.body)
            side = "manager" if call.actor.role == Role.MANAGER.value else "custodian"
            if side == "custodian" and totp is None:
                raise TotpError("a custodian's contribution needs a TOTP code")
            row, doc = self._open_challenge(call, call.action.body["challenge"])
            ops = self._current_proof_ops(row.id)
            if ops is None:
                raise InvalidStateError(
                    "the signer no longer holds this challenge's operation keys (the server "
                    "restarted or a signing failed); renew them with `tandem proof renew`"
                )
            for keyset_id, operation, sealed in shares:
                if keyset_id not in doc["keysets"]:
                    raise InputError(f"key set {keyset_id} is not in this challenge's scope")
                if split.operation_id(ops[keyset_id]) != operation:
                    raise ConflictError(
                        f"operation {operation} is not the current operation of key set "
                        f"{keyset_id} "
                        "for this challenge; fetch the challenge again"
                    )
                self.keys.store_share(
                    call, operation=operation, keyset_id=keyset_id, side=side, sealed_b64=sealed
                )
            call.session.flush()
            self.runner.audit(
                call,
                "proof.contributed",
                {
                    "challenge": row.id,
                    "side": side,
                    "keysets": [k for k, _, _ in shares],
                    "operations": [o for _, o, _ in shares],
                },
            )
            if all(result.met for result in self._contributions(call, row, ops).values()):
                self._sign_bundle(call, row, doc, ops)
            return self._challenge_view(call, row, call.actor)

        return self.runner.run(
            "proof.contribute",
            envelope,
            use_case,
            types="proof.contribute",
            roles=CONTRIBUTORS,
            totp=totp,
            signing=True,
        )

    def _sign_bundle(
        self, call: Call, row: ProofChallenge, doc: dict[str, Any], ops: dict[str, dict[str, Any]]
    ) -> None:
        self._require_active(call, doc["keysets"])
        rows = self._addresses_for_scope(call, doc["scope"], keysets=doc["keysets"])
        by_key: dict[str, list[AddressRow]] = {}
        for r in rows:
            by_key.setdefault(r.key_id, []).append(r)
        publics = {
            k.id: bytes.fromhex(k.public_key)
            for k in call.session.exec(select(KeyRow).where(col(KeyRow.id).in_(list(by_key)))).all()
        }
        date = core.utc_date(call.now)
        # The checkpoint now covers the challenge and every contribution; the bundle's
        # own hash goes into the entry after it.
        checkpoint = audit_log.latest_checkpoint(call.session)
        proofs: list[dict[str, Any]] = []
        try:
            self._sign_all(
                call,
                doc=doc,
                ops=ops,
                rows=rows,
                by_key=by_key,
                publics=publics,
                date=date,
                proofs=proofs,
            )
        except Exception:
            # Some operation keys may be spent already; members renew and contribute again.
            self._drop_proof_ops(row.id)
            raise
        bundle = core.build_bundle(challenge=doc, signed_at=call.now, checkpoint=checkpoint, proofs=proofs)
        # Bundle text and hash come from one serialisation, so what is stored is what was hashed.
        text = core.bundle_bytes(bundle).decode("utf-8")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        row.bundle = text
        row.bundle_hash = digest
        row.status = CHALLENGES.transition(row.status, "sign", expires_at=row.expires_at, now=call.now)
        call.session.add(row)
        self.runner.audit(
            call,
            "proof.bundle",
            {
                "challenge": row.id,
                "nonce": doc["nonce"],
                "bundle_hash": digest,
                "proofs": len(proofs),
                "signed_at": call.now,
                "checkpoint_tree_size": checkpoint["checkpoint"]["tree_size"] if checkpoint else None,
            },
            with_envelope=False,
        )
        self._drop_proof_ops(row.id)

    def _sign_all(
        self,
        call: Call,
        *,
        doc: dict[str, Any],
        ops: dict[str, dict[str, Any]],
        rows: list[AddressRow],
        by_key: dict[str, list[AddressRow]],
        publics: dict[str, bytes],
        date: str,
        proofs: list[dict[str, Any]],
    ) -> None:
        for keyset_id in doc["keysets"]:
            key_ids = sorted({r.key_id for r in rows if r.keyset == keyset_id})
            operation = split.operation_id(ops[keyset_id])
            with self.keys.private_keys(
                call, keyset_id=keyset_id, operation=operation, key_ids=key_ids
            ) as keys:
                for key_id in key_ids:
                    # The chain signers take bytes; this copy lives only for this key's addresses.
                    private_key = bytes(keys[key_id])
                    try:
                        for r in by_key[key_id]:
                            proofs.append(
                                core.sign_proof(
                                    chain=r.chain,
                                    network=r.network,
                                    address=r.address,
                                    public_key=publics[key_id],
                                    segregation=r.segregation,
                                    private_key=private_key,
                                    entity=doc["entity"],
                                    nonce=doc["nonce"],
                                    date=date,
                                )
                            )
                    finally:
                        del private_key

    # --- reads ----------------------------------------------------------------------------

    def list_proof_challenges(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of challenges, oldest first; the status filter (as it reads now,
        expiry included) runs in SQL."""
        now = self.runner.clock()
        query = select(ProofChallenge)
        if status:
            query = query.where(
                pages.expiring_status(
                    col(ProofChallenge.status),
                    col(ProofChallenge.expires_at),
                    status,
                    expiring=CHALLENGES.expiring,
                    expired=CHALLENGES.expired or status,
                    now=now,
                )
            )
        with self.runner.db.read() as session:
            page = pages.read_page(
                session,
                query,
                kind="proofs",
                order=(col(ProofChallenge.created_at), col(ProofChallenge.id)),
                limit=limit,
                cursor=cursor,
            )
            items = [
                {
                    "id": r.id,
                    "nonce": r.nonce,
                    "status": _status(r, now),
                    "issuer": r.issuer,
                    "created_at": r.created_at,
                    "expires_at": r.expires_at,
                    "bundle_hash": r.bundle_hash,
                }
                for r in page.rows
            ]
        return {"items": items, "next_cursor": page.next_cursor}

    def get_proof_challenge(self, challenge_id: str, *, viewer: Member) -> dict[str, Any]:
        with self.runner.db.read() as session:
            row = session.get(ProofChallenge, challenge_id)
            if row is None:
                raise NotFoundError(f"no proof challenge {challenge_id}")
            call = Call(session, self.runner.clock(), self.runner.deployment(session))
            return self._challenge_view(call, row, viewer)

    def get_proof_bundle(self, challenge_id: str) -> tuple[str, str]:
        """The bundle's canonical text and its hash."""
        with self.runner.db.read() as session:
            row = session.get(ProofChallenge, challenge_id)
            if row is None:
                raise NotFoundError(f"no proof challenge {challenge_id}")
            if row.bundle is None or row.bundle_hash is None:
                raise InvalidStateError(
                    f"challenge {challenge_id} is {_status(row, self.runner.clock())}; "
                    "no bundle until both sides have contributed"
                )
            return row.bundle, row.bundle_hash

    # --- helpers ----------------------------------------------------------------------------

    def _open_challenge(self, call: Call, challenge_id: Any) -> tuple[ProofChallenge, dict[str, Any]]:
        if not isinstance(challenge_id, str):
            raise InputError("body.challenge must be a challenge id")
        row = call.session.get(ProofChallenge, challenge_id)
        if row is None:
            raise NotFoundError(f"no proof challenge {challenge_id}")
        try:
            CHALLENGES.transition(row.status, "contribute", expires_at=row.expires_at, now=call.now)
        except ExpiredError:
            self._drop_proof_ops(row.id)
            raise
        return row, loads_strict(row.doc)

    def _require_active(self, call: Call, keysets: Iterable[str]) -> None:
        for keyset_id in keysets:
            keyset = call.session.get(KeySet, keyset_id)
            if keyset is None:
                raise NotFoundError(f"no key set {keyset_id}")
            if not KEYSETS.allows(keyset.status, "sign"):
                raise ReshareRequiredError(
                    f"key set {keyset_id} is {keyset.status}: it cannot sign proofs until a "
                    "reshare ceremony makes it active again (or narrow the scope)"
                )

    def _addresses_for_scope(
        self, call: Call, scope: dict[str, Any], keysets: list[str] | None
    ) -> list[AddressRow]:
        """The addresses in ``scope``, read through an index: O(addresses in scope),
        whatever else the deployment holds and however long its log."""
        query = select(AddressRow)
        if keysets is not None:
            query = query.where(col(AddressRow.keyset).in_(keysets))
        kind = scope["kind"]
        if kind == "keyset":
            query = query.where(AddressRow.keyset == scope["keyset"])
        elif kind == "segregation":
            # Through the key sets of that class (a handful of rows), then the keyset index.
            holders = call.session.exec(
                select(KeySet.id).where(KeySet.segregation == scope["segregation"])
            ).all()
            query = query.where(
                col(AddressRow.keyset).in_(list(holders)), AddressRow.segregation == scope["segregation"]
            )
        elif kind == "addresses":
            # Every stored spelling an address can have, looked up through the
            # (chain, network, address) index; the exact comparison follows below.
            chains = sorted(wcore.NETWORKS)
            networks = sorted({n for nets in wcore.NETWORKS.values() for n in nets})
            query = query.where(
                col(AddressRow.chain).in_(chains),
                col(AddressRow.network).in_(networks),
                col(AddressRow.address).in_(sorted(_spellings(scope["addresses"]))),
            )
        rows = list(call.session.exec(query.order_by(col(AddressRow.id))).all())
        if kind == "addresses":
            wanted = {core.normalise_address(a): a for a in scope["addresses"]}
            rows = [r for r in rows if core.normalise_address(r.address) in wanted]
            found = {core.normalise_address(r.address) for r in rows}
            missing = [a for n, a in wanted.items() if n not in found]
            if missing and keysets is None:
                shown = ", ".join(missing[:5]) + (
                    f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
                )
                raise NotFoundError(f"not an address of this deployment: {shown}")
        if not rows and keysets is None:
            raise NotFoundError("the scope matches no address")
        return rows

    def _sides(self, call: Call, ops: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
        by_op = {split.operation_id(doc): keyset for keyset, doc in ops.items()}
        sides: dict[str, list[str]] = {keyset: [] for keyset in ops}
        if by_op:
            shares = call.session.exec(
                select(OperationShare).where(col(OperationShare.operation).in_(list(by_op)))
            ).all()
            for share in shares:
                sides[by_op[share.operation]].append(share.side)
        return {k: sorted(v) for k, v in sides.items()}

    def _contributions(
        self, call: Call, row: ProofChallenge, ops: dict[str, dict[str, Any]]
    ) -> dict[str, QuorumResult]:
        """Per key set in scope, whether a manager and a custodian have both contributed,
        counted by the approval engine. The issuer may be one of them: a challenge asks
        for proof, not for someone else's consent, so it has no requester."""
        by_op = {split.operation_id(doc): keyset for keyset, doc in ops.items()}
        given: dict[str, list[engine.Given]] = {keyset: [] for keyset in ops}
        shares = call.session.exec(
            select(OperationShare).where(col(OperationShare.operation).in_(list(by_op)))
        ).all()
        for share in shares:
            given[by_op[share.operation]].append(
                engine.Given(member=share.member, role=Role(share.side), at=share.created_at)
            )
        request = engine.Request(requester=None, kind="proof", created_at=row.created_at)
        membership = current_membership(call.session)
        return {
            keyset: engine.evaluate(
                request, items, membership=membership, required=PROOF_CONTRIBUTORS, now=call.now
            )
            for keyset, items in given.items()
        }

    def _challenge_view(self, call: Call, row: ProofChallenge | None, viewer: Member) -> dict[str, Any]:
        assert row is not None
        doc = loads_strict(row.doc)
        ops = self._current_proof_ops(row.id) if row.status == ChallengeState.OPEN else None
        sides = self._sides(call, ops) if ops else {}
        share_holder = viewer.role in (Role.MANAGER.value, Role.CUSTODIAN.value)
        keysets = []
        for keyset_id in doc["keysets"]:
            entry: dict[str, Any] = {
                "keyset": keyset_id,
                "operation": (ops or {}).get(keyset_id),
                "contributed": sides.get(keyset_id, []),
            }
            if share_holder and row.status == ChallengeState.OPEN:
                keyset = call.session.get(KeySet, keyset_id)
                entry["sealed"] = keyset.sealed if keyset is not None else None
            keysets.append(entry)
        return {
            "id": row.id,
            "nonce": row.nonce,
            "status": _status(row, call.now),
            "challenge": doc,
            "keysets": keysets,
            "bundle_hash": row.bundle_hash,
            "operations_held": ops is not None,
        }


def _spellings(addresses: Iterable[str]) -> set[str]:
    """The forms a scope address may be stored in: as given, and for the case-insensitive
    kinds (hex, bech32) lower case, upper case and (hex) EIP-55."""
    out: set[str] = set()
    for address in addresses:
        given = address.strip()
        norm = core.normalise_address(given)
        out.update({given, norm})
        if norm.startswith("0x"):
            out.add("0x" + norm[2:].upper())
            with contextlib.suppress(Error):
                out.add(eth.to_checksum_address(norm))
        elif norm != given or norm.startswith(("bc1", "tb1", "bcrt1")):
            out.add(norm.upper())
    return out


def _status(row: ProofChallenge, now: int) -> str:
    return CHALLENGES.effective(row.status, expires_at=row.expires_at, now=now)


def _contribution_shares(body: Any) -> list[tuple[str, str, str]]:
    """``(keyset, operation, sealed_share)`` for each share a contribution carries."""
    if isinstance(body, dict) and "shares" in body:
        check_fields(body, required=("challenge", "shares"), where="body")
        items = body["shares"]
        if not isinstance(items, list) or not 1 <= len(items) <= 1000:
            raise InputError("body.shares must be a list of 1-1000 shares")
    else:
        check_fields(body, required=("challenge", "keyset", "operation", "sealed_share"), where="body")
        items = [{k: body[k] for k in ("keyset", "operation", "sealed_share")}]
    out: list[tuple[str, str, str]] = []
    for i, item in enumerate(items):
        check_fields(item, required=("keyset", "operation", "sealed_share"), where=f"body.shares[{i}]")
        if not all(isinstance(item[k], str) for k in ("keyset", "operation", "sealed_share")):
            raise InputError(f"body.shares[{i}] fields must be strings")
        out.append((item["keyset"], item["operation"], item["sealed_share"]))
    if len({k for k, _, _ in out}) != len(out):
        raise InputError("a contribution names a key set twice")
    return out
