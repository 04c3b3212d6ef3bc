"""Using a key set: one-time operation keys and the shares members re-seal to them.

The signer holds each operation's X25519 private key in this process's memory only;
the database holds only the re-sealed shares (ciphertexts). So the server with its
database cannot open a key set at rest, and an operation key dies with its first use
or with the process (see docs/adr/0003). The operation's public key is signed by the
service key, so a member's client can check it re-seals to Tandem's signer and to
the operation it means, not to a key someone else substituted.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlmodel import Session, select

from tandem.core import split
from tandem.core.canonical import domain_bytes
from tandem.core.identity import b64, unb64
from tandem.core.lifecycles import KEYSETS
from tandem.core.roles import Role
from tandem.core.split import operation_statement
from tandem.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    OperationKeyLostError,
    ReshareRequiredError,
    ShareAlreadyStoredError,
    TotpError,
)
from tandem.services.base import Call, Runner
from tandem.store import facts
from tandem.store.models import KeySet, OperationShare

OPERATION_SECONDS = 24 * 3600
_lock = threading.Lock()


_SHARES_KEY = "tandem.operation_shares"


def operation_shares(session: Session, operation: str) -> dict[str, OperationShare]:
    """The shares ``operation`` holds, by side: read once per transaction (a request's
    checks, its answer and a release's key opening share the one query);
    :meth:`KeyUseService.store_share` keeps the memo in step with what this transaction
    writes, and nothing else writes or deletes shares."""
    memo: dict[str, dict[str, OperationShare]] = session.info.setdefault(_SHARES_KEY, {})
    found = memo.get(operation)
    if found is None:
        found = memo[operation] = {
            r.side: r
            for r in session.exec(select(OperationShare).where(OperationShare.operation == operation)).all()
        }
    return found


class OperationKeys:
    """Process-local registry of live operation keys (never persisted, never logged)."""

    def __init__(self) -> None:
        self._keys: dict[str, split.OperationKey] = {}

    def create(self, operation_id: str) -> split.OperationKey:
        with _lock:
            if operation_id in self._keys:
                raise ConflictError("operation already exists")
            key = split.OperationKey()
            self._keys[operation_id] = key
            return key

    def get(self, operation_id: str) -> split.OperationKey:
        with _lock:
            key = self._keys.get(operation_id)
        if key is None or key.closed:
            raise OperationKeyLostError(
                "the signer no longer holds this operation's key (used, or the server restarted); "
                "both sides must contribute their shares to a new operation"
            )
        return key

    def discard(self, operation_id: str) -> None:
        with _lock:
            key = self._keys.pop(operation_id, None)
        if key is not None:
            key.close()


class KeyUseService:
    """Operation keys and the shares re-sealed to them, for every flow that opens a key set."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # Replaced whole to stand for a restart (the signer's memory lost).
        self.operations = OperationKeys()

    def new_operation(self, call: Call, *, keyset_id: str, purpose: str, held: bool = True) -> dict[str, Any]:
        """Inside a use case: make a one-time operation key for ``keyset_id``. ``held=False``
        is for a key set this database does not hold yet (an import)."""
        if held and call.session.get(KeySet, keyset_id) is None:
            raise NotFoundError(f"no key set {keyset_id}")
        operation = "op_" + secrets.token_hex(10)
        key = self.operations.create(operation)
        statement = operation_statement(
            operation=operation,
            keyset=keyset_id,
            purpose=purpose,
            public_key=key.public_hex,
            expires_at=call.now + OPERATION_SECONDS,
        )
        return {
            "statement": statement,
            "signature": b64(self.runner.key.sign(domain_bytes("operation-key", statement))),
        }

    def store_share(self, call: Call, *, operation: str, keyset_id: str, side: str, sealed_b64: Any) -> None:
        """Record a member's re-sealed share for an operation (ciphertext only).

        A share, once stored for an operation and side, stands: a second one for the same
        side is refused, whoever sends it, so no member can swap in a share of its own
        for the one an approver contributed. A custodian's share goes in only with a
        TOTP code checked in the same call, as every custodian step of every flow needs.
        A share sealed to an operation key this signer no longer holds (a restart) could
        never be opened: it is refused, so no approval stands that cannot be released.
        """
        self.operations.get(operation)
        if not isinstance(sealed_b64, str):
            raise InputError("sealed_share must be base64")
        sealed = unb64(sealed_b64, what="sealed_share")
        assert call.actor is not None
        if side == Role.CUSTODIAN.value and not call.totp_verified:
            raise TotpError("a custodian's share needs a TOTP code with it")
        held = operation_shares(call.session, operation)
        if side in held:
            raise ShareAlreadyStoredError(
                f"operation {operation} already holds a {side} share; it is never replaced "
                "(after a failure, renew the operation and contribute to the new one)"
            )
        share = OperationShare(
            operation=operation,
            keyset=keyset_id,
            side=side,
            member=call.actor.id,
            sealed=b64(sealed),
            created_at=call.now,
        )
        call.session.add(share)
        held[side] = share

    @staticmethod
    def has_share(call: Call, *, operation: str, side: str) -> bool:
        """Whether ``operation`` already holds a share of ``side``."""
        return side in operation_shares(call.session, operation)

    @contextlib.contextmanager
    def private_keys(
        self, call: Call, *, keyset_id: str, operation: str, key_ids: Sequence[str]
    ) -> Iterator[dict[str, bytearray]]:
        """Combine both re-sealed shares, decrypt ``key_ids``, yield, then wipe and forget
        the operation key. Refuses unless the key set is active."""
        self.runner.require_unsealed()
        keyset = facts.kept_row(call.session, KeySet, keyset_id)
        if keyset is None:
            raise NotFoundError(f"no key set {keyset_id}")
        if not KEYSETS.allows(keyset.status, "sign"):
            raise ReshareRequiredError(
                f"key set {keyset_id} is {keyset.status}: a reshare ceremony must rotate its data key first"
            )
        # Missing shares are refused before the operation key is touched, so the
        # operation survives until both sides have contributed.
        self._operation_shares(call, operation)
        sealed = split.SealedKeyset.from_json(keyset.sealed)
        keys: dict[str, bytearray] = {}
        try:
            with self.open_dek(call, sealed=sealed, operation=operation) as dek:
                for key_id in key_ids:
                    k = sealed.key(key_id)
                    keys[key_id] = split.decrypt_private_key(
                        dek,
                        keyset_id=keyset_id,
                        key_id=key_id,
                        public_key=k.public_key,
                        blob=k.ciphertext,
                    )
            yield keys
        finally:
            for buf in keys.values():
                split.wipe(buf)
            self.operations.discard(operation)

    @staticmethod
    def _operation_shares(call: Call, operation: str) -> dict[str, OperationShare]:
        rows = operation_shares(call.session, operation)
        missing = [s for s in split.SIDES if s not in rows]
        if missing:
            raise InputError(f"operation {operation} lacks the {' and '.join(missing)} share")
        return rows

    @contextlib.contextmanager
    def open_dek(self, call: Call, *, sealed: split.SealedKeyset, operation: str) -> Iterator[bytearray]:
        """Both re-sealed shares of ``operation`` opened into the key set's DEK, whatever
        its status (a reshare uses this to repair ``reshare_required``). The DEK is wiped
        on exit and the operation key forgotten once a DEK has been rebuilt; after a
        refused share the key stays, and stored shares are never replaced: the flow
        renews its operation and both sides contribute to the new one."""
        rows = self._operation_shares(call, operation)
        op_key = self.operations.get(operation)
        with split.open_operation_shares(
            op_key,
            keyset_id=sealed.keyset_id,
            operation_id=operation,
            sealed_manager=unb64(rows["manager"].sealed, what="share"),
            sealed_custodian=unb64(rows["custodian"].sealed, what="share"),
            commitments=sealed.commitments,
            dek_check=sealed.dek_check,
        ) as dek:
            try:
                yield dek
            finally:
                self.operations.discard(operation)
