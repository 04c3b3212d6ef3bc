"""Replaying who was a member when, and under which policy and address book.

The server uses the database for this; an offline verifier (``tandem audit verify``,
the offline signer, a member's own client) rebuilds it from the audit log alone. The
replay is *self-justifying*: an entry the server wrote about an effect
(``member.added``, ``policy.change_approved``, ...) changes nothing by itself. The
effect is recomputed from the member-signed proposal and the other side's signed
approvals earlier in the log, under the policy in force at that point, and the
server's entry must agree with it; an effect that does not follow is refused, naming
the entry. The service key alone can therefore write nothing that a verifier accepts
as a change of membership, policy or address book (THREATS 26).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.core import approvals as approvals_engine
from tandem.core.actions import SignedAction, parse_envelope
from tandem.core.canonical import check_fields, digest_hex, domain_bytes
from tandem.core.chains import NATIVE_ASSET, get_chain
from tandem.core.identity import IdentityCard, unb64, verify_ed25519
from tandem.core.policy import AddressBookEntry, Policy, default_policy, parse_policy, quorum
from tandem.core.roles import Role, a_role
from tandem.errors import (
    BadSignatureError,
    DuplicateIdentityError,
    Error,
    InputError,
    KeyRotatedError,
    UnknownActorError,
    VerificationError,
)

GENESIS_FORMAT = "tandem-genesis/1"
DEPLOYMENT_RE = re.compile(r"^dep_[A-Za-z0-9_-]{1,60}$")


@dataclass(frozen=True)
class MemberRecord:
    id: str
    name: str
    role: Role
    sign_public: bytes
    seal_public: bytes
    active: bool = True


def genesis_hash(doc: Mapping[str, Any]) -> str:
    return digest_hex("genesis", dict(doc))


def check_genesis(
    doc: Any,
    signatures: Any,
    *,
    service_sign_public: bytes | None = None,
    service_seal_public: bytes | None = None,
) -> list[IdentityCard]:
    """Validate a genesis document and every initial member's signature over it."""
    check_fields(
        doc,
        required=("format", "deployment", "entity", "created_at", "service", "members"),
        optional=("policy", "address_book"),
        where="genesis",
    )
    if "policy" in doc:
        from tandem.core.policy import parse_policy

        if parse_policy(doc["policy"]).version != 1:
            raise InputError("genesis.policy must be version 1")
    if "address_book" in doc and not isinstance(doc["address_book"], list):
        raise InputError("genesis.address_book must be a list of entries")
    if doc["format"] != GENESIS_FORMAT:
        raise InputError(f"genesis.format must be {GENESIS_FORMAT}")
    if not isinstance(doc["entity"], str) or not 1 <= len(doc["entity"]) <= 200:
        raise InputError("genesis.entity must be the legal entity's name (1-200 characters)")
    if not isinstance(doc["deployment"], str) or not DEPLOYMENT_RE.fullmatch(doc["deployment"]):
        raise InputError("genesis.deployment must be dep_ followed by 1-60 letters, digits, '_' or '-'")
    service = check_fields(doc["service"], required=("sign_public", "seal_public"), where="genesis.service")
    if service_sign_public is not None and service["sign_public"] != service_sign_public.hex():
        raise InputError("genesis names a different service key than this server's")
    if service_seal_public is not None and service["seal_public"] != service_seal_public.hex():
        raise InputError("genesis names a different service sealing key than this server's")
    if not isinstance(doc["members"], list) or not doc["members"]:
        raise InputError("genesis.members must list the initial members")
    cards = [IdentityCard.from_json(c) for c in doc["members"]]
    check_distinct(cards)
    roles = {c.role for c in cards}
    if Role.MANAGER not in roles or Role.CUSTODIAN not in roles:
        raise InputError("genesis needs at least one manager and one custodian")
    if not isinstance(signatures, dict):
        raise InputError("genesis signatures must map member id to signature")
    message = domain_bytes("genesis", doc)
    for card in cards:
        sig = signatures.get(card.member_id)
        if not isinstance(sig, str):
            raise BadSignatureError(f"genesis is not signed by initial member {card.name!r}")
        verify_ed25519(
            card.sign_public,
            message,
            unb64(sig, what="genesis signature"),
            what=f"genesis signature of {card.name!r}",
        )
    extra = set(signatures) - {c.member_id for c in cards}
    if extra:
        raise InputError("genesis signatures name someone who is not an initial member")
    return cards


def check_distinct(cards: list[IdentityCard]) -> None:
    seen_keys: set[bytes] = set()
    seen_names: set[str] = set()
    for card in cards:
        for key in (card.sign_public, card.seal_public):
            if key in seen_keys:
                raise DuplicateIdentityError(
                    f"a key of {card.name!r} is already registered to another member"
                )
            seen_keys.add(key)
        if card.name.casefold() in seen_names:
            raise DuplicateIdentityError(f"{card.name!r} already holds a role; one person, one role")
        seen_names.add(card.name.casefold())


# --- proposal content: one derivation for the server and every verifier ----------------

MEMBER_KINDS = ("member.add", "member.remove", "member.rekey")
BOOK_KINDS = ("addressbook.add", "addressbook.remove")
POLICY_CHANGE = "policy.change"
MAX_LABEL = 200
# A proposal waits this long for its approvals (the server's PROPOSAL_SECONDS).
PROPOSAL_SECONDS = 24 * 3600
# Entries the server writes about an effect; each must follow from signed proposals.
EFFECT_KINDS = frozenset(
    {
        "member.added",
        "member.removed",
        "member.rekeyed",
        "policy.change_approved",
        "addressbook.change_approved",
        "ceremony.executed",
        "keyset.reshared",
        "keyset.imported",
    }
)


def proposal_digest(*, proposal_id: str, kind: str, body: Mapping[str, Any], proposer: str) -> str:
    """What an approver signs: the proposal's identity and exact content."""
    return digest_hex("proposal", {"id": proposal_id, "kind": kind, "body": dict(body), "proposer": proposer})


def member_proposal_content(body: Any) -> dict[str, Any]:
    """The content of a ``member.propose`` action body, normalised (cards re-encoded
    after their self-signature verifies). Whether the target exists is the caller's
    question: the server asks its database, a verifier its replay."""
    check_fields(body, required=("change",), optional=("card", "member"), where="body")
    change = body["change"]
    if change == "add":
        if "member" in body:
            raise InputError("an addition names a card, not a member id")
        return {"change": "add", "card": IdentityCard.from_json(body.get("card")).to_json()}
    if change in ("remove", "rekey"):
        target = body.get("member")
        if not isinstance(target, str) or not 0 < len(target) <= 64:
            raise InputError("body.member must be a member id")
        content: dict[str, Any] = {"change": change, "member": target}
        if change == "rekey":
            content["card"] = IdentityCard.from_json(body.get("card")).to_json()
        elif "card" in body:
            raise InputError("a removal names a member id, not a card")
        return content
    raise InputError("body.change must be add, remove or rekey")


def policy_proposal_content(body: Any) -> dict[str, Any]:
    check_fields(body, required=("policy",), where="body")
    return {"policy": parse_policy(body["policy"]).to_json()}


def _label(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_LABEL:
        raise InputError(f"label must be 1-{MAX_LABEL} characters")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        raise InputError("label must not contain control characters")
    return value


def normalize_book_entry(body: Any) -> dict[str, Any]:
    """A validated address-book addition (addresses in their normal spelling)."""
    check_fields(
        body, required=("change", "chain", "network", "address", "label"), optional=("asset",), where="body"
    )
    chain, network = body["chain"], body["network"]
    if chain not in NATIVE_ASSET:
        raise InputError(f"body.chain must be one of {', '.join(NATIVE_ASSET)}")
    if not isinstance(network, str):
        raise InputError("body.network must be a string")
    impl = get_chain(chain)
    if not isinstance(body["address"], str):
        raise InputError("body.address must be a string")
    address = impl.validate_address(body["address"], network)
    out: dict[str, Any] = {
        "change": "add",
        "chain": chain,
        "network": network,
        "address": address,
        "label": _label(body["label"]),
    }
    asset = body.get("asset")
    if asset is not None:
        if not isinstance(asset, str):
            raise InputError("body.asset must be a string")
        if asset != NATIVE_ASSET[chain]:
            if chain == "bitcoin":
                raise InputError(f"body.asset must be {NATIVE_ASSET[chain]} on {chain}")
            asset = impl.validate_address(asset, network)
        out["asset"] = asset
    return out


def book_entry_of(content: Mapping[str, Any], entry_id: str) -> dict[str, Any]:
    """The stored/logged form of an approved addition: its fields and its id."""
    entry = {k: content[k] for k in ("chain", "network", "address", "label")}
    if content.get("asset") is not None:
        entry["asset"] = content["asset"]
    entry["id"] = entry_id
    return entry


def book_removal_content(entry_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "change": "remove",
        "entry": entry_id,
        "address": entry["address"],
        "chain": entry["chain"],
        "network": entry["network"],
    }


def required_approvals(policy: Policy, kind: str, proposer_role: Role) -> dict[Role, int]:
    """Membership changes are decided by the other side (as many as the policy's
    membership section says); policy and address-book changes by one custodian (only
    managers propose those)."""
    if kind in MEMBER_KINDS:
        return policy.membership_rule().required(proposer_role)
    return {Role.CUSTODIAN: 1}


def change_delay(policy: Policy, kind: str) -> int:
    """Seconds from the approval that met quorum to the change taking effect, taken from
    the policy in force *before* the change (a change cannot shorten its own veto)."""
    if kind in MEMBER_KINDS:
        return policy.membership_rule().delay_for(kind.split(".", 1)[1])
    return policy.change_delay_seconds


def veto_roles(kind: str) -> frozenset[Role]:
    """Either side may stop a membership change in its delay; custodians a policy or
    address-book change (managers proposed it)."""
    if kind in MEMBER_KINDS:
        return frozenset({Role.MANAGER, Role.CUSTODIAN})
    return frozenset({Role.CUSTODIAN})


# --- the justified replay -----------------------------------------------------------


@dataclass
class ReplayedProposal:
    id: str
    kind: str
    content: dict[str, Any]
    proposer: str
    proposer_role: Role
    created_at: int
    digest: str
    approvals: dict[str, Role] = field(default_factory=dict)
    status: str = "pending"
    approved_at: int | None = None
    effective_at: int | None = None
    effect_logged: bool = False


@dataclass
class ReplayedCeremony:
    """A key ceremony (or key-set import) as the signed actions in the log describe it."""

    id: str
    proposer: str
    required: Mapping[Role, int]
    digest: str | None
    approvals: dict[str, Role] = field(default_factory=dict)
    closed: str | None = None


@dataclass
class PolicyVersion:
    policy: Policy
    effective_at: int
    proposal: str
    index: int = 0  # the log entry that recorded it


@dataclass
class BookItem:
    entry: dict[str, Any]
    effective_at: int
    proposal: str
    index: int = 0
    removed_at: int | None = None
    removal_proposal: str | None = None
    removal_index: int = 0


class LogState:
    """Feed audit entries in order. Every envelope is verified against the keys in
    force at its point; every effect on membership, policy and address book is applied
    only when it follows from a verified proposal and enough verified approvals.

    ``observe`` raises :class:`VerificationError` (or another :class:`Error`) naming
    what is wrong; :meth:`observe_entry` adds the entry's index.
    """

    def __init__(self, *, genesis_hash_pin: str | None = None) -> None:
        self.members: dict[str, MemberRecord] = {}
        # Member id -> signing keys it held before a rotation, with the log index of the
        # rotation that retired each (so an old key's signature is named for what it is).
        self.retired_keys: dict[str, list[tuple[bytes, int]]] = {}
        self.deployment: str | None = None
        self.genesis_hash: str | None = None
        self.genesis_hash_pin = genesis_hash_pin
        self.service_sign_public: bytes | None = None
        self.policies: dict[int, PolicyVersion] = {}
        self.book: dict[str, BookItem] = {}
        self.proposals: dict[str, ReplayedProposal] = {}
        self.signatures_verified = 0
        self.effects_justified = 0
        self._genesis_policy: dict[str, Any] | None = None
        self._genesis_book: list[dict[str, Any]] = []
        self._proposal_nonces: set[str] = set()
        self.ceremonies: dict[str, ReplayedCeremony] = {}
        # Key set id -> the ceremony or import whose signed actions justify it.
        self.keysets: dict[str, str] = {}

    # --- queries ---------------------------------------------------------------------

    def active_members(self) -> dict[str, Role]:
        return {m.id: m.role for m in self.members.values() if m.active}

    def policy_at(self, at: int, *, before: int | None = None) -> Policy:
        """The policy in force at time ``at``; with ``before``, counting only changes
        recorded before that log index (a later veto cannot reach back: it must come
        before the change takes effect)."""
        live = [
            v for v in self.policies.values() if v.effective_at <= at and (before is None or v.index < before)
        ]
        if not live:
            raise VerificationError("no policy was in force at that time")
        return max(live, key=lambda v: v.policy.version).policy

    def latest_policy_version(self) -> int:
        return max(self.policies, default=0)

    def book_at(self, at: int, *, before: int | None = None) -> list[AddressBookEntry]:
        limit = before if before is not None else float("inf")
        return [
            AddressBookEntry.from_json(item.entry)
            for item in self.book.values()
            if item.effective_at <= at
            and item.index < limit
            and not (item.removed_at is not None and item.removed_at <= at and item.removal_index < limit)
        ]

    # --- feeding entries -------------------------------------------------------------

    def observe_entry(self, entry: Mapping[str, Any]) -> None:
        """:meth:`observe`, with any failure reported as an AuditVerificationError at
        the entry's index."""
        from tandem.errors import AuditVerificationError

        try:
            self.observe(entry)
        except AuditVerificationError:
            raise
        except Error as exc:
            index = entry.get("index")
            raise AuditVerificationError(
                f"entry {index} ({entry.get('kind')}): {exc.message}",
                index=index if isinstance(index, int) else None,
            ) from None

    def observe(self, entry: Mapping[str, Any]) -> None:
        kind = entry["kind"]
        if entry["outcome"] != "ok":
            # A refused action is kept as evidence of the attempt; it may carry a bad
            # signature or come from a stranger, which is why it was refused.
            return
        if self.deployment is None:
            if kind != "deployment.genesis":
                raise VerificationError("the log does not start with a genesis entry")
            self._genesis(entry)
            return
        if entry["deployment"] != self.deployment:
            raise VerificationError("entry is for another deployment")
        action = self.verify_envelope(entry["envelope"]) if entry["envelope"] is not None else None
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, entry, action)
        elif kind in EFFECT_KINDS:  # pragma: no cover - every effect kind has a handler
            raise VerificationError(f"no rule justifies a {kind} entry")

    def verify_envelope(self, envelope: Any) -> SignedAction:
        action = parse_envelope(envelope)
        rec = self.members.get(action.actor)
        if rec is None:
            raise VerificationError(f"action signed by {action.actor}, who is not a member at this point")
        try:
            action.verify(rec.sign_public)
        except BadSignatureError:
            for old, retired_at in self.retired_keys.get(rec.id, []):
                if action.verifies_with(old):
                    raise KeyRotatedError(
                        f"action signed by {rec.id} with the key its rotation at entry {retired_at} "
                        "retired; only the member's current key signs"
                    ) from None
            raise
        if action.deployment != self.deployment:
            raise VerificationError("an action in the log was signed for another deployment")
        self.signatures_verified += 1
        return action

    # --- genesis ---------------------------------------------------------------------

    def _genesis(self, entry: Mapping[str, Any]) -> None:
        data = entry["data"]
        check_fields(data, required=("genesis", "signatures", "genesis_hash"), where="genesis entry")
        doc = data["genesis"]
        cards = check_genesis(doc, data["signatures"])
        root = genesis_hash(doc)
        if data["genesis_hash"] != root:
            raise VerificationError("the genesis entry names another hash than its document's")
        if self.genesis_hash_pin is not None and root != self.genesis_hash_pin:
            raise VerificationError(f"genesis hash {root} is not the pinned {self.genesis_hash_pin}")
        if entry["deployment"] != doc["deployment"]:
            raise VerificationError("the genesis entry is for another deployment than its document")
        self.deployment = doc["deployment"]
        self.genesis_hash = root
        self.service_sign_public = bytes.fromhex(doc["service"]["sign_public"])
        for card in cards:
            self._put(card)
        # Version 1 is the default until the genesis terms (signed by every initial
        # member) replace it in the entries that follow.
        self.policies[1] = PolicyVersion(default_policy(), entry["time"], "genesis", entry["index"])
        if "policy" in doc:
            self._genesis_policy = parse_policy(doc["policy"]).to_json()
        for raw in doc.get("address_book", []):
            content = normalize_book_entry({"change": "add", **raw} if isinstance(raw, dict) else raw)
            self._genesis_book.append(book_entry_of(content, ""))

    def _put(self, card: IdentityCard) -> None:
        if card.member_id in self.members:
            raise DuplicateIdentityError(f"member {card.member_id} is already registered")
        check_distinct(
            [
                *(
                    IdentityCard(
                        name=m.name, role=m.role, sign_public=m.sign_public, seal_public=m.seal_public
                    )
                    for m in self.members.values()
                ),
                card,
            ]
        )
        self.members[card.member_id] = MemberRecord(
            id=card.member_id,
            name=card.name,
            role=card.role,
            sign_public=card.sign_public,
            seal_public=card.seal_public,
        )

    def _get(self, member_id: str) -> MemberRecord:
        try:
            return self.members[member_id]
        except KeyError:
            raise UnknownActorError(f"member {member_id} is not known at this point of the log") from None

    # --- proposals -------------------------------------------------------------------

    def _proposed(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:  # noqa: PLR0912 - one branch per proposal kind
        kind = entry["kind"]
        expected_type = {
            "member.proposed": "member.propose",
            "policy.proposed": "policy.propose",
            "addressbook.proposed": "addressbook.propose",
        }[kind]
        action = _require_action(action, expected_type, entry)
        proposer = self._active(action.actor)
        data = entry["data"]
        proposal_id = data.get("proposal")
        if not isinstance(proposal_id, str) or proposal_id in self.proposals or proposal_id == "genesis":
            raise VerificationError(f"proposal id {proposal_id!r} is missing or used before")
        if action.nonce in self._proposal_nonces:
            raise VerificationError("this signed proposal already made another proposal")
        if kind == "member.proposed":
            if proposer.role not in (Role.MANAGER, Role.CUSTODIAN):
                raise VerificationError(f"{a_role(proposer.role)} may not propose membership changes")
            content = member_proposal_content(action.body)
            pkind = f"member.{content['change']}"
            if content["change"] != "add":
                target = self._get(content["member"])
                if not target.active:
                    raise VerificationError(f"member {target.id} is not active")
        else:
            if proposer.role is not Role.MANAGER:
                raise VerificationError(
                    f"{a_role(proposer.role)} may not propose {kind.split('.')[0]} changes"
                )
            if kind == "policy.proposed":
                content = policy_proposal_content(action.body)
                pkind = POLICY_CHANGE
            else:
                change = action.body.get("change")
                if change == "add":
                    content = normalize_book_entry(dict(action.body))
                elif change == "remove":
                    check_fields(action.body, required=("change", "entry"), where="body")
                    item = self.book.get(action.body["entry"])
                    if item is None:
                        raise VerificationError("the removal names no address-book entry of the log")
                    content = book_removal_content(action.body["entry"], item.entry)
                else:
                    raise VerificationError("body.change must be add or remove")
                pkind = f"addressbook.{change}"
        if data.get("kind", pkind) != pkind:
            raise VerificationError(f"the entry says {data.get('kind')}, the signed proposal is {pkind}")
        digest = proposal_digest(proposal_id=proposal_id, kind=pkind, body=content, proposer=proposer.id)
        if data.get("digest") != digest:
            raise VerificationError("the logged proposal digest is not the digest of the signed proposal")
        self._proposal_nonces.add(action.nonce)
        self.proposals[proposal_id] = ReplayedProposal(
            id=proposal_id,
            kind=pkind,
            content=content,
            proposer=proposer.id,
            proposer_role=proposer.role,
            created_at=entry["time"],
            digest=digest,
        )

    def _decision(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:
        approve = entry["kind"] == "proposal.approved"
        action = _require_action(action, "proposal.approve" if approve else "proposal.reject", entry)
        check_fields(action.body, required=("proposal", "digest"), optional=("reason",), where="body")
        p = self._proposal(action.body["proposal"])
        if entry["data"].get("proposal") != p.id:
            raise VerificationError("the entry names another proposal than the signed decision")
        if not _digest_equal(action.body["digest"], p.digest):
            raise VerificationError("the signed decision is for other proposal content (digest mismatch)")
        if p.status != "pending":
            raise VerificationError(f"proposal {p.id} is {p.status}, not pending")
        if entry["time"] >= p.created_at + PROPOSAL_SECONDS:
            raise VerificationError(f"proposal {p.id} had expired")
        actor = self._active(action.actor)
        policy = self.policy_at(entry["time"])
        required = required_approvals(policy, p.kind, p.proposer_role)
        request = approvals_engine.Request(requester=p.proposer, kind=p.kind)
        try:
            approvals_engine.admit(
                request, member=actor.id, role=actor.role, required=required, what=f"proposal {p.id}"
            )
        except Error as exc:
            raise VerificationError(f"the log accepted a decision it must refuse: {exc.message}") from None
        if not approve:
            p.status = "rejected"
            return
        if actor.id in p.approvals:
            raise VerificationError(f"{actor.id} approved twice; approvals count per member")
        p.approvals[actor.id] = actor.role
        result = quorum(
            required,
            list(p.approvals.items()),
            requester=p.proposer,
            eligible=self.active_members(),
        )
        if result.met:
            p.status = "approved"
            p.approved_at = entry["time"]
            p.effective_at = entry["time"] + change_delay(policy, p.kind)
            logged = entry["data"].get("effective_at")
            if logged is not None and logged != p.effective_at:
                raise VerificationError(
                    f"the entry says the change takes effect at {logged}; the policy says {p.effective_at}"
                )

    def _vetoed(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:
        action = _require_action(action, "proposal.veto", entry)
        p = self._proposal(action.body.get("proposal"))
        actor = self._active(action.actor)
        if actor.role not in veto_roles(p.kind):
            raise VerificationError(f"{a_role(actor.role)} may not veto a {p.kind} proposal")
        if p.status != "approved" or p.effective_at is None or entry["time"] >= p.effective_at:
            raise VerificationError(f"proposal {p.id} is not in its delay; it cannot be vetoed")
        p.status = "vetoed"
        if p.kind == POLICY_CHANGE:
            self.policies = {v: pv for v, pv in self.policies.items() if pv.proposal != p.id}
        elif p.kind == "addressbook.add":
            self.book = {k: item for k, item in self.book.items() if item.proposal != p.id}
        elif p.kind == "addressbook.remove":
            for item in self.book.values():
                if item.removal_proposal == p.id:
                    item.removed_at = item.removal_proposal = None

    # --- effects ---------------------------------------------------------------------

    def _justify(self, entry: Mapping[str, Any], kinds: tuple[str, ...]) -> ReplayedProposal:
        """The approved, unvetoed proposal an effect entry claims to carry out."""
        proposal_id = entry["data"].get("proposal")
        p = self.proposals.get(proposal_id) if isinstance(proposal_id, str) else None
        if p is None:
            raise VerificationError(
                f"{entry['kind']} names no member-signed proposal in the log; the effect is not justified"
            )
        if p.kind not in kinds:
            raise VerificationError(f"{entry['kind']} cannot carry out a {p.kind} proposal")
        if p.status != "approved" or p.effect_logged:
            raise VerificationError(
                f"{entry['kind']} carries out proposal {p.id}, which is {p.status}"
                + (" and already carried out" if p.effect_logged else "")
                + "; the effect is not justified by approvals in the log"
            )
        return p

    def _member_effect(self, entry: Mapping[str, Any], _action: SignedAction | None) -> None:
        kind = entry["kind"]
        expected = {
            "member.added": "member.add",
            "member.removed": "member.remove",
            "member.rekeyed": "member.rekey",
        }
        p = self._justify(entry, (expected[kind],))
        if p.effective_at is None or entry["time"] < p.effective_at:
            raise VerificationError(f"proposal {p.id} takes effect at {p.effective_at}, not before")
        # Removals since the approval may have undone the quorum (THREATS 6 and 32).
        result = quorum(
            required_approvals(self.policy_at(p.approved_at or entry["time"]), p.kind, p.proposer_role),
            list(p.approvals.items()),
            requester=p.proposer,
            eligible=self.active_members(),
        )
        if not result.met:
            raise VerificationError(f"proposal {p.id} no longer has the approvals it needs")
        data = entry["data"]
        content = p.content
        if content["change"] == "add":
            card = IdentityCard.from_json(content["card"])
            if data.get("member") != card.member_id or data.get("card") != content["card"]:
                raise VerificationError("the entry adds another card than the approved proposal")
            self._put(card)
        else:
            if data.get("member") != content["member"]:
                raise VerificationError("the entry names another member than the approved proposal")
            rec = self._get(content["member"])
            if not rec.active:
                raise VerificationError(f"member {rec.id} is not active")
            if content["change"] == "remove":
                self.members[rec.id] = MemberRecord(**{**rec.__dict__, "active": False})
            else:
                card = IdentityCard.from_json(content["card"])
                if data.get("card") != content["card"]:
                    raise VerificationError("the entry rekeys to another card than the approved proposal")
                if (card.name, card.role) != (rec.name, rec.role):
                    raise VerificationError("a rekey keeps the member's name and role")
                others = [m for m in self.members.values() if m.id != rec.id]
                if any(
                    k in (m.sign_public, m.seal_public)
                    for m in others
                    for k in (card.sign_public, card.seal_public)
                ):
                    raise DuplicateIdentityError("the new key is registered to another member")
                self.retired_keys.setdefault(rec.id, []).append((rec.sign_public, entry["index"]))
                self.members[rec.id] = MemberRecord(
                    id=rec.id,
                    name=rec.name,
                    role=rec.role,
                    sign_public=card.sign_public,
                    seal_public=card.seal_public,
                )
        p.effect_logged = True
        p.status = "applied"
        self.effects_justified += 1

    def _policy_effect(self, entry: Mapping[str, Any], _action: SignedAction | None) -> None:
        data = entry["data"]
        if data.get("proposal") == "genesis":
            if self._genesis_policy is None or data.get("policy") != self._genesis_policy:
                raise VerificationError("a genesis policy entry that the genesis document does not carry")
            if data.get("effective_at") != entry["time"]:
                raise VerificationError("the genesis policy takes effect at genesis")
            self.policies[1] = PolicyVersion(
                parse_policy(self._genesis_policy), entry["time"], "genesis", entry["index"]
            )
            self._genesis_policy = None
            self.effects_justified += 1
            return
        p = self._justify(entry, (POLICY_CHANGE,))
        if p.approved_at != entry["time"]:
            raise VerificationError("a policy change is recorded when it is approved")
        new = parse_policy(p.content["policy"])
        if data.get("policy") != p.content["policy"]:
            raise VerificationError("the entry installs another policy than the approved proposal")
        if new.version != self.latest_policy_version() + 1:
            raise VerificationError(
                f"policy version {new.version} does not follow {self.latest_policy_version()}"
            )
        if p.effective_at is None or data.get("effective_at") != p.effective_at:
            raise VerificationError(
                f"the entry says effective at {data.get('effective_at')}, the policy says {p.effective_at}"
            )
        self.policies[new.version] = PolicyVersion(new, p.effective_at, p.id, entry["index"])
        p.effect_logged = True
        self.effects_justified += 1

    def _book_effect(self, entry: Mapping[str, Any], _action: SignedAction | None) -> None:
        data = entry["data"]
        if data.get("proposal") == "genesis":
            got = data.get("entry")
            if not isinstance(got, dict) or not self._genesis_book:
                raise VerificationError(
                    "a genesis address-book entry that the genesis document does not carry"
                )
            entry_id = got.get("id")
            if not isinstance(entry_id, str) or book_entry_of(self._genesis_book[0], entry_id) != got:
                raise VerificationError("the genesis address-book entry differs from the genesis document")
            if (
                entry_id in self.book
                or data.get("effective_at") != entry["time"]
                or data.get("change") != "add"
            ):
                raise VerificationError("the genesis address-book entry is not a fresh addition at genesis")
            self._genesis_book.pop(0)
            self.book[entry_id] = BookItem(got, entry["time"], "genesis", entry["index"])
            self.effects_justified += 1
            return
        p = self._justify(entry, BOOK_KINDS)
        if p.approved_at != entry["time"]:
            raise VerificationError("an address-book change is recorded when it is approved")
        if p.effective_at is None or data.get("effective_at") != p.effective_at:
            raise VerificationError("the entry's effective_at differs from the policy's delay")
        if p.kind == "addressbook.add":
            got = data.get("entry")
            entry_id = got.get("id") if isinstance(got, dict) else None
            if not isinstance(entry_id, str) or entry_id in self.book or data.get("change") != "add":
                raise VerificationError("the address-book addition has no fresh entry id")
            if book_entry_of(p.content, entry_id) != got:
                raise VerificationError("the entry adds another destination than the approved proposal")
            self.book[entry_id] = BookItem(got, p.effective_at, p.id, entry["index"])
        else:
            item = self.book.get(p.content["entry"])
            if data.get("change") != "remove" or data.get("entry_id") != p.content["entry"] or item is None:
                raise VerificationError("the entry removes another destination than the approved proposal")
            item.removed_at = p.effective_at
            item.removal_proposal = p.id
            item.removal_index = entry["index"]
        p.effect_logged = True
        self.effects_justified += 1

    # --- key sets --------------------------------------------------------------------

    def _ceremony_proposed(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:
        from tandem.core.ceremony_def import parse_definition

        import_ = entry["kind"] == "keyset.import_proposed"
        action = _require_action(action, "keyset.import" if import_ else "ceremony.propose", entry)
        proposer = self._active(action.actor)
        if proposer.role is not Role.MANAGER:
            raise VerificationError("only a manager proposes a key ceremony or import")
        data = entry["data"]
        ceremony_id = data.get("import" if import_ else "ceremony")
        if not isinstance(ceremony_id, str) or ceremony_id in self.ceremonies:
            raise VerificationError(f"ceremony id {ceremony_id!r} is missing or used before")
        if import_:
            # An import is decided by one custodian re-sealing its share (THREATS 40).
            required: Mapping[Role, int] = {Role.CUSTODIAN: 1}
            digest = None
        else:
            if action.body.get("ceremony") != ceremony_id:
                raise VerificationError("the entry names another ceremony than the signed proposal")
            text = action.body.get("definition")
            if not isinstance(text, str):
                raise VerificationError("the signed ceremony proposal carries no definition")
            definition = parse_definition(text, source="logged definition")
            if data.get("definition_hash") != definition.definition_hash():
                raise VerificationError("the logged definition hash is not the signed definition's")
            required = definition.approvals.by_role()
            digest = data.get("digest") if isinstance(data.get("digest"), str) else None
        self.ceremonies[ceremony_id] = ReplayedCeremony(ceremony_id, proposer.id, required, digest)

    def _ceremony_approved(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:
        action = _require_action(action, "ceremony.approve", entry)
        c = self._ceremony(action.body.get("ceremony"))
        if c.digest is None or not _digest_equal(action.body.get("digest"), c.digest):
            raise VerificationError("the signed approval is for other ceremony content (digest mismatch)")
        self._ceremony_approval(c, action)

    def _ceremony_approval(self, c: ReplayedCeremony, action: SignedAction) -> None:
        actor = self._active(action.actor)
        if actor.id == c.proposer or not c.required.get(actor.role, 0):
            raise VerificationError(f"{actor.id} may not approve ceremony {c.id}")
        if c.closed is not None:
            raise VerificationError(f"ceremony {c.id} was {c.closed}")
        c.approvals[actor.id] = actor.role

    def _ceremony_closed(self, entry: Mapping[str, Any], _action: SignedAction | None) -> None:
        ceremony_id = entry["data"].get("ceremony")
        if isinstance(ceremony_id, str) and ceremony_id in self.ceremonies:
            self.ceremonies[ceremony_id].closed = entry["kind"].split(".", 1)[1]

    def _keyset_effect(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:
        data = entry["data"]
        if entry["kind"] == "keyset.imported":
            action = _require_action(action, "keyset.import_approve", entry)
            c = self._ceremony(data.get("import"))
            if action.body.get("import") != c.id:
                raise VerificationError("the signed approval is for another import")
            self._ceremony_approval(c, action)
        else:
            c = self._ceremony(data.get("ceremony"))
        if c.closed is not None:
            raise VerificationError(f"{entry['kind']} for ceremony {c.id}, which was {c.closed}")
        result = quorum(
            c.required, list(c.approvals.items()), requester=c.proposer, eligible=self.active_members()
        )
        if not result.met:
            raise VerificationError(
                f"{entry['kind']} for ceremony {c.id} is not justified: its signed approvals "
                "do not meet the definition's quorum"
            )
        keyset = data.get("keyset")
        if not isinstance(keyset, str):
            raise VerificationError(f"{entry['kind']} names no key set")
        self.keysets[keyset] = c.id
        self.effects_justified += 1

    def _ceremony(self, ceremony_id: Any) -> ReplayedCeremony:
        c = self.ceremonies.get(ceremony_id) if isinstance(ceremony_id, str) else None
        if c is None:
            raise VerificationError(
                f"ceremony {ceremony_id!r} has no manager-signed proposal in the log; "
                "the key set is not justified"
            )
        return c

    def _applied(self, entry: Mapping[str, Any], action: SignedAction | None) -> None:
        """``proposal.applied``: a member asked for a due change; the effect entry that
        follows is what is checked."""
        _require_action(action, "proposal.apply", entry)

    # --- helpers ---------------------------------------------------------------------

    def _proposal(self, proposal_id: Any) -> ReplayedProposal:
        p = self.proposals.get(proposal_id) if isinstance(proposal_id, str) else None
        if p is None:
            raise VerificationError(f"proposal {proposal_id!r} is not proposed in the log")
        return p

    def _active(self, member_id: str) -> MemberRecord:
        rec = self._get(member_id)
        if not rec.active:
            raise VerificationError(f"member {member_id} had been removed")
        return rec


def _digest_equal(a: Any, b: str) -> bool:
    import hmac

    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


def _require_action(action: SignedAction | None, type_: str, entry: Mapping[str, Any]) -> SignedAction:
    if action is None:
        raise VerificationError(f"a {entry['kind']} entry must carry the member-signed {type_} action")
    if action.type != type_:
        raise VerificationError(f"a {entry['kind']} entry carries a {action.type} action, not {type_}")
    if entry["actor"] != action.actor:
        raise VerificationError("the entry names another actor than the signed action")
    return action


_HANDLERS = {
    "member.proposed": LogState._proposed,
    "policy.proposed": LogState._proposed,
    "addressbook.proposed": LogState._proposed,
    "proposal.approved": LogState._decision,
    "proposal.rejected": LogState._decision,
    "proposal.vetoed": LogState._vetoed,
    "proposal.applied": LogState._applied,
    "member.added": LogState._member_effect,
    "member.removed": LogState._member_effect,
    "member.rekeyed": LogState._member_effect,
    "policy.change_approved": LogState._policy_effect,
    "addressbook.change_approved": LogState._book_effect,
    "ceremony.proposed": LogState._ceremony_proposed,
    "keyset.import_proposed": LogState._ceremony_proposed,
    "ceremony.approved": LogState._ceremony_approved,
    "ceremony.rejected": LogState._ceremony_closed,
    "ceremony.aborted": LogState._ceremony_closed,
    "ceremony.expired": LogState._ceremony_closed,
    "keyset.import_expired": LogState._ceremony_closed,
    "ceremony.executed": LogState._keyset_effect,
    "keyset.reshared": LogState._keyset_effect,
    "keyset.imported": LogState._keyset_effect,
}

# Every kind the replay acts on (plus the genesis it starts from): a verifier holding a
# sparse selection of the log must hold every entry of these kinds.
REPLAYED_KINDS: tuple[str, ...] = tuple(sorted({"deployment.genesis", *_HANDLERS}))

# The earlier name: a replay is now always a justified one.
MembershipReplay = LogState


def replay_log(entries: Iterable[Mapping[str, Any]], *, genesis_hash_pin: str | None = None) -> LogState:
    """Replay ``entries`` from the genesis; raises AuditVerificationError naming the
    first entry whose signature or effect does not verify."""
    state = LogState(genesis_hash_pin=genesis_hash_pin)
    for entry in entries:
        state.observe_entry(entry)
    return state


def replay_signatures(entries: Iterable[Mapping[str, Any]], *, genesis_hash_pin: str | None = None) -> int:
    """Re-verify every accepted action's signature against the membership in force at
    that point of the log, and every effect against its justification. Returns the
    number of actor signatures verified."""
    return replay_log(entries, genesis_hash_pin=genesis_hash_pin).signatures_verified
