"""Policy versions and the address book: data, versioned, changed only under dual control.

A manager proposes (``policy.propose`` / ``addressbook.propose``); a custodian approves
through the ordinary proposal path (``proposal.approve`` + TOTP, in membership.py),
which calls :func:`apply_policy_proposal`. The change is written at once with an
``effective_at`` of approval time plus the *current* policy's ``change_delay_seconds``;
readers only see rows whose ``effective_at`` has passed. Until then any custodian can
veto it (``proposal.veto``), which withdraws the pending row.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session, SQLModel, col, select

from tandem.core import withdrawal as wcore
from tandem.core.canonical import canonical, check_fields, loads_strict, parse_amount
from tandem.core.lifecycles import PROPOSALS, AddressBookState, ProposalState
from tandem.core.membership import (
    book_entry_of,
    book_removal_content,
    change_delay,
    normalize_book_entry,
    policy_proposal_content,
    veto_roles,
)
from tandem.core.policy import (
    AddressBookEntry,
    PastWithdrawal,
    PendingChange,
    Policy,
    WithdrawalFacts,
    default_policy,
    evaluate,
    parse_policy,
    velocity_window_seconds,
)
from tandem.core.roles import Role, a_role
from tandem.errors import (
    ConflictError,
    InputError,
    InvalidStateError,
    NotFoundError,
    PolicyVersionError,
    RoleNotAllowedError,
)
from tandem.localtime import local_iso
from tandem.services.base import Call, Runner
from tandem.services.proposal_docs import PROPOSAL_SECONDS, proposal_digest, proposal_public
from tandem.store import pages
from tandem.store.models import AddressBookRow, PolicyRow, Proposal, Withdrawal

POLICY_KINDS = ("policy.change", "addressbook.add", "addressbook.remove")


def install_default_policy(call: Call) -> None:
    policy = default_policy()
    call.session.add(
        PolicyRow(
            version=policy.version,
            doc=canonical(policy.to_json()).decode(),
            hash=policy.hash(),
            effective_at=call.now,
        )
    )


def install_genesis_terms(service: Runner, call: Call, doc: dict[str, Any]) -> None:
    """An initial policy and address book carried by the genesis document take effect at
    once: every initial member (both sides) signed them. They are logged as ordinary
    approved changes so that an offline verifier rebuilds them from the log alone."""
    if "policy" in doc:
        policy = parse_policy(doc["policy"])
        row = call.session.get(PolicyRow, 1)
        if row is not None:
            row.doc = canonical(policy.to_json()).decode()
            row.hash = policy.hash()
            call.session.add(row)
        service.audit(
            call,
            "policy.change_approved",
            {"proposal": "genesis", "policy": policy.to_json(), "effective_at": call.now},
            with_envelope=False,
        )
    for raw in doc.get("address_book", []):
        body = normalize_book_entry({"change": "add", **raw} if isinstance(raw, dict) else raw)
        entry = book_entry_of(body, "ab_" + secrets.token_hex(8))
        call.session.add(
            AddressBookRow(
                id=entry["id"],
                chain=entry["chain"],
                network=entry["network"],
                address=entry["address"],
                asset=entry.get("asset"),
                label=entry["label"],
                effective_at=call.now,
                proposal="genesis",
                status=AddressBookState.ACTIVE,
            )
        )
        service.audit(
            call,
            "addressbook.change_approved",
            {"proposal": "genesis", "change": "add", "entry": entry, "effective_at": call.now},
            with_envelope=False,
        )


def _current_row(session: Session, now: int) -> PolicyRow:
    row = session.exec(
        select(PolicyRow).where(col(PolicyRow.effective_at) <= now).order_by(col(PolicyRow.version).desc())
    ).first()
    if row is None:
        raise NotFoundError("no policy in force")
    return row


def current_policy(session: Session, now: int) -> Policy:
    """The newest policy version whose cool-down has passed."""
    return parse_policy(loads_strict(_current_row(session, now).doc))


def latest_policy_version(session: Session) -> int:
    row = session.exec(select(PolicyRow).order_by(col(PolicyRow.version).desc())).first()
    return row.version if row else 0


def address_book(session: Session, now: int) -> list[AddressBookEntry]:
    """Entries in force at ``now`` (same rule as the offline signer's rebuild from the log)."""
    additions, removals = address_book_facts(session)
    return wcore.address_book_at(additions, removals, now)


def address_book_facts(session: Session) -> tuple[tuple[wcore.BookAddition, ...], dict[str, int]]:
    """What :func:`address_book` decides on at any time: the active additions and the
    approved removals (entry id -> when each takes effect)."""
    additions = tuple(
        wcore.BookAddition(r.id, _entry(r), r.effective_at)
        for r in session.exec(
            select(AddressBookRow).where(AddressBookRow.status == AddressBookState.ACTIVE)
        ).all()
    )
    return additions, _removals(session)


def _entry(r: AddressBookRow) -> AddressBookEntry:
    return AddressBookEntry(chain=r.chain, network=r.network, address=r.address, label=r.label, asset=r.asset)


def _removals(session: Session, entries: list[AddressBookRow] | None = None) -> dict[str, int]:
    """Approved removals: entry id -> when each takes effect; with ``entries``, of those
    entries only (a removal's body is the canonical content made from its entry, so
    they are found by equality, not by reading every removal)."""
    query = select(Proposal).where(
        Proposal.kind == "addressbook.remove", Proposal.status == ProposalState.APPROVED
    )
    if entries is not None:
        query = query.where(col(Proposal.body).in_([_removal_body(r) for r in entries]))
    out: dict[str, int] = {}
    for p in session.exec(query.order_by(col(Proposal.created_at), col(Proposal.id))).all():
        if p.effective_at is not None:
            out[loads_strict(p.body)["entry"]] = p.effective_at
    return out


def _removal_body(r: AddressBookRow) -> str:
    return canonical(
        book_removal_content(r.id, {"address": r.address, "chain": r.chain, "network": r.network})
    ).decode()


def withdrawal_history(
    session: Session, wallet: str, now: int, *, window_seconds: int, released_only: bool = False
) -> list[PastWithdrawal]:
    """What counts against ``wallet``'s limits in the ``window_seconds`` up to ``now``.

    A withdrawal counts from its release (signed, whether broadcast, confirmed,
    abandoned or not recorded yet) and, unless ``released_only`` (the check at release),
    an open one from its creation until it expires. Each counts its amount plus its
    worst-case fee when paid in the same asset. Only rows inside the window are read,
    through the (keyset, released_at) and (keyset, created_at) indexes; the sum itself
    is exact integer arithmetic here, because wei amounts do not fit a 64-bit column.
    """
    if window_seconds < 1:
        return []
    # now - time < window_seconds; rows dated after now (clock skew) count too.
    since = now - window_seconds + 1
    released = (
        col(Withdrawal.released_at).is_not(None)
        & (col(Withdrawal.released_at) >= since)
        & col(Withdrawal.status).in_(sorted(wcore.SIGNED))
    )
    recent_open = (
        col(Withdrawal.status).in_(sorted(wcore.OPEN))
        & (col(Withdrawal.created_at) >= since)
        & (col(Withdrawal.expires_at) > now)
    )
    window = released if released_only else (released | recent_open)
    # The table's columns, untyped: sqlmodel's select() types at most four columns.
    t = SQLModel.metadata.tables["withdrawal"].c
    rows = (
        session.connection()
        .execute(
            sa_select(
                t.id, t.status, t.asset, t.amount, t.fee, t.fee_asset, t.created_at, t.released_at
            ).where(t.keyset == wallet, window)
        )
        .all()
    )
    out = []
    for wid, status, stored_asset, stored_amount, fee, fee_asset, created_at, released_at in rows:
        asset, amount = stored_asset, stored_amount
        if asset is None or amount is None:
            # A row from before these columns existed: read its intent once.
            legacy = session.get(Withdrawal, wid)
            if legacy is None:
                continue
            intent = loads_strict(legacy.intent)
            asset, amount = intent["asset"], intent["amount"]
        counted = wcore.counted_amount(asset, int(amount), int(fee or 0), fee_asset)
        at = released_at if status in wcore.SIGNED and released_at is not None else created_at
        out.append(PastWithdrawal(wallet=wallet, asset=asset, amount=counted, time=at))
    return out


def history_for(
    session: Session, policy: Policy, wallet: str, now: int, *, released_only: bool = False
) -> list[PastWithdrawal]:
    """:func:`withdrawal_history` over the longest window ``policy`` looks at."""
    return withdrawal_history(
        session, wallet, now, window_seconds=velocity_window_seconds(policy), released_only=released_only
    )


# --- applying an approved proposal (called by membership's approval path) -------------


def apply_policy_proposal(service: Runner, call: Call, proposal: Proposal, body: dict[str, Any]) -> None:
    session = call.session
    effective_at = call.now + change_delay(current_policy(session, call.now), proposal.kind)
    proposal.status = PROPOSALS.transition(proposal.status, "quorum")
    proposal.approved_at = call.now
    proposal.effective_at = effective_at
    if proposal.kind == "policy.change":
        new = parse_policy(body["policy"])
        latest = latest_policy_version(session)
        if new.version != latest + 1:
            raise InvalidStateError(f"policy version {new.version} is stale: version {latest} exists")
        session.add(
            PolicyRow(
                version=new.version,
                doc=canonical(new.to_json()).decode(),
                hash=new.hash(),
                effective_at=effective_at,
                proposal=proposal.id,
            )
        )
        service.audit(
            call,
            "policy.change_approved",
            {
                "proposal": proposal.id,
                "policy": new.to_json(),
                "hash": new.hash(),
                "effective_at": effective_at,
            },
            with_envelope=False,
        )
    elif proposal.kind == "addressbook.add":
        entry = book_entry_of(body, "ab_" + secrets.token_hex(8))
        session.add(
            AddressBookRow(
                id=entry["id"],
                chain=entry["chain"],
                network=entry["network"],
                address=entry["address"],
                asset=entry.get("asset"),
                label=entry["label"],
                effective_at=effective_at,
                proposal=proposal.id,
                status=AddressBookState.ACTIVE,
            )
        )
        service.audit(
            call,
            "addressbook.change_approved",
            {"proposal": proposal.id, "change": "add", "entry": entry, "effective_at": effective_at},
            with_envelope=False,
        )
    elif proposal.kind == "addressbook.remove":
        row = session.get(AddressBookRow, body["entry"])
        if row is None or row.status != AddressBookState.ACTIVE:
            raise NotFoundError("no active address-book entry with that id")
        service.audit(
            call,
            "addressbook.change_approved",
            {"proposal": proposal.id, "change": "remove", "entry_id": row.id, "effective_at": effective_at},
            with_envelope=False,
        )
    else:
        raise InvalidStateError(f"proposals of kind {proposal.kind} are not supported")
    session.add(proposal)


# --- use cases ----------------------------------------------------------------------


def _id(value: Any) -> str:
    """A row id from a request body (a non-string would be a type error in PostgreSQL)."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise InputError("ids are strings of 1-64 characters")
    return value


def _new_proposal(call: Call, kind: str, content: dict[str, Any]) -> Proposal:
    assert call.actor is not None
    assert call.envelope is not None
    proposal = Proposal(
        id="prop_" + secrets.token_hex(8),
        deployment=call.deployment.id,
        kind=kind,
        body=canonical(content).decode(),
        proposer=call.actor.id,
        status=ProposalState.PENDING,
        created_at=call.now,
        expires_at=call.now + PROPOSAL_SECONDS,
        envelope=canonical(call.envelope).decode(),
    )
    call.session.add(proposal)
    call.session.flush()
    return proposal


def propose_policy(service: Runner, envelope: Any) -> dict[str, Any]:
    def use_case(call: Call) -> dict[str, Any]:
        assert call.action is not None
        content = policy_proposal_content(call.action.body)
        new = parse_policy(content["policy"])
        latest = latest_policy_version(call.session)
        if new.version != latest + 1:
            raise PolicyVersionError(f"a policy change must have version {latest + 1}, got {new.version}")
        proposal = _new_proposal(call, "policy.change", content)
        service.audit(
            call,
            "policy.proposed",
            {
                "proposal": proposal.id,
                "version": new.version,
                "hash": new.hash(),
                "digest": proposal_digest(proposal),
            },
        )
        return proposal_public(proposal, [])

    return service.run("policy.propose", envelope, use_case, types="policy.propose", roles=(Role.MANAGER,))


def propose_address_change(service: Runner, envelope: Any) -> dict[str, Any]:
    def use_case(call: Call) -> dict[str, Any]:
        assert call.action is not None
        body = call.action.body
        change = body.get("change") if isinstance(body, dict) else None
        if change == "add":
            content = normalize_book_entry(body)
            for row in call.session.exec(
                select(AddressBookRow).where(
                    AddressBookRow.status == AddressBookState.ACTIVE,
                    AddressBookRow.address == content["address"],
                )
            ).all():
                if (row.chain, row.network, row.asset) == (
                    content["chain"],
                    content["network"],
                    content.get("asset"),
                ):
                    raise ConflictError(f"that destination is already address-book entry {row.id}")
        elif change == "remove":
            check_fields(body, required=("change", "entry"), where="body")
            target = call.session.get(AddressBookRow, _id(body["entry"]))
            if target is None or target.status != AddressBookState.ACTIVE:
                raise NotFoundError("no active address-book entry with that id")
            content = book_removal_content(
                target.id, {"address": target.address, "chain": target.chain, "network": target.network}
            )
        else:
            raise InputError("body.change must be add or remove")
        proposal = _new_proposal(call, f"addressbook.{change}", content)
        service.audit(
            call,
            "addressbook.proposed",
            {"proposal": proposal.id, "kind": proposal.kind, "digest": proposal_digest(proposal)},
        )
        return proposal_public(proposal, [])

    return service.run(
        "addressbook.propose", envelope, use_case, types="addressbook.propose", roles=(Role.MANAGER,)
    )


def veto_proposal(
    service: Runner,
    envelope: Any,
    *,
    kinds: tuple[str, ...] = POLICY_KINDS,
    roles: tuple[Role, ...] = (Role.CUSTODIAN,),
) -> dict[str, Any]:
    """Stop an approved change during its delay: a custodian a policy or address-book
    change; either side a membership change (``kinds=MEMBER_KINDS``). One mechanism,
    :class:`PendingChange`, for both; the verifier's replay applies the same rule."""

    def use_case(call: Call) -> dict[str, Any]:
        assert call.action is not None
        assert call.actor is not None
        body = check_fields(call.action.body, required=("proposal",), optional=("reason",), where="body")
        p = call.session.get(Proposal, _id(body["proposal"]))
        if p is None:
            raise NotFoundError("no such proposal")
        if p.kind not in kinds:
            raise InvalidStateError(f"a {p.kind} proposal cannot be vetoed here")
        if Role(call.actor.role) not in veto_roles(p.kind):
            raise RoleNotAllowedError(f"{a_role(call.actor.role)} may not veto a {p.kind} change")
        if not PROPOSALS.allows(p.status, "veto") or p.effective_at is None or p.approved_at is None:
            raise InvalidStateError(
                f"proposal is {p.status}; only an approved change in its delay can be vetoed"
            )
        reason = body.get("reason", "")
        if not isinstance(reason, str) or len(reason) > 500:
            raise InputError("body.reason must be text of at most 500 characters")
        PendingChange(proposed_at=p.created_at, approved_at=p.approved_at, effective_at=p.effective_at).veto(
            now=call.now
        )
        p.status = PROPOSALS.transition(p.status, "veto")
        call.session.add(p)
        if p.kind == "policy.change":
            for row in call.session.exec(select(PolicyRow).where(PolicyRow.proposal == p.id)).all():
                call.session.delete(row)
        elif p.kind == "addressbook.add":
            for book in call.session.exec(
                select(AddressBookRow).where(AddressBookRow.proposal == p.id)
            ).all():
                book.status = AddressBookState.VETOED
                call.session.add(book)
        service.audit(call, "proposal.vetoed", {"proposal": p.id, "kind": p.kind, "reason": reason})
        return proposal_public(p, [])

    return service.run("proposal.veto", envelope, use_case, types="proposal.veto", roles=roles)


# --- reads --------------------------------------------------------------------------


def policy_info(service: Runner) -> dict[str, Any]:
    now = service.clock()
    with service.db.read() as session:
        current = _current_row(session, now)
        versions = [
            {
                "version": r.version,
                "hash": r.hash,
                "effective_at": r.effective_at,
                "effective_at_local": local_iso(r.effective_at),
                "proposal": r.proposal,
                "in_force": r.version == current.version,
                "pending": r.effective_at > now,
            }
            for r in session.exec(select(PolicyRow).order_by(col(PolicyRow.version))).all()
        ]
        return {
            "version": current.version,
            "hash": current.hash,
            "effective_at": current.effective_at,
            "policy": loads_strict(current.doc),
            "versions": versions,
        }


def address_book_view(
    service: Runner, *, limit: int | None = None, cursor: str | None = None
) -> dict[str, Any]:
    """One page of the address book, every entry ever added (vetoed ones too) in the
    order they took or take effect, each in the state it reads as now:
    ``{"items", "next_cursor"}``. Costs the page: its rows and their removals only."""
    now = service.clock()
    with service.db.read() as session:
        page = pages.read_page(
            session,
            select(AddressBookRow),
            kind="addressbook",
            order=(col(AddressBookRow.effective_at), col(AddressBookRow.id)),
            limit=limit,
            cursor=cursor,
        )
        removals = _removals(session, page.rows) if page.rows else {}
        items = [_book_view(r, removals, now) for r in page.rows]
    return {"items": items, "next_cursor": page.next_cursor}


def _book_view(r: AddressBookRow, removals: dict[str, int], now: int) -> dict[str, Any]:
    state = r.status
    if state == AddressBookState.ACTIVE:
        if r.effective_at > now:
            state = AddressBookState.PENDING
        elif r.id in removals:
            due = removals[r.id] <= now
            state = AddressBookState.REMOVED if due else AddressBookState.REMOVAL_PENDING
    return {
        "id": r.id,
        "chain": r.chain,
        "network": r.network,
        "address": r.address,
        "asset": r.asset,
        "label": r.label,
        "effective_at": r.effective_at,
        "effective_at_local": local_iso(r.effective_at),
        "proposal": r.proposal,
        "status": state,
    }


def explain_facts(
    service: Runner, *, wallet: str, chain: str, network: str, asset: str, amount: str, destination: str
) -> dict[str, Any]:
    """What the policy in force would say about a withdrawal with these facts, now."""
    now = service.clock()
    facts = WithdrawalFacts(
        wallet=wallet,
        chain=chain,
        network=network,
        asset=asset,
        amount=parse_amount(amount, where="amount"),
        destination=destination,
    )
    with service.db.read() as session:
        policy = current_policy(session, now)
        decision = evaluate(
            policy,
            facts,
            now=now,
            address_book=address_book(session, now),
            history=history_for(session, policy, wallet, now),
        )
    return {
        "facts": {
            "wallet": wallet,
            "chain": chain,
            "network": network,
            "asset": asset,
            "amount": amount,
            "destination": destination,
        },
        "decision": decision.to_json(),
        "allowed": decision.allowed,
    }


class PolicyService:
    """The policy and the address book: dual-controlled proposals and what is in force."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def propose_policy(self, envelope: Any) -> dict[str, Any]:
        return propose_policy(self.runner, envelope)

    def propose_address_change(self, envelope: Any) -> dict[str, Any]:
        return propose_address_change(self.runner, envelope)

    def veto_policy_proposal(self, envelope: Any) -> dict[str, Any]:
        return veto_proposal(self.runner, envelope)

    def policy_info(self) -> dict[str, Any]:
        return policy_info(self.runner)

    def address_book_view(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        return address_book_view(self.runner, limit=limit, cursor=cursor)

    def explain_facts(self, **facts: str) -> dict[str, Any]:
        return explain_facts(self.runner, **facts)
