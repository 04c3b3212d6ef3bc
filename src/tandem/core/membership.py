"""Replaying who was a member when: the genesis document, then every applied change.

The server uses the database for this; an offline verifier rebuilds it from the audit
log alone, so that every actor signature in the log can be re-verified without trusting
the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tandem.core.actions import parse_envelope
from tandem.core.canonical import check_fields, digest_hex, domain_bytes
from tandem.core.identity import IdentityCard, unb64, verify_ed25519
from tandem.core.roles import Role
from tandem.errors import (
    BadSignatureError,
    DuplicateIdentityError,
    InputError,
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


class MembershipReplay:
    """Feed audit entries in order; verifies every envelope against the keys in force."""

    def __init__(self) -> None:
        self.members: dict[str, MemberRecord] = {}
        self.deployment: str | None = None

    def observe(self, entry: Mapping[str, Any]) -> None:
        kind = entry["kind"]
        if entry["outcome"] != "ok":
            # A refused action is kept as evidence of the attempt; it may carry a bad
            # signature or come from a stranger, which is why it was refused.
            return
        if entry["envelope"] is not None:
            self.verify_envelope(entry["envelope"])
        data = entry["data"]
        if kind == "deployment.genesis":
            self.deployment = entry["deployment"]
            for card_doc in data["genesis"]["members"]:
                self._put(IdentityCard.from_json(card_doc))
        elif kind == "member.added":
            self._put(IdentityCard.from_json(data["card"]))
        elif kind == "member.removed":
            rec = self._get(data["member"])
            self.members[rec.id] = MemberRecord(**{**rec.__dict__, "active": False})
        elif kind == "member.rekeyed":
            rec = self._get(data["member"])
            card = IdentityCard.from_json(data["card"])
            self.members[rec.id] = MemberRecord(
                id=rec.id,
                name=rec.name,
                role=rec.role,
                sign_public=card.sign_public,
                seal_public=card.seal_public,
            )

    def _put(self, card: IdentityCard) -> None:
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

    def verify_envelope(self, envelope: Any) -> None:
        action = parse_envelope(envelope)
        rec = self.members.get(action.actor)
        if rec is None:
            raise VerificationError(f"action signed by {action.actor}, who is not a member at this point")
        action.verify(rec.sign_public)


def replay_signatures(entries: Iterable[Mapping[str, Any]]) -> int:
    """Re-verify every accepted action's signature against the membership in force at
    that point of the log. Raises AuditVerificationError naming the first bad entry."""
    from tandem.errors import AuditVerificationError, Error

    replay = MembershipReplay()
    count = 0
    for entry in entries:
        try:
            replay.observe(entry)
        except Error as exc:
            index = entry.get("index")
            raise AuditVerificationError(
                f"entry {index}: {exc.message}", index=index if isinstance(index, int) else None
            ) from None
        if entry["outcome"] == "ok" and entry["envelope"] is not None:
            count += 1
    return count
