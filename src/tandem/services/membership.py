"""Genesis, sessions, second-factor enrolment and dual-controlled membership changes."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any

from sqlmodel import col, select

from tandem.core import approvals as engine
from tandem.core import membership as mcore
from tandem.core.approvals import QuorumResult
from tandem.core.canonical import canonical, check_fields, loads_strict
from tandem.core.identity import IdentityCard, unb64
from tandem.core.lifecycles import MEMBERS, PROPOSALS, MemberState, ProposalState
from tandem.core.membership import check_distinct, check_genesis, genesis_hash
from tandem.core.policy import Policy
from tandem.core.roles import Role
from tandem.errors import (
    ClaimTokenError,
    ConflictError,
    DuplicateIdentityError,
    InputError,
    InvalidStateError,
    NotFoundError,
    QuorumNotMetError,
    TimeLockedError,
    TotpError,
)
from tandem.localtime import local_iso, pending_change
from tandem.services.approvals import current_membership
from tandem.services.base import SESSION_SECONDS, Call, ServiceBase
from tandem.services.claim import ClaimGate
from tandem.store.models import Approval, Deployment, Member, Proposal
from tandem.store.models import Session as SessionRow

PROPOSAL_SECONDS = mcore.PROPOSAL_SECONDS
SIDES = (Role.MANAGER, Role.CUSTODIAN)


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


def proposal_public(p: Proposal, approvals: list[Approval], *, now: int | None = None) -> dict[str, Any]:
    """A proposal as the API shows it. Given ``now``, an approved change still in its
    delay also says when it takes effect (local time of the server) and who may veto."""
    out: dict[str, Any] = {
        "id": p.id,
        "kind": p.kind,
        "body": loads_strict(p.body),
        "proposer": p.proposer,
        "status": p.status,
        "created_at": p.created_at,
        "expires_at": p.expires_at,
        "approved_at": p.approved_at,
        "effective_at": p.effective_at,
        "digest": proposal_digest(p),
        "approvals": [{"member": a.member, "role": a.role, "at": a.created_at} for a in approvals],
    }
    if now is not None:
        notice = pending_change(p.kind, p.status, p.effective_at, now)
        if notice is not None:
            out["pending_change"] = notice
    return out


def proposal_digest(p: Proposal) -> str:
    """What an approver signs: the proposal's identity and exact content."""
    return mcore.proposal_digest(
        proposal_id=p.id, kind=p.kind, body=loads_strict(p.body), proposer=p.proposer
    )


def _request(p: Proposal) -> engine.Request:
    return engine.Request(
        requester=p.proposer, kind=p.kind, digest=proposal_digest(p), created_at=p.created_at
    )


class MembershipService(ServiceBase):
    # --- genesis -------------------------------------------------------------------------

    # Set from the data directory by ``api.app.build_service``; a service built without
    # one (or whose token was used) refuses every genesis.
    _claim: ClaimGate | None = None

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
            if self.maybe_deployment(call.session) is not None:
                raise ConflictError("this server already has a deployment; genesis happens once")
            # Before anything of the document is looked at: a fresh server is claimed
            # only with the token its operator was shown (THREATS 23).
            gate.check(claim_token)
            cards = check_genesis(
                doc,
                signatures,
                service_sign_public=self.key.sign_public,
                service_seal_public=self.key.seal_public,
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
            from tandem.services.policies import install_default_policy, install_genesis_terms

            install_default_policy(call)
            self.audit(
                call,
                "deployment.genesis",
                {"genesis": doc, "signatures": signatures, "genesis_hash": root},
            )
            # Terms every initial member signed: in force from the first minute.
            install_genesis_terms(self, call, doc)
            refused = gate.refusals()
            if refused is not None:
                # Claims refused before the log existed, as one fixed-size entry.
                from tandem.store import audit_log

                audit_log.append(
                    call.session,
                    self.key,
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
            result = self.run_plain("deployment.genesis", use_case)
        except ClaimTokenError as exc:
            gate.note_refusal(exc.code, self.clock())
            raise
        gate.consume(self.clock())
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
            self.audit(call, "session.opened", {"expires_at": call.now + SESSION_SECONDS})
            return {
                "token": token,
                "member": call.actor.id,
                "role": call.actor.role,
                "expires_at": call.now + SESSION_SECONDS,
            }

        return self.run("session.open", envelope, use_case, types="session.open")

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
                self.check_totp(call.session, member, totp, call.now)
            sealed = (
                unb64(body["sealed_secret"], what="sealed_secret")
                if isinstance(body["sealed_secret"], str)
                else b""
            )
            secret = self.key.unseal(sealed).decode("ascii", "replace")
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
            self.audit(call, "member.totp_enrolled", {"member": member.id})
            return {"member": member.id, "totp_enrolled": True}

        return self.run(
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
            self.audit(call, "member.totp_unlocked", {"member": member_id, "by": "operator"})

        self.run_plain("member.totp_unlock", use_case)

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
            self.audit(
                call,
                "member.proposed",
                {
                    "proposal": proposal.id,
                    "kind": proposal.kind,
                    "digest": proposal_digest(proposal),
                },
            )
            return proposal_public(proposal, [])

        return self.run("member.propose", envelope, use_case, types="member.propose", roles=SIDES)

    def _check_new_card(self, call: Call, card: IdentityCard, *, rekey_of: str | None = None) -> None:
        existing = call.session.exec(select(Member)).all()
        for m in existing:
            if m.id == rekey_of:
                continue
            if card.sign_public.hex() in (m.sign_public,) or card.seal_public.hex() in (m.seal_public,):
                raise DuplicateIdentityError(
                    "that key is already registered to another member; one key, one member"
                )
            # Names stay reserved after removal: the log keeps naming the person.
            if rekey_of is None and m.name.casefold() == card.name.casefold():
                raise DuplicateIdentityError(f"{card.name!r} already holds a role; one person, one role")
        check_distinct([card])

    def decide_proposal(self, envelope: Any, *, totp: str | None, approve: bool) -> dict[str, Any]:
        action_type = "proposal.approve" if approve else "proposal.reject"

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            assert call.actor is not None
            body = check_fields(
                call.action.body,
                required=("proposal", "digest"),
                optional=("reason",),
                where="body",
            )
            proposal = call.session.get(Proposal, body["proposal"])
            if proposal is None:
                raise NotFoundError("no such proposal")
            decided = PROPOSALS.transition(
                proposal.status,
                "approve" if approve else "reject",
                expires_at=proposal.expires_at,
                now=call.now,
            )
            if body["digest"] != proposal_digest(proposal):
                raise ConflictError("the approval is for different proposal content (digest mismatch)")
            proposer = call.session.get(Member, proposal.proposer)
            assert proposer is not None
            policy = _policy_at(call, call.now)
            engine.admit(
                _request(proposal),
                member=call.actor.id,
                role=Role(call.actor.role),
                required=mcore.required_approvals(policy, proposal.kind, Role(proposer.role)),
                what="this proposal",
            )
            if not approve:
                proposal.status = decided
                call.session.add(proposal)
                self.audit(
                    call,
                    "proposal.rejected",
                    {"proposal": proposal.id, "reason": body.get("reason", "")},
                )
                return proposal_public(proposal, [])
            already = call.session.exec(
                select(Approval).where(Approval.subject == proposal.id, Approval.member == call.actor.id)
            ).first()
            if already is not None:
                raise ConflictError("this member has already approved; approvals count per member")
            call.session.add(
                Approval(
                    subject=proposal.id,
                    member=call.actor.id,
                    role=call.actor.role,
                    envelope=canonical(call.envelope).decode(),
                    created_at=call.now,
                )
            )
            call.session.flush()
            approvals = self._proposal_approvals(call, proposal)
            result = self._proposal_quorum(call, proposal, proposer, approvals, policy)
            data: dict[str, Any] = {
                "proposal": proposal.id,
                "digest": body["digest"],
                "quorum_met": result.met,
            }
            if result.met:
                # The delay comes from the policy in force before the change, as for
                # policy changes; the verifiers recompute it from the same policy.
                data["effective_at"] = call.now + mcore.change_delay(policy, proposal.kind)
            self.audit(call, "proposal.approved", data)
            if result.met:
                self._approved(call, proposal, data["effective_at"])
            return proposal_public(proposal, approvals, now=call.now)

        return self.run(
            action_type,
            envelope,
            use_case,
            types=action_type,
            roles=SIDES,
            require_totp=approve,
            totp=totp,
        )

    @staticmethod
    def _proposal_approvals(call: Call, proposal: Proposal) -> list[Approval]:
        return list(call.session.exec(select(Approval).where(Approval.subject == proposal.id)).all())

    def _proposal_quorum(
        self, call: Call, proposal: Proposal, proposer: Member, approvals: list[Approval], policy: Policy
    ) -> QuorumResult:
        """Distinct current members of the approving side, as many as the policy in
        force says (the membership section for member changes)."""
        return engine.evaluate(
            _request(proposal),
            [
                engine.Given(
                    member=a.member,
                    role=Role(a.role),
                    at=a.created_at,
                    digest=loads_strict(a.envelope)["action"]["body"]["digest"],
                )
                for a in approvals
            ],
            membership=current_membership(call.session),
            required=mcore.required_approvals(policy, proposal.kind, Role(proposer.role)),
            now=call.now,
        )

    def _approved(self, call: Call, proposal: Proposal, effective_at: int) -> None:
        proposal.approved_at = call.now
        body = loads_strict(proposal.body)
        if proposal.kind.startswith("member."):
            proposal.status = PROPOSALS.transition(proposal.status, "quorum")
            proposal.effective_at = effective_at
            if effective_at <= call.now:
                self._apply_member(call, proposal, body)
        else:
            from tandem.services.policies import apply_policy_proposal

            apply_policy_proposal(self, call, proposal, body)
        call.session.add(proposal)

    # --- the delay: a membership change takes effect when asked after it, or never ------

    def apply_proposal(self, envelope: Any) -> dict[str, Any]:
        """Carry out an approved membership change whose delay has passed (any manager or
        custodian may ask; it is the clock, not a decision). The quorum is counted again
        among current members: an approver removed during the delay no longer counts."""

        def use_case(call: Call) -> dict[str, Any]:
            assert call.action is not None
            body = check_fields(call.action.body, required=("proposal",), where="body")
            proposal_id = body["proposal"]
            proposal = call.session.get(Proposal, proposal_id) if isinstance(proposal_id, str) else None
            if proposal is None:
                raise NotFoundError("no such proposal")
            if proposal.kind not in mcore.MEMBER_KINDS:
                raise InvalidStateError(f"a {proposal.kind} change takes effect by itself after its delay")
            if not PROPOSALS.allows(proposal.status, "apply") or proposal.effective_at is None:
                raise InvalidStateError(
                    f"proposal is {proposal.status}; only an approved change can be applied"
                )
            if call.now < proposal.effective_at:
                raise TimeLockedError(
                    f"the change is in its veto window until {local_iso(proposal.effective_at)} "
                    f"({proposal.effective_at - call.now}s left)",
                    details={"effective_at": proposal.effective_at},
                )
            proposer = call.session.get(Member, proposal.proposer)
            assert proposer is not None
            approvals = self._proposal_approvals(call, proposal)
            result = self._proposal_quorum(
                call, proposal, proposer, approvals, _policy_at(call, proposal.approved_at or call.now)
            )
            if not result.met:
                raise QuorumNotMetError(
                    "the approvals no longer meet the quorum (an approver was removed during the delay)"
                )
            self.audit(call, "proposal.applied", {"proposal": proposal.id, "kind": proposal.kind})
            self._apply_member(call, proposal, loads_strict(proposal.body))
            call.session.add(proposal)
            return proposal_public(proposal, approvals)

        return self.run("proposal.apply", envelope, use_case, types="proposal.apply", roles=SIDES)

    def veto_member_proposal(self, envelope: Any) -> dict[str, Any]:
        """Either side stops an approved membership change during its delay (the same
        mechanism as a policy veto)."""
        from tandem.services.policies import veto_proposal

        return veto_proposal(self, envelope, kinds=mcore.MEMBER_KINDS, roles=SIDES)

    def _apply_member(self, call: Call, proposal: Proposal, body: dict[str, Any]) -> None:
        from tandem.services.keysets import mark_reshare_required

        session = call.session
        proposal.status = PROPOSALS.transition(proposal.status, "apply")
        if body["change"] == "add":
            card = IdentityCard.from_json(body["card"])
            self._check_new_card(call, card)
            session.add(_member_row(card, call.deployment.id, call.now))
            session.flush()
            self.audit(
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
            self.audit(
                call,
                "member.removed",
                {"proposal": proposal.id, "member": target.id},
                with_envelope=False,
            )
            mark_reshare_required(self, call, target.id, reason="member removed")
        else:
            target = session.get(Member, body["member"])
            assert target is not None
            target.status = MEMBERS.transition(target.status, "rekey")
            card = IdentityCard.from_json(body["card"])
            target.sign_public = card.sign_public.hex()
            target.seal_public = card.seal_public.hex()
            target.card = canonical(card.to_json()).decode()
            session.add(target)
            self.audit(
                call,
                "member.rekeyed",
                {"proposal": proposal.id, "member": target.id, "card": body["card"]},
                with_envelope=False,
            )
            mark_reshare_required(self, call, target.id, reason="member rekeyed")

    # --- reads --------------------------------------------------------------------------

    def list_members(self) -> list[dict[str, Any]]:
        with self.db.read() as session:
            return [
                member_public(m) for m in session.exec(select(Member).order_by(col(Member.added_at))).all()
            ]

    def list_proposals(self, *, status: str | None = None) -> list[dict[str, Any]]:
        with self.db.read() as session:
            query = select(Proposal).order_by(col(Proposal.created_at))
            if status:
                query = query.where(Proposal.status == status)
            out = []
            for p in session.exec(query).all():
                approvals = list(session.exec(select(Approval).where(Approval.subject == p.id)).all())
                out.append(proposal_public(p, approvals, now=self.clock()))
            return out

    def get_proposal(self, proposal_id: str) -> dict[str, Any]:
        with self.db.read() as session:
            p = session.get(Proposal, proposal_id)
            if p is None:
                raise NotFoundError("no such proposal")
            approvals = list(session.exec(select(Approval).where(Approval.subject == p.id)).all())
            return proposal_public(p, approvals, now=self.clock())

    def deployment_info(self) -> dict[str, Any]:
        with self.db.read() as session:
            dep = self.maybe_deployment(session)
            info: dict[str, Any] = {
                "service": self.key.public_json(),
                "sealed": self.sealed_reason is not None,
            }
            if dep is not None:
                info.update({"deployment": dep.id, "entity": dep.entity, "genesis_hash": dep.genesis_hash})
            return info


def _policy_at(call: Call, at: int) -> Policy:
    from tandem.services.policies import current_policy

    return current_policy(call.session, at)


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
