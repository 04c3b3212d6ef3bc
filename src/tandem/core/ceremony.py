"""Key ceremonies: the state machine, key-set generation and the transcript.

A keygen ceremony runs::

    proposed --quorum met--> revealing --last reveal--> executed --all countersigned--> complete
    proposed | revealing --reject / abort / expiry--> rejected | aborted | expired

The proposer (a manager) and every approver commit to a 32-byte contribution in their
signed propose/approve action. Nobody reveals before every commitment is fixed, so no
one can choose a contribution after seeing another's. The last reveal triggers
execution: keys come from the signer's OS entropy mixed with every contribution
(:func:`tandem.core.keygen.derive_private_keys`).

A reshare ceremony has no contributions: the proposer and the custodian approver each
re-seal their share of the target key set to a one-time operation key, and the quorum
approval triggers the DEK rotation.

The transcript is canonical JSON that anyone can verify offline with public data only
(:func:`verify_transcript`): every signed action against the participants' keys, the
commitments against the reveals, every address against its public key, every birth
proof in its chain's own message format, and the countersignatures over the
transcript hash. Nothing here touches a database, the network or the clock.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.core import keygen, split
from tandem.core.actions import SignedAction, parse_envelope
from tandem.core.canonical import JSON, canonical, check_fields, digest_hex, loads_strict
from tandem.core.ceremony_def import CeremonyDefinition, parse_definition
from tandem.core.chains import MessageProof, get_chain
from tandem.core.policy import quorum
from tandem.core.roles import Role
from tandem.errors import (
    CommitmentMismatchError,
    ConflictError,
    Error,
    InputError,
    InvalidStateError,
    VerificationError,
)

__all__ = [
    "ACTION_TYPES",
    "OPEN_STATUSES",
    "TRANSCRIPT_FORMAT",
    "CeremonyState",
    "GeneratedKeyset",
    "TranscriptReport",
    "birth_message",
    "build_pre_execution",
    "ceremony_digest",
    "finish_transcript",
    "generate_keyset",
    "is_expired",
    "pre_execution_hash",
    "require_status",
    "transcript_hash",
    "verify_birth_proofs",
    "verify_transcript",
]

TRANSCRIPT_FORMAT = "tandem-ceremony-transcript/1"
CEREMONY_ID = re.compile(r"cer_[0-9a-f]{16,32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")

PROPOSE = "ceremony.propose"
APPROVE = "ceremony.approve"
REJECT = "ceremony.reject"
REVEAL = "ceremony.reveal"
COUNTERSIGN = "ceremony.countersign"
ABORT = "ceremony.abort"
ACTION_TYPES = (PROPOSE, APPROVE, REJECT, REVEAL, COUNTERSIGN, ABORT)

# --- state machine ---------------------------------------------------------------------

PROPOSED = "proposed"
REVEALING = "revealing"
EXECUTED = "executed"
COMPLETE = "complete"
REJECTED = "rejected"
ABORTED = "aborted"
EXPIRED = "expired"
OPEN_STATUSES = (PROPOSED, REVEALING)

# Which statuses each step may start from. Expiry, rejection and abort stop a ceremony
# only before execution: once a key set exists it is recorded, not undone.
_ALLOWED: Mapping[str, tuple[str, ...]] = {
    "approve": (PROPOSED,),
    "reveal": (REVEALING,),
    "countersign": (EXECUTED,),
    "reject": OPEN_STATUSES,
    "abort": OPEN_STATUSES,
    "expire": OPEN_STATUSES,
}


def require_status(status: str, step: str) -> None:
    """Raise :class:`InvalidStateError` unless ``step`` may happen in ``status``."""
    allowed = _ALLOWED[step]
    if status not in allowed:
        hint = {
            "approve": "approvals are taken while the ceremony is proposed",
            "reveal": "reveals start once every required approval (and commitment) is in",
            "countersign": "countersignatures are taken once the key set has been made",
        }.get(step, "only a ceremony that has not executed can be stopped")
        raise InvalidStateError(
            f"cannot {step}: the ceremony is {status} ({hint})",
            details={"status": status, "step": step},
        )


def is_expired(status: str, expires_at: int, now: int) -> bool:
    """An open ceremony past its expiry is expired; an executed one never is."""
    return status in OPEN_STATUSES and now >= expires_at


def ceremony_digest(
    *,
    ceremony_id: str,
    kind: str,
    definition_hash: str,
    proposer: str,
    target_keyset: str | None,
    expires_at: int,
    commitment: str | None,
) -> str:
    """What an approver signs: the ceremony's identity, its exact definition and the
    proposer's commitment. Approving clients recompute it from what they are shown."""
    return digest_hex(
        "ceremony",
        {
            "ceremony": ceremony_id,
            "kind": kind,
            "definition_hash": definition_hash,
            "proposer": proposer,
            "target_keyset": target_keyset,
            "expires_at": expires_at,
            "commitment": commitment,
        },
    )


@dataclass
class CeremonyState:
    """The mutable record of one ceremony (stored as JSON beside the ceremony row)."""

    participants: list[str] = field(default_factory=list)  # proposer first, then approvers
    commitments: dict[str, str] = field(default_factory=dict)
    approvals: list[str] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # accepted envelopes, in order
    reveals: dict[str, str] = field(default_factory=dict)
    countersigned: list[str] = field(default_factory=list)
    operation: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = None  # who rejected/aborted, why, when
    pre_execution_hash: str | None = None
    transcript_hash: str | None = None

    def to_json(self) -> str:
        return canonical(self.__dict__).decode("utf-8")

    @property
    def operation_id(self) -> str:
        """The operation key's id this ceremony's signed operation document names."""
        if self.operation is None:
            raise InputError("this ceremony holds no operation key")
        return split.operation_id(self.operation)

    @classmethod
    def from_json(cls, text: str) -> CeremonyState:
        doc = loads_strict(text)
        return cls(**check_fields(doc, required=(), optional=tuple(cls().__dict__), where="ceremony state"))

    def add_participant(self, member_id: str, *, commitment: str | None, envelope: dict[str, Any]) -> None:
        if member_id in self.participants:
            raise ConflictError("this member already takes part; approvals count once per member")
        if commitment is not None:
            if not isinstance(commitment, str) or not _HEX64.fullmatch(commitment):
                raise InputError("body.commitment must be 64 lowercase hex digits")
            if commitment in self.commitments.values():
                raise ConflictError("this commitment is already used by another participant")
            self.commitments[member_id] = commitment
        self.participants.append(member_id)
        self.actions.append(envelope)

    def add_approval(self, member_id: str, *, commitment: str | None, envelope: dict[str, Any]) -> None:
        self.add_participant(member_id, commitment=commitment, envelope=envelope)
        self.approvals.append(member_id)

    def add_reveal(
        self, ceremony_id: str, member_id: str, contribution_hex: Any, envelope: dict[str, Any]
    ) -> None:
        """Check a reveal against the member's commitment (the caller audits a mismatch)."""
        commitment = self.commitments.get(member_id)
        if commitment is None:
            raise InputError("only a participant who committed to a contribution reveals one")
        if member_id in self.reveals:
            raise ConflictError("this member has already revealed its contribution")
        contribution = _contribution(contribution_hex)
        keygen.check_reveal(
            ceremony_id=ceremony_id,
            member_id=member_id,
            contribution=contribution,
            commitment=commitment,
        )
        self.reveals[member_id] = contribution.hex()
        self.actions.append(envelope)

    @property
    def all_revealed(self) -> bool:
        return bool(self.commitments) and set(self.reveals) == set(self.commitments)

    def add_countersignature(self, member_id: str) -> None:
        if member_id not in self.participants:
            raise InputError("only a participant of the ceremony countersigns its transcript")
        if member_id in self.countersigned:
            raise ConflictError("this member has already countersigned the transcript")
        self.countersigned.append(member_id)

    @property
    def all_countersigned(self) -> bool:
        return set(self.countersigned) == set(self.participants)


def _contribution(value: Any) -> bytes:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise InputError(f"body.contribution must be {keygen.CONTRIBUTION_BYTES} bytes as lowercase hex")
    return bytes.fromhex(value)


# --- key-set generation ----------------------------------------------------------------


def birth_message(
    *,
    entity: str,
    chain: str,
    network: str,
    address: str,
    segregation: str,
    ceremony_id: str,
    transcript_hash: str,
) -> str:
    """The text each new address signs at birth (documented in docs/ceremonies.md).

    It names the entity, the address, its segregation class and the transcript's
    pre-execution hash, which commits to every signed action before the keys existed,
    so a proof cannot be made before the ceremony or carried to another one.
    """
    return (
        "Tandem key ceremony: proof of control at key generation\n"
        f"Entity: {entity}\n"
        f"Address: {address}\n"
        f"Chain: {chain} {network}\n"
        f"Segregation: {segregation}\n"
        f"Ceremony: {ceremony_id}\n"
        f"Transcript: {pre_hash_label(transcript_hash)}"
    )


def pre_hash_label(value: str) -> str:
    return f"sha256:{value}"


@dataclass(frozen=True)
class GeneratedKeyset:
    """What a keygen execution produced; only public data besides the sealed record."""

    sealed: split.SealedKeyset
    keys: list[dict[str, Any]]  # {key_id, position, curve, public_key}
    addresses: list[dict[str, Any]]  # {key_id, chain, network, address, public_key, segregation, birth_proof}


def generate_keyset(  # noqa: PLR0913 - keyword-only inputs of one key generation
    *,
    definition: CeremonyDefinition,
    ceremony_id: str,
    keyset_id: str,
    entity: str,
    pre_execution_hash: str,
    os_entropy: bytearray,
    contributions: Mapping[str, bytes],
    manager_publics: Mapping[str, bytes],
    custodian_publics: Mapping[str, bytes],
    after_keys: Callable[[], None] = lambda: None,
) -> GeneratedKeyset:
    """Derive the keys, make every address and its birth proof, seal the key set, and
    wipe the plaintext keys (and ``os_entropy``) before returning."""
    if (
        definition.kind != "keygen"
        or definition.curve is None
        or definition.count is None
        or definition.segregation is None
    ):
        raise InputError("only a keygen definition makes keys")
    curve = definition.curve
    privates: list[bytearray] = []
    try:
        privates = keygen.derive_private_keys(
            curve=curve,
            count=definition.count,
            os_entropy=os_entropy,
            contributions=contributions,
            ceremony_id=ceremony_id,
        )
        split.wipe(os_entropy)
        after_keys()
        entries: list[tuple[str, bytes, bytearray]] = []
        keys: list[dict[str, Any]] = []
        addresses: list[dict[str, Any]] = []
        for position, private in enumerate(privates):
            key_id = f"{keyset_id}-k{position}"
            public = keygen.public_key_for(curve, private)
            entries.append((key_id, public, private))
            keys.append({"key_id": key_id, "position": position, "curve": curve, "public_key": public.hex()})
            for target in definition.chains:
                chain = get_chain(target.chain)
                address = chain.address(public, target.network)
                message = birth_message(
                    entity=entity,
                    chain=target.chain,
                    network=target.network,
                    address=address,
                    segregation=definition.segregation,
                    ceremony_id=ceremony_id,
                    transcript_hash=pre_execution_hash,
                )
                proof = chain.sign_message(bytes(private), address, message, target.network)
                addresses.append(
                    {
                        "key_id": key_id,
                        "chain": target.chain,
                        "network": target.network,
                        "address": address,
                        "public_key": public.hex(),
                        "segregation": definition.segregation,
                        "birth_proof": proof_to_json(proof, message),
                    }
                )
        sealed = split.seal_keyset(
            keyset_id=keyset_id,
            private_keys=entries,
            manager_x25519_publics=manager_publics,
            custodian_x25519_publics=custodian_publics,
        )
        return GeneratedKeyset(sealed=sealed, keys=keys, addresses=addresses)
    finally:
        split.wipe(os_entropy)
        for private in privates:
            split.wipe(private)


def proof_to_json(proof: MessageProof, message: str) -> dict[str, Any]:
    out: dict[str, Any] = {"message": message, "format": proof.format, "signature": proof.signature}
    if proof.payload_hex is not None:
        out["payload_hex"] = proof.payload_hex
    return out


def proof_from_json(doc: Any) -> tuple[MessageProof, str]:
    d = check_fields(
        doc,
        required=("message", "format", "signature"),
        optional=("payload_hex",),
        where="birth_proof",
    )
    for key in ("message", "format", "signature"):
        if not isinstance(d[key], str):
            raise InputError(f"birth_proof.{key} must be a string")
    payload = d.get("payload_hex")
    if payload is not None and not isinstance(payload, str):
        raise InputError("birth_proof.payload_hex must be a string")
    return MessageProof(format=d["format"], signature=d["signature"], payload_hex=payload), d["message"]


def verify_birth_proofs(
    addresses: Sequence[Any],
    *,
    problems: list[str],
    expected_message: Callable[[dict[str, Any]], str] | None = None,
) -> int:
    """Check each address against its public key and its birth proof in the chain's own
    format; append a problem per failure and return how many verified."""
    good = 0
    for i, entry in enumerate(addresses):
        where = f"addresses[{i}]"
        try:
            a = check_fields(
                entry,
                required=(
                    "key_id",
                    "chain",
                    "network",
                    "address",
                    "public_key",
                    "segregation",
                    "birth_proof",
                ),
                where=where,
            )
            chain = get_chain(a["chain"])
            public = bytes.fromhex(a["public_key"]) if isinstance(a["public_key"], str) else b""
            derived = chain.address(public, a["network"])
            if derived != a["address"]:
                problems.append(
                    f"{where}: address {a['address']} is not the {a['chain']} address of "
                    f"its public key (expected {derived})"
                )
                continue
            proof, message = proof_from_json(a["birth_proof"])
            if expected_message is not None and message != expected_message(a):
                problems.append(
                    f"{where}: birth proof message does not name this ceremony, address and segregation class"
                )
                continue
            chain.verify_message(a["address"], message, proof, a["network"], public_key=public)
            good += 1
        except (Error, ValueError) as exc:
            problems.append(f"{where}: {_why(exc)}")
    return good


# --- transcript ------------------------------------------------------------------------


def build_pre_execution(
    *,
    deployment: str,
    entity: str,
    ceremony: Mapping[str, Any],
    definition: CeremonyDefinition,
    participants: Sequence[Mapping[str, Any]],
    state: CeremonyState,
) -> dict[str, Any]:
    """Everything fixed before any key exists; its hash is what birth proofs cite."""
    return {
        "format": TRANSCRIPT_FORMAT,
        "deployment": deployment,
        "entity": entity,
        "ceremony": dict(ceremony),
        "definition": definition.to_dict(),
        "definition_hash": definition.definition_hash(),
        "participants": [dict(p) for p in participants],
        "actions": list(state.actions),
        "commitments": dict(state.commitments),
        "reveals": dict(state.reveals),
    }


_PRE_FIELDS = (
    "format",
    "deployment",
    "entity",
    "ceremony",
    "definition",
    "definition_hash",
    "participants",
    "actions",
    "commitments",
    "reveals",
)
_POST_FIELDS = ("pre_execution_hash", "executed_at", "keyset", "keys", "addresses")
_CEREMONY_FIELDS = ("id", "kind", "proposer", "created_at", "expires_at", "target_keyset")
_PARTICIPANT_FIELDS = ("id", "name", "role", "sign_public")


def pre_execution_hash(doc: Mapping[str, Any]) -> str:
    return digest_hex("ceremony-pre-execution", {k: doc[k] for k in _PRE_FIELDS})


def finish_transcript(
    pre: Mapping[str, Any],
    *,
    executed_at: int,
    keyset: Mapping[str, Any],
    keys: Sequence[Mapping[str, Any]],
    addresses: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    doc = dict(pre)
    doc.update(
        {
            "pre_execution_hash": pre_execution_hash(pre),
            "executed_at": executed_at,
            "keyset": dict(keyset),
            "keys": [dict(k) for k in keys],
            "addresses": [dict(a) for a in addresses],
            "countersignatures": [],
        }
    )
    return doc


def transcript_hash(doc: Mapping[str, Any]) -> str:
    """The hash participants countersign: the whole transcript but the countersignatures."""
    return digest_hex("ceremony-transcript", {k: v for k, v in doc.items() if k != "countersignatures"})


@dataclass(frozen=True)
class TranscriptReport:
    """What :func:`verify_transcript` found. ``problems`` empty means every check passed;
    ``missing_countersignatures`` lists participants who have not countersigned yet."""

    ceremony: str | None
    transcript_hash: str | None
    problems: tuple[str, ...]
    checked: tuple[str, ...]
    countersigned_by: tuple[str, ...] = ()
    missing_countersignatures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def complete(self) -> bool:
        return self.ok and not self.missing_countersignatures

    def require(self, *, complete: bool = True) -> None:
        problems = list(self.problems)
        if complete and self.missing_countersignatures:
            problems.append(
                f"countersignatures: {len(self.countersigned_by)}/"
                f"{len(self.countersigned_by) + len(self.missing_countersignatures)} "
                f"(missing {', '.join(self.missing_countersignatures)})"
            )
        if problems:
            raise VerificationError(
                f"transcript of {self.ceremony or 'unknown ceremony'} does not verify: "
                + "; ".join(problems),
                details={"problems": problems},
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ceremony": self.ceremony,
            "transcript_hash": self.transcript_hash,
            "ok": self.ok,
            "complete": self.complete,
            "problems": list(self.problems),
            "checked": list(self.checked),
            "countersigned_by": list(self.countersigned_by),
            "missing_countersignatures": list(self.missing_countersignatures),
        }


class _StopError(Exception):
    """A structural problem after which further checks would only add noise."""


def verify_transcript(doc: Any) -> TranscriptReport:
    """Verify a transcript offline with the public data it carries; never raises for a
    bad transcript (see :meth:`TranscriptReport.require`)."""
    v = _Verifier()
    with contextlib.suppress(_StopError):
        v.run(doc)
    return TranscriptReport(
        ceremony=v.ceremony_id,
        transcript_hash=v.thash,
        problems=tuple(v.problems),
        checked=tuple(v.checked),
        countersigned_by=tuple(v.signed_by),
        missing_countersignatures=tuple(v.missing),
    )


class _Verifier:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.checked: list[str] = []
        self.ceremony_id: str | None = None
        self.thash: str | None = None
        self.signed_by: list[str] = []
        self.missing: list[str] = []
        self.top: dict[str, Any] = {}
        self.header: dict[str, Any] = {}
        self.roles: dict[str, Role] = {}
        self.keys: dict[str, bytes] = {}

    def stop(self, problem: str) -> _StopError:
        self.problems.append(problem)
        return _StopError()

    def fields(self, value: Any, names: Iterable[str], where: str) -> dict[str, Any]:
        try:
            return check_fields(value, required=tuple(names), where=where)
        except Error as exc:
            raise self.stop(_why(exc)) from None

    def run(self, doc: Any) -> None:
        self.top = top = self.fields(doc, (*_PRE_FIELDS, *_POST_FIELDS, "countersignatures"), "transcript")
        if top["format"] != TRANSCRIPT_FORMAT:
            raise self.stop(f"format: expected {TRANSCRIPT_FORMAT!r}")
        self.header = self.fields(top["ceremony"], _CEREMONY_FIELDS, "ceremony")
        self.ceremony_id = self.header["id"] if isinstance(self.header["id"], str) else None
        self.thash = transcript_hash(top)
        definition = self.definition()
        self.participants(top["participants"])
        self.checked.append(f"definition {definition.name} ({definition.kind}) matches its hash")
        actions = self.actions(top["actions"], "actions")
        self.checked.append(f"{len(actions)} signed actions verified against the participants' keys")
        self.flow(definition, actions)
        if top["pre_execution_hash"] != pre_execution_hash(top):
            self.problems.append("pre_execution_hash does not match the transcript before execution")
        else:
            self.checked.append("pre-execution hash recomputed")
        if definition.kind == "keygen":
            self.key_material(definition)
        self.countersignatures()

    def definition(self) -> CeremonyDefinition:
        try:
            definition = CeremonyDefinition.from_dict(self.top["definition"], source="transcript.definition")
        except Error as exc:
            raise self.stop(_why(exc)) from None
        if definition.definition_hash() != self.top["definition_hash"]:
            self.problems.append("definition_hash does not match the definition")
        if self.header["kind"] != definition.kind:
            self.problems.append(f"ceremony.kind {self.header['kind']!r} differs from the definition's kind")
        return definition

    def participants(self, value: Any) -> None:
        if not isinstance(value, list) or not value:
            raise self.stop("participants must be a non-empty array")
        for i, p in enumerate(value):
            entry = self.fields(p, _PARTICIPANT_FIELDS, f"participants[{i}]")
            try:
                role = Role(entry["role"])
                public = bytes.fromhex(entry["sign_public"])
            except (ValueError, TypeError):
                raise self.stop(f"participants[{i}]: role or sign_public malformed") from None
            if entry["id"] in self.roles:
                self.problems.append(f"participants[{i}]: {entry['id']} listed twice")
            self.roles[entry["id"]] = role
            self.keys[entry["id"]] = public

    def actions(self, value: Any, where: str) -> list[SignedAction]:
        if not isinstance(value, list):
            raise self.stop(f"{where} must be an array")
        out: list[SignedAction] = []
        expires_at = self.header.get("expires_at")
        for i, envelope in enumerate(value):
            at = f"{where}[{i}]"
            try:
                action = parse_envelope(envelope)
            except Error as exc:
                self.problems.append(f"{at}: {_why(exc)}")
                continue
            public = self.keys.get(action.actor)
            if public is None:
                self.problems.append(f"{at}: signed by {action.actor}, not a listed participant")
                continue
            try:
                action.verify(public)
            except Error:
                self.problems.append(f"{at}: the {action.type} signature of {action.actor} does not verify")
                continue
            if action.deployment != self.top["deployment"]:
                self.problems.append(f"{at}: signed for another deployment")
                continue
            if action.body.get("ceremony") != self.ceremony_id:
                self.problems.append(f"{at}: signed for another ceremony")
                continue
            if isinstance(expires_at, int) and action.issued_at > expires_at and action.type != COUNTERSIGN:
                self.problems.append(f"{at}: issued after the ceremony expired")
            out.append(action)
        return out

    def flow(self, definition: CeremonyDefinition, actions: Sequence[SignedAction]) -> None:  # noqa: C901, PLR0912 - one pass over the transcript's actions, in order
        header = self.header
        proposer = header["proposer"]
        if not actions or actions[0].type != PROPOSE or sum(a.type == PROPOSE for a in actions) != 1:
            raise self.stop("actions: exactly one ceremony.propose, first, is required")
        propose = actions[0]
        if propose.actor != proposer or self.roles.get(proposer) is not Role.MANAGER:
            self.problems.append("the ceremony must be proposed by its proposer, a manager")
        try:
            signed_definition = parse_definition(str(propose.body.get("definition")), source="propose")
            if signed_definition.to_dict() != definition.to_dict():
                self.problems.append("the proposer signed a different definition")
        except Error as exc:
            self.problems.append(f"the proposer's definition does not parse: {_why(exc)}")
        if propose.body.get("target_keyset") != header["target_keyset"]:
            self.problems.append("the proposer signed a different target key set")

        keygen_kind = definition.kind == "keygen"
        proposer_commitment = propose.body.get("commitment") if keygen_kind else None
        digest = ceremony_digest(
            ceremony_id=header["id"],
            kind=definition.kind,
            definition_hash=definition.definition_hash(),
            proposer=proposer,
            target_keyset=header["target_keyset"],
            expires_at=header["expires_at"],
            commitment=proposer_commitment,
        )
        signed_commitments: dict[str, Any] = {proposer: proposer_commitment} if keygen_kind else {}
        approvals: list[tuple[str, Role]] = []
        seen = {propose.actor}
        for a in actions[1:]:
            if a.type == APPROVE:
                if a.body.get("digest") != digest:
                    self.problems.append(f"the approval of {a.actor} is over different ceremony content")
                if a.actor in seen:
                    self.problems.append(f"{a.actor} approved twice or approved its own proposal")
                seen.add(a.actor)
                if keygen_kind:
                    signed_commitments[a.actor] = a.body.get("commitment")
                approvals.append((a.actor, self.roles[a.actor]))
            elif a.type != REVEAL:
                self.problems.append(f"actions: unexpected {a.type}")
        try:
            quorum(
                definition.approvals.by_role(), approvals, requester=proposer, eligible=self.roles
            ).require()
            self.checked.append(f"quorum met by {len(approvals)} distinct approver(s)")
        except Error as exc:
            self.problems.append(f"quorum: {_why(exc)}")
        if set(self.roles) != seen:
            self.problems.append("participants are not exactly the proposer and the approvers")
        if keygen_kind:
            self.reveals(actions, signed_commitments)
        else:
            if self.top["commitments"] or self.top["reveals"]:
                self.problems.append("a reshare has no commitments or reveals")
            keyset = self.top["keyset"]
            if not isinstance(keyset, dict) or keyset.get("id") != header["target_keyset"]:
                self.problems.append("keyset: a reshare transcript names its target key set")

    def reveals(self, actions: Sequence[SignedAction], signed: Mapping[str, Any]) -> None:
        if self.top["commitments"] != signed:
            self.problems.append("commitments differ from those in the signed actions")
        revealed: dict[str, str] = {}
        for a in actions:
            if a.type != REVEAL:
                continue
            contribution = a.body.get("contribution")
            if a.actor in revealed:
                self.problems.append(f"{a.actor} revealed twice")
                continue
            try:
                keygen.check_reveal(
                    ceremony_id=self.header["id"],
                    member_id=a.actor,
                    contribution=_contribution(contribution),
                    commitment=str(signed.get(a.actor)),
                )
            except (CommitmentMismatchError, InputError) as exc:
                self.problems.append(f"reveal of {a.actor}: {_why(exc)}")
                continue
            revealed[a.actor] = str(contribution)
        if set(revealed) != set(signed) or revealed != self.top["reveals"]:
            self.problems.append("reveals are not exactly one matching reveal per commitment")
        else:
            self.checked.append(f"{len(revealed)} reveals match their commitments")

    def key_material(self, definition: CeremonyDefinition) -> None:
        keys = self.top["keys"]
        if not isinstance(keys, list) or len(keys) != definition.count:
            self.problems.append(f"keys: the definition makes {definition.count} key(s)")
            return
        size = 33 if definition.curve == "secp256k1" else 32
        publics: dict[str, str] = {}
        for i, k in enumerate(keys):
            entry = self.fields(k, ("key_id", "position", "curve", "public_key"), f"keys[{i}]")
            pub = entry["public_key"]
            if (
                entry["curve"] != definition.curve
                or not isinstance(pub, str)
                or not re.fullmatch(f"[0-9a-f]{{{2 * size}}}", pub)
            ):
                self.problems.append(f"keys[{i}]: not a {definition.curve} public key")
                continue
            publics[entry["key_id"]] = pub
        addresses = self.top["addresses"]
        if not isinstance(addresses, list):
            self.problems.append("addresses must be an array")
            return
        wanted = {(key_id, t.chain, t.network) for key_id in publics for t in definition.chains}
        seen = set()
        for i, a in enumerate(addresses):
            if not isinstance(a, dict):
                self.problems.append(f"addresses[{i}] must be an object")
                continue
            triple = (a.get("key_id"), a.get("chain"), a.get("network"))
            if triple not in wanted or triple in seen:
                self.problems.append(f"addresses[{i}]: not one per key and chain of the definition")
            seen.add(triple)
            if publics.get(str(a.get("key_id"))) != a.get("public_key"):
                self.problems.append(f"addresses[{i}]: public key differs from its key's")
            if a.get("segregation") != definition.segregation:
                self.problems.append(f"addresses[{i}]: segregation differs from the definition's")
        if seen != wanted:
            self.problems.append("addresses: some key/chain pair of the definition has no address")

        def expected(a: dict[str, Any]) -> str:
            return birth_message(
                entity=str(self.top["entity"]),
                chain=a["chain"],
                network=a["network"],
                address=a["address"],
                segregation=str(a["segregation"]),
                ceremony_id=str(self.header["id"]),
                transcript_hash=str(self.top["pre_execution_hash"]),
            )

        good = verify_birth_proofs(addresses, problems=self.problems, expected_message=expected)
        self.checked.append(f"{good} addresses derived from their public keys, birth proofs valid")

    def countersignatures(self) -> None:
        for a in self.actions(self.top["countersignatures"], "countersignatures"):
            if a.type != COUNTERSIGN:
                self.problems.append(f"countersignatures: {a.type} is not a countersignature")
            elif a.body.get("transcript_hash") != self.thash:
                self.problems.append(f"countersignature of {a.actor} is over a different transcript hash")
            elif a.actor in self.signed_by:
                self.problems.append(f"{a.actor} countersigned twice")
            else:
                self.signed_by.append(a.actor)
        self.missing = sorted(set(self.keys) - set(self.signed_by))
        self.checked.append(f"{len(self.signed_by)} countersignature(s) over transcript hash {self.thash}")


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, Error) else f"{type(exc).__name__}"


def summary(doc: Mapping[str, Any]) -> dict[str, JSON]:
    """A short public summary of a transcript, for listings and audit entries."""
    return {
        "ceremony": doc.get("ceremony", {}).get("id"),
        "transcript_hash": transcript_hash(doc),
        "keyset": doc.get("keyset", {}).get("id"),
        "addresses": len(doc.get("addresses", [])),
    }
