"""The use-case framework: every state change runs through :meth:`Runner.run`.

One :class:`Runner` serves every flow service of a :class:`tandem.services.Tandem`:
it holds the database, the service key, the clock and whether signing is sealed, and
owns transactions, signatures, second factors, refusals and audit appends.

``run`` opens one write transaction, authenticates the signed action, lets the use
case change state and append its audit entries, and commits. If anything raises a
Tandem :class:`Error`, the transaction rolls back and a *separate* transaction records
the refusal (and, for a wrong TOTP code, the failure count), then the error propagates.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session, col, select

from tandem.core import totp as totp_core
from tandem.core.actions import SignedAction, check_context, parse_envelope
from tandem.core.canonical import canonical, domain_bytes, loads_strict
from tandem.core.identity import IdentityCard
from tandem.core.lifecycles import MemberState
from tandem.core.roles import Role, a_role
from tandem.core.service_key import ServiceKey
from tandem.errors import (
    BadSignatureError,
    ConflictError,
    Error,
    InputError,
    KeyRotatedError,
    MemberRemovedError,
    NotFoundError,
    ReplayError,
    RoleNotAllowedError,
    SealedError,
    SessionError,
    TotpError,
    UnknownActorError,
)
from tandem.store import audit_log
from tandem.store.db import Database
from tandem.store.models import Deployment, Member, UsedNonce
from tandem.store.models import Session as SessionRow

T = TypeVar("T")
SESSION_SECONDS = 15 * 60

# A refusal is recorded as evidence, not as a copy of whatever arrived: one request from
# a stranger must not write a megabyte into the permanent log. A signed envelope of a
# verified member is kept whole up to this size (it can be re-verified later); anything
# else is kept as its hash, its size and what it claimed to be.
REFUSED_ENVELOPE_MAX_BYTES = 16 * 1024
REFUSED_ENVELOPE_DOMAIN = "refused-envelope"
REASON_MAX_CHARS = 300
CLAIM_MAX_CHARS = 80
_REFUSED_PREFIX = domain_bytes(REFUSED_ENVELOPE_DOMAIN, None)[: -len(canonical(None))]


FaultHook = Callable[[str], None]
# Empty in production: only the crash tests install a hook (tests/helpers/faults.py).
_fault_hooks: list[FaultHook] = []


def install_fault_hook(hook: FaultHook | None) -> None:
    """Let a crash test stop the process at named points; ``None`` removes the hook."""
    _fault_hooks.clear()
    if hook is not None:
        _fault_hooks.append(hook)


def fault_point(name: str) -> None:
    """A named point where a crash test may kill the process (THREATS 13)."""
    for hook in _fault_hooks:
        hook(name)


class Unrecorded(Exception):  # noqa: N818 - a carrier, not an error of its own
    """Carries an error out of :meth:`Runner.run` without recording a refusal: a
    retry's answer refused before the request was authenticated or anything was spent."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class Call:
    """What one use case knows about the request it is serving."""

    session: Session
    now: int
    deployment: Deployment
    action: SignedAction | None = None
    actor: Member | None = None
    envelope: dict[str, Any] | None = None
    # The actor's TOTP code was checked (and spent) in this very call.
    totp_verified: bool = False


class TotpGrant(str):
    """The second factor of one batch's items: the batch's TOTP code, already checked
    and spent for ``member``. Only :meth:`Runner.grant_totp` makes one, and it is
    honoured only while its batch runs (see :meth:`Runner.check_totp`)."""

    member: str

    def __new__(cls, member: str) -> TotpGrant:
        grant = super().__new__(cls, "batch")
        grant.member = member
        return grant


class Runner:
    """The machinery every flow service shares: one per :class:`Tandem`."""

    def __init__(self, db: Database, key: ServiceKey, *, clock: Callable[[], int]) -> None:
        self.db = db
        self.key = key
        self.clock = clock
        self.sealed_reason: str | None = None
        # The stable error code of the start-up check that sealed signing (None: unsealed).
        self.sealed_code: str | None = None
        self._grants_lock = threading.Lock()
        self._live_grants: set[int] = set()  # identities of the grants of running batches
        # The deployment row is written once, at genesis, and never changes: once a
        # transaction has found it committed, later calls need not read it again.
        self._known_deployment: Deployment | None = None

    # --- transactions ------------------------------------------------------------------

    def run(  # noqa: PLR0913 - the options of one signed write
        self,
        kind: str,
        envelope_doc: Any,
        use_case: Callable[[Call], T],
        *,
        types: str | Iterable[str],
        roles: Iterable[Role] | None = None,
        totp: str | None = None,
        require_totp: bool = False,
        signing: bool = False,
        answered: Callable[[Session], T | None] | None = None,
    ) -> T:
        """Authenticate ``envelope_doc`` and run ``use_case`` in one write transaction.

        ``answered``, when given, runs first in the same transaction, before anything
        is checked or spent: an answer the request already has (a retry) ends the call
        there, and a :class:`Unrecorded` error it raises is not a refusal to record."""
        if signing and answered is None:
            self.require_unsealed()
        now = self.clock()
        envelope = envelope_doc if isinstance(envelope_doc, dict) else None
        actor_id: str | None = None
        try:
            with self.db.write() as session:
                if answered is not None:
                    earlier = answered(session)
                    if earlier is not None:
                        return earlier
                    if signing:
                        self._require_unsealed_unrecorded()
                deployment = self._known_deployment or self.deployment(session)
                self._known_deployment = deployment
                action = parse_envelope(envelope_doc)
                # Only a verified signature names who acted: a refusal is never
                # attributed to a member whose key did not sign it.
                member = self.authenticate(session, action, roles=None)
                actor_id = member.id
                check_context(
                    action,
                    expected_type=types if isinstance(types, str) else frozenset(types),
                    deployment=deployment.id,
                    now=now,
                )
                self.check_role(member, roles)
                self.claim_nonce(session, action, now)
                totp_verified = require_totp or totp is not None
                if totp_verified:
                    self.check_totp(session, member, totp, now)
                call = Call(
                    session, now, deployment, action, member, action.to_json(), totp_verified=totp_verified
                )
                return use_case(call)
        except Unrecorded as unrecorded:
            raise unrecorded.error from None
        except (IntegrityError, DataError) as db_exc:
            exc = database_refusal(db_exc)
            self.record_refusal(kind, exc, envelope=envelope, actor=actor_id, now=now)
            raise exc from None
        except Error as exc:
            self.record_refusal(kind, exc, envelope=envelope, actor=actor_id, now=now)
            raise

    def run_plain(self, kind: str, use_case: Callable[[Call], T], *, actor: str | None = None) -> T:
        """A write with no signed action (genesis carries its own signatures)."""
        now = self.clock()
        try:
            with self.db.write() as session:
                # Genesis runs before any deployment exists; it looks itself up.
                call = Call(session, now, cast(Deployment, self.maybe_deployment(session)))
                return use_case(call)
        except (IntegrityError, DataError) as db_exc:
            exc = database_refusal(db_exc)
            self.record_refusal(kind, exc, envelope=None, actor=actor, now=now)
            raise exc from None
        except Error as exc:
            self.record_refusal(kind, exc, envelope=None, actor=actor, now=now)
            raise

    def record_refusal(
        self,
        kind: str,
        exc: Error,
        *,
        envelope: dict[str, Any] | None,
        actor: str | None,
        now: int,
        data: dict[str, Any] | None = None,
    ) -> None:
        if self.sealed_reason is not None or exc.audited:
            return
        exc.audited = True
        try:
            with self.db.write() as session:
                deployment = self.maybe_deployment(session)
                if deployment is None:
                    return
                member = session.get(Member, actor) if actor else None
                kept, received = refusal_evidence(envelope, authenticated=member is not None)
                if isinstance(exc, TotpError) and member is not None:
                    self._store_totp_state(
                        member,
                        totp_core.record_failure(self._totp_state(member), now=now, error=exc),
                    )
                    session.add(member)
                audit_log.append(
                    session,
                    self.key,
                    deployment=deployment.id,
                    kind=f"{kind}.refused",
                    actor=member.id if member else None,
                    outcome="refused",
                    code=exc.code,
                    envelope=kept,
                    data={
                        "reason": bounded_text(exc.message, REASON_MAX_CHARS),
                        **({"received": received} if received is not None else {}),
                        **(data or {}),
                    },
                    time=now,
                )
        except Error:
            # Never mask the original refusal; the caller still gets it.
            return

    def audit(
        self, call: Call, kind: str, data: dict[str, Any], *, with_envelope: bool = True
    ) -> dict[str, Any]:
        return audit_log.append(
            call.session,
            self.key,
            deployment=call.deployment.id,
            kind=kind,
            actor=call.actor.id if call.actor else None,
            outcome="ok",
            code=None,
            envelope=call.envelope if with_envelope else None,
            data=data,
            time=call.now,
        )

    # --- authentication ----------------------------------------------------------------

    def deployment(self, session: Session) -> Deployment:
        dep = self.maybe_deployment(session)
        if dep is None:
            raise NotFoundError("no deployment yet: run genesis first")
        return dep

    @staticmethod
    def maybe_deployment(session: Session) -> Deployment | None:
        return session.exec(select(Deployment)).first()

    def authenticate(self, session: Session, action: SignedAction, *, roles: Iterable[Role] | None) -> Member:
        member = session.get(Member, action.actor)
        if member is None:
            raise UnknownActorError("the action's signer is not a member of this deployment")
        try:
            action.verify(bytes.fromhex(member.sign_public))
        except BadSignatureError:
            # Name a retired key's signature for what it is (the key stays refused).
            history = key_history(session, member.id)
            for (old, _since), (_new, retired_at) in itertools.pairwise(history):
                if action.verifies_with(old):
                    raise KeyRotatedError(
                        f"signed with a key of {member.name!r} that a key rotation retired at "
                        f"{retired_at}; act with the new keystore"
                    ) from None
            raise
        if member.status != MemberState.ACTIVE:
            raise MemberRemovedError(f"member {member.name!r} has been removed")
        self.check_role(member, roles)
        return member

    @staticmethod
    def check_role(member: Member, roles: Iterable[Role] | None) -> None:
        if roles is not None:
            allowed = set(roles)
            if Role(member.role) not in allowed:
                names = ", ".join(sorted(r.value for r in allowed))
                raise RoleNotAllowedError(f"{a_role(member.role)} may not do this (allowed: {names})")

    def claim_nonce(self, session: Session, action: SignedAction, now: int) -> None:
        """Spend the action's nonce: one insert that does nothing when the nonce is
        already there (the primary key decides, inside the write transaction)."""
        row = {"nonce": action.nonce, "actor": action.actor, "used_at": now}
        dialect = session.get_bind().dialect.name
        make = pg_insert if dialect == "postgresql" else sqlite_insert
        insert = make(UsedNonce).values(**row).on_conflict_do_nothing().returning(col(UsedNonce.nonce))
        if session.connection().execute(insert).first() is None:
            raise ReplayError("this signed action was already used (nonce seen before)")

    @contextlib.contextmanager
    def grant_totp(self, member: str) -> Iterator[TotpGrant]:
        """A :class:`TotpGrant` for ``member``, honoured by :meth:`check_totp` until the
        block ends: a batch's code, checked once, standing for each of its items."""
        grant = TotpGrant(member)
        with self._grants_lock:
            self._live_grants.add(id(grant))
        try:
            yield grant
        finally:
            with self._grants_lock:
                self._live_grants.discard(id(grant))

    def check_totp(self, session: Session, member: Member, code: str | None, now: int) -> None:
        if isinstance(code, TotpGrant):
            with self._grants_lock:
                live = id(code) in self._live_grants
            if not live or code.member != member.id:
                raise TotpError("this batch's TOTP code does not stand for this signer")
            return
        if member.totp_sealed is None:
            raise TotpError(f"{member.name!r} has not enrolled a second factor yet (tandem totp enrol)")
        if code is None:
            raise TotpError("a TOTP code is required for this action")
        secret = self.key.unseal(bytes.fromhex(member.totp_sealed)).decode("ascii")
        _step, state = totp_core.check_totp(secret, code, now=now, state=self._totp_state(member))
        self._store_totp_state(member, state)
        session.add(member)

    @staticmethod
    def _totp_state(member: Member) -> totp_core.TotpState:
        return totp_core.TotpState(
            last_step=member.totp_last_step,
            failures=member.totp_failures,
            last_failure_at=member.totp_last_failure_at,
            locked_until=member.totp_locked_until,
        )

    @staticmethod
    def _store_totp_state(member: Member, state: totp_core.TotpState) -> None:
        member.totp_last_step = state.last_step
        member.totp_failures = state.failures
        member.totp_last_failure_at = state.last_failure_at
        member.totp_locked_until = state.locked_until

    def session_member(self, token: str | None) -> Member:
        """The member behind a read session token (``Authorization: Bearer``)."""
        if not token:
            raise SessionError("reads need a session: open one with a signed session.open action")
        token_hash = hashlib.sha256(token.encode("utf-8")).hexdigest()
        now = self.clock()
        with self.db.read() as session:
            # The session and its member in one query (the member may be gone).
            found = session.exec(
                select(SessionRow, Member)
                .join(Member, col(Member.id) == col(SessionRow.member), isouter=True)
                .where(SessionRow.token_hash == token_hash)
            ).first()
            row, member = found if found is not None else (None, None)
            if row is None or row.expires_at <= now:
                raise SessionError("session unknown or expired; open a new one")
            if member is None or member.status != MemberState.ACTIVE:
                raise SessionError("the session's member is no longer active")
            # A session belongs to the key that signed session.open, not just to the
            # member: once the member is rekeyed (however that came about), the old
            # key's sessions are worthless.
            if row.sign_public is None or not hmac.compare_digest(row.sign_public, member.sign_public):
                raise SessionError("the session was opened with a key the member no longer holds")
            return member

    def _require_unsealed_unrecorded(self) -> None:
        try:
            self.require_unsealed()
        except SealedError as exc:
            raise Unrecorded(exc) from None

    def require_unsealed(self) -> None:
        if self.sealed_reason is not None:
            raise SealedError(f"signing is sealed: {self.sealed_reason}")


def key_history(session: Session, member_id: str) -> list[tuple[bytes, int]]:
    """The signing keys ``member_id`` has held, oldest first, each with the time it took
    effect: the card it was admitted with (genesis or ``member.added``), then one per
    ``member.rekeyed``. The last is the member's key now."""
    history: list[tuple[bytes, int]] = []
    for e in audit_log.entries_of_kinds(session, ("deployment.genesis", "member.added", "member.rekeyed")):
        data = e["data"]
        if e["kind"] == "deployment.genesis":
            cards = [IdentityCard.from_json(c) for c in data["genesis"]["members"]]
            history += [(c.sign_public, e["time"]) for c in cards if c.member_id == member_id]
        elif data.get("member") == member_id:
            history.append((IdentityCard.from_json(data["card"]).sign_public, e["time"]))
    return history


def verify_as_made(session: Session, action: SignedAction, member: Member) -> None:
    """Verify a stored action by the key ``member`` held when it was signed: its key now,
    or, for an action signed before a key rotation, the key in force at its
    ``issued_at`` (the log is read only then, so the common case costs no query)."""
    current = bytes.fromhex(member.sign_public)
    if action.verifies_with(current):
        return
    held = [key for key, since in key_history(session, member.id) if since <= action.issued_at]
    action.verify(held[-1] if held else current)


def database_refusal(exc: Exception) -> Error:
    """A constraint the database enforces is a refusal like any other, never a 500."""
    if isinstance(exc, IntegrityError):
        return ConflictError("the change conflicts with existing data (a uniqueness rule)")
    return InputError("a value is outside what the database can store")


def refusal_evidence(
    envelope: dict[str, Any] | None, *, authenticated: bool
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What a refusal keeps of the envelope it refused: ``(envelope, summary)``; never raises.

    A verified member's envelope up to :data:`REFUSED_ENVELOPE_MAX_BYTES` is kept whole.
    Otherwise only a summary of bounded size: the SHA-256 of its canonical bytes (under
    the ``refused-envelope`` domain, so whoever holds the envelope can match it), its
    size, and the type and actor it claimed (a claim, not a fact: nobody verified it).
    """
    if envelope is None:
        return None, None
    try:
        raw = canonical(envelope)
    except Error:
        return None, {"unstorable": True}
    if authenticated and len(raw) <= REFUSED_ENVELOPE_MAX_BYTES:
        return loads_strict(raw), None
    action = envelope.get("action")
    claimed = action if isinstance(action, dict) else {}
    return None, {
        "sha256": hashlib.sha256(_REFUSED_PREFIX + raw).hexdigest(),
        "bytes": len(raw),
        "claimed_type": _claim(claimed.get("type")),
        "claimed_actor": _claim(claimed.get("actor")),
    }


def _claim(value: Any) -> str | None:
    return bounded_text(value, CLAIM_MAX_CHARS) if isinstance(value, str) else None


def bounded_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"
