"""Genesis, sessions, second-factor enrolment and dual-controlled membership changes."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any

from sqlmodel import col, select

from tandem.core import membership as mcore
from tandem.core.canonical import canonical, check_fields
from tandem.core.identity import IdentityCard, unb64
from tandem.core.lifecycles import MEMBERS, PROPOSALS, MemberState, ProposalState
from tandem.core.membership import check_distinct, check_genesis, genesis_hash
from tandem.core.roles import Role
from tandem.errors import (
    ClaimTokenError,
    ConflictError,
    DuplicateIdentityError,
    InputError,
    NotFoundError,
    TotpError,
)
from tandem.services.base import SESSION_SECONDS, Call, Runner
from tandem.services.claim import ClaimGate
from tandem.services.policies import install_default_policy, install_genesis_terms, veto_proposal
from tandem.services.proposal_docs import PROPOSAL_SECONDS, proposal_digest, proposal_public
from tandem.services.proposals import SIDES
from tandem.store import pages
from tandem.store.models import Deployment, Member, Proposal
from tandem.store.models import Session as SessionRow

TOTP_SEED_RE = re.compile(r"^[A-Z2-7]{16,128}$")


def check_totp_seed(secret: str) -> None:
    """A base32 seed of at least 80 bits, as RFC 4226 recommends."""
    if not TOTP_SEED_RE.fullmatch(secret):
        raise InputError("TOTP seed must be 16-128 base32 characters (A-Z, 2-7)")
    try:
        base64.b32decode(secret + "=" * (-len(secret) % 8))
    except ValueError:
        raise InputError("TOTP seed is not valid base32") from None


def other_side(role: Role) -> Role:
    return Role.CUSTODIAN if role is Role.MANAGER else Role.MANAGER


def member_public(m: Member) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "role": m.role,
        "status": m.status,
        "sign_public": m.sign_public,
        "seal_public": m.seal_public,
        "totp_enrolled": m.totp_sealed is not None,
        "added_at": m.added_at,
        "removed_at": m.removed_at,
    }


class MembershipService:
    """Genesis, sessions, second factors and what a member change does once approved."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        # Set from the data directory by ``api.app.build_service``; a service built
        # without one (or whose token was used) refuses every genesis.
        self._claim: ClaimGate | None = None

    # --- genesis -------------------------------------------------------------------------

    @property
    def claim(self) -> ClaimGate:
        if self._claim is None:
            self._claim = ClaimGate()
        return self._claim

    def use_claim(self, gate: ClaimGate) -> None:
        self._claim = gate

    def issue_claim_token(self) -> str:
        """A fresh claim token for this service, held in memory (tests, one-process
        set-ups); ``tandem init`` issues the persistent one."""
        gate, token = ClaimGate.issue()
        self._claim = gate
        return token

    def genesis(self, doc: Any, signatures: Any, *, claim_token: str | None = None) -> dict[str, Any]:
        gate = self.claim

        def use_case(call: Call) -> dict[str, Any]:
            if self.runner.maybe_deployment(call.session) is not None:
                raise ConflictError("this server already has a deployment; genesis happens once")
            # Before anything of the document is looked at: a fresh server is claimed
            # only with the token its operator was shown (THREATS 23).
            gate.check(claim_token)
            cards = check_genesis(
                doc,
                signatures,
                service_sign_public=self.runner.key.sign_public,
                service_seal_public=self.runner.key.seal_public,
            )
            if abs(doc["created_at"] - call.now) > 3600:
                raise InputError("genesis.created_at is more than an hour from the server's clock")
            root = genesis_hash(doc)
            dep = Deployment(
                id=doc["deployment"],
                entity=doc["entity"],
                genesis_hash=root,
                genesis_doc=canonical(doc).decode(),
                created_at=call.now,
            )
            call.session.add(dep)
            for card in cards:
                call.session.add(_member_row(card, dep.id, call.now))
            call.session.flush()
            call.deployment = dep

            install_default_policy(call)
            self.runner.audit(
                call,
                "deployment.genesis",
                {"genesis": doc, "signatures": signatures, "genesis_hash": root},
            )
            # Terms every initial member signed: in force from the first minute.
            install_genesis_terms(self.runner, call, doc)
            refused = gate.refusals()
            if refused is not None:
                # Claims refused before the log existed, as one fixed-size entry.
                from tandem.store import audit_log

                audit_log.append(
                    call.session,
                    self.runner.key,
                    deployment=dep.id,
                    kind="deployment.claim.refused",
                    actor=None,
                    outcome="refused",
                    code=ClaimTokenError.code,
                    envelope=None,
                    data=refused,
                    time=call.now,
                )
            return {
                "deployment": dep.id,
                "genesis_hash": root,
                "members": [c.member_id for c in cards],
            }

        try:
            result = self.runner.run_plain("deployment.genesis", use_case)
        except ClaimTokenError as exc:
            gate.note_refusal(exc.code, self.runner.clock())
            raise
        gate.consume(self.runner.clock())
        return result

    # --- sessions and TOTP -----------------------------------------------------------------

    def open_session(self, envelope: Any) -> dict[str, Any]:
        def use_case(call: Call) -> dict[str, Any]:
            assert call.actor is not None
            check_fields(call.action.body if call.action else None, required=(), where="body")
            token = secrets.token_urlsafe(32)
            call.session.add(
                SessionRow(
                    token_hash=hashlib.sha256(token.encode()).hexdigest(),
                    member=call.actor.id,
                    created_at=call.now,
                    expires_at=call.now + SESSION_SECONDS,
                    sign_public=call.actor.sign_public,
                )
            )
            self.runner.audit(call, "session.opened", {"expires_at": call.now + SESSION_SECONDS})
            return {
                "token": token,
                "member": call.actor.id,
                "role": call.actor.role,
                "expires_at": call.now + SESSION_SECONDS,
            }

        return self.runner.run("session.open", envelope, use_case, types="session.open")

    def enrol_totp(self, envelope: Any, *, confirm_code: str, totp: str | None) -> dict[str, Any]:
        """A member registers its TOTP seed, sealed on its own machine to the service key.

        The first enrolment needs only the member's signature; replacing a seed also needs
        a valid code of the current one, so a stolen signing key alone cannot swap it.
        """
        from tandem.core import totp as totp_core

        def use_case(call: Call) -> dict[str, Any]:
            member = call.actor
            assert member is not None
            body = check_fields(
                call.action.body if call.action else None, required=("sealed_secret",), where="body"
            )
            if member.totp_sealed is not None:
                self.runner.check_totp(call.session, member, totp, call.now)
            sealed = (
                unb64(body["sealed_secret"], what="sealed_secret")
                if isinstance(body["sealed_secret"], str)
                else b""
            )
            secret = self.runner.key.unseal(sealed).decode("ascii", "replace")
            check_totp_seed(secret)
            try:
                step, _ = totp_core.check_totp(
                    secret, confirm_code, now=call.now, state=totp_core.TotpState()
                )
            except TotpError:
                raise TotpError(
                    "confirmation code does not match the new seed; check the authenticator"
                ) from None
            member.totp_sealed = sealed.hex()
            member.totp_last_step = step
            member.totp_failures = 0
            member.totp_locked_until = None
            call.session.add(member)
            self.runner.audit(call, "member.totp_enrolled", {"member": member.id})
            return {"member": member.id, "totp_enrolled": True}

        return self.runner.run(
            "member.totp_enrol",
            envelope,
            use_case,
            types="member.totp_enrol",
            roles=(Role.MANAGER, Role.CUSTODIAN, Role.AUDITOR),
        )

    def unlock_totp(self, member_id: str) -> None:
        """Operator action (server-side CLI): clear a lock-out after checking the person."""

        def use_case(call: Call) -> None:
            member = call.session.get(Member, member_id)
            if member is None:
                raise NotFoundError("no such member")
            member.totp_failures = 0
            member.totp_locked_until = None
            member.totp_last_failure_at = None
            call.session.add(member)
            self.runner.audit(call, "member.totp_unlocked", {"member": member_id, "by": "operator"})

        self.runner.run_plain("member.totp_unlock", use_case)

    # --- membership proposals -------------------------------------------------------------

    def propose_member_change(self, envelope: Any) -> dict[str, Any]:
        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            # The same derivation the verifiers replay from the signed body.
            content = mcore.member_proposal_content(call.action.body)
            change = content["change"]
            session = call.session
            if change == "add":
                self._check_new_card(call, IdentityCard.from_json(content["card"]))
            else:
                target = session.get(Member, content["member"])
                if target is None or target.status != MemberState.ACTIVE:
                    raise NotFoundError("no active member with that id")
                if change == "rekey":
                    card = IdentityCard.from_json(content["card"])
                    if card.name != target.name or card.role.value != target.role:
                        raise InputError("a rekey keeps the member's name and role; only keys change")
                    self._check_new_card(call, card, rekey_of=target.id)
            proposal = Proposal(
                id="prop_" + secrets.token_hex(8),
                deployment=call.deployment.id,
                kind=f"member.{change}",
                body=canonical(content).decode(),
                proposer=call.actor.id,
                status=ProposalState.PENDING,
                created_at=call.now,
                expires_at=call.now + PROPOSAL_SECONDS,
                envelope=canonical(call.envelope).decode(),
            )
            session.add(proposal)
            session.flush()
            self.runner.audit(
                call,
                "member.proposed",
                {
                    "proposal": proposal.id,
                    "kind": proposal.kind,
                    "digest": proposal_digest(proposal),
                },
            )
            return proposal_public(proposal, [])

        return self.runner.run("member.propose", envelope, use_case, types="member.propose", roles=SIDES)

    def _check_new_card(self, call: Call, card: IdentityCard, *, rekey_of: str | None = None) -> None:
        existing = call.session.exec(select(Member)).all()
        for m in existing:
            if m.id == rekey_of:
                continue
            if rekey_of is None and card.member_id == m.id:
                # A key a member was admitted with (retired by a rotation or not) would
                # take that member's id: one key, one member, for ever.
                raise DuplicateIdentityError(
                    "that key is already registered to another member; one key, one member"
                )
            if card.sign_public.hex() in (m.sign_public,) or card.seal_public.hex() in (m.seal_public,):
                raise DuplicateIdentityError(
                    "that key is already registered to another member; one key, one member"
                )
            # Names stay reserved after removal: the log keeps naming the person.
            if rekey_of is None and m.name.casefold() == card.name.casefold():
                raise DuplicateIdentityError(f"{card.name!r} already holds a role; one person, one role")
        check_distinct([card])

    # --- the delay: a membership change takes effect when asked after it, or never ------

    def veto_member_proposal(self, envelope: Any) -> dict[str, Any]:
        """Either side stops an approved membership change during its delay (the same
        mechanism as a policy veto)."""
        return veto_proposal(self.runner, envelope, kinds=mcore.MEMBER_KINDS, roles=SIDES)

    def apply_member(self, call: Call, proposal: Proposal, body: dict[str, Any]) -> None:
        """Carry out an approved member change (the proposal service decides when)."""
        from tandem.services.keysets import mark_reshare_required

        session = call.session
        proposal.status = PROPOSALS.transition(proposal.status, "apply")
        if body["change"] == "add":
            card = IdentityCard.from_json(body["card"])
            self._check_new_card(call, card)
            session.add(_member_row(card, call.deployment.id, call.now))
            session.flush()
            self.runner.audit(
                call,
                "member.added",
                {"proposal": proposal.id, "member": card.member_id, "card": body["card"]},
                with_envelope=False,
            )
        elif body["change"] == "remove":
            target = session.get(Member, body["member"])
            assert target is not None
            target.status = MEMBERS.transition(target.status, "remove")
            target.removed_at = call.now
            session.add(target)
            # Sessions of a removed member end now.
            for row in session.exec(select(SessionRow).where(col(SessionRow.member) == target.id)).all():
                session.delete(row)
            self.runner.audit(
                call,
                "member.removed",
                {"proposal": proposal.id, "member": target.id},
                with_envelope=False,
            )
            mark_reshare_required(self.runner, call, target.id, reason="member removed")
        else:
            target = session.get(Member, body["member"])
            assert target is not None
            target.status = MEMBERS.transition(target.status, "rekey")
            card = IdentityCard.from_json(body["card"])
            target.sign_public = card.sign_public.hex()
            target.seal_public = card.seal_public.hex()
            target.card = canonical(card.to_json()).decode()
            session.add(target)
            self.runner.audit(
                call,
                "member.rekeyed",
                {"proposal": proposal.id, "member": target.id, "card": body["card"]},
                with_envelope=False,
            )
            mark_reshare_required(self.runner, call, target.id, reason="member rekeyed")

    # --- reads --------------------------------------------------------------------------

    def list_members(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        """One page of members, in the order they were added: ``{"items", "next_cursor"}``."""
        with self.runner.db.read() as session:
            page = pages.read_page(
                session,
                select(Member),
                kind="members",
                order=(col(Member.added_at), col(Member.id)),
                limit=limit,
                cursor=cursor,
            )
            return {"items": [member_public(m) for m in page.rows], "next_cursor": page.next_cursor}

    def deployment_info(self) -> dict[str, Any]:
        with self.runner.db.read() as session:
            dep = self.runner.maybe_deployment(session)
            info: dict[str, Any] = {
                "service": self.runner.key.public_json(),
                "sealed": self.runner.sealed_reason is not None,
            }
            if dep is not None:
                info.update({"deployment": dep.id, "entity": dep.entity, "genesis_hash": dep.genesis_hash})
            return info


def _member_row(card: IdentityCard, deployment: str, now: int) -> Member:
    return Member(
        id=card.member_id,
        deployment=deployment,
        name=card.name,
        role=card.role.value,
        sign_public=card.sign_public.hex(),
        seal_public=card.seal_public.hex(),
        card=canonical(card.to_json()).decode(),
        added_at=now,
    )
