"""The offline signer: verify an exported bundle from it alone, then sign."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from tandem.core import approvals as approvals_engine
from tandem.core import audit as audit_core
from tandem.core import merkle, split
from tandem.core.actions import SignedAction, parse_envelope
from tandem.core.canonical import (
    canonical,
    check_fields,
    domain_bytes,
)
from tandem.core.identity import IdentityCard, unb64, verify_service_signature
from tandem.core.membership import REPLAYED_KINDS, LogState, check_genesis, genesis_hash
from tandem.core.policy import (
    AddressBookEntry,
    PastWithdrawal,
    Policy,
    PolicyDecision,
    evaluate,
    parse_policy,
    velocity_window_seconds,
)
from tandem.core.roles import Role, parse_role
from tandem.core.withdrawal.approval import parse_approval
from tandem.core.withdrawal.intent import Intent, intent_hash, require_normal_intent
from tandem.core.withdrawal.tx import (
    check_signed_transaction,
    check_transaction,
    fee_of,
    sign_transaction,
    tx_digest,
)
from tandem.errors import (
    AuditVerificationError,
    BadSignatureError,
    ExpiredError,
    TimeLockedError,
    VerificationError,
)

BUNDLE_FORMAT = "tandem-offline-bundle/2"
BUNDLE_INDEX_DOMAIN = "offline-bundle-index"
RESULT_FORMAT = "tandem-offline-result/1"


# --- offline bundles -------------------------------------------------------------------

# Kinds that end a withdrawal for velocity purposes (the server keeps the same rule).
_CLOSED_KINDS = {"withdrawal.cancelled", "withdrawal.rejected", "withdrawal.vetoed", "withdrawal.tampered"}


def offline_operation_id(withdrawal_id: str) -> str:
    """The operation a share resealed to the offline signer is bound to."""
    return f"offline-{withdrawal_id}"


@dataclass(frozen=True)
class VerifiedBundle:
    withdrawal: Mapping[str, Any]
    intent: Intent
    view: Mapping[str, Any]
    decision: PolicyDecision
    approvers: frozenset[str]
    members: Mapping[str, Role] = field(default_factory=dict)


def counted_amount(asset: str, amount: int, fee: int, fee_asset: str | None) -> int:
    """What a past withdrawal counts against limits: its amount, plus its worst-case fee
    when that is paid in the same asset (the server and the offline signer agree)."""
    if fee_asset is not None and fee_asset.lower() == asset.lower():
        return amount + fee
    return amount


def _history_from_log(entries: Sequence[Mapping[str, Any]], *, before: int, now: int) -> list[PastWithdrawal]:
    """The velocity history the server used, rebuilt from the log entries (in index
    order) below log index ``before``: a released request counts from its release, an
    open one from its creation until it expires."""
    closed: set[str] = set()
    released: dict[str, int] = {}
    created: list[Mapping[str, Any]] = []
    for e in entries:
        if e["index"] >= before:
            break
        if e["outcome"] != "ok":
            continue
        kind, data = e["kind"], e["data"]
        if kind == "withdrawal.created":
            created.append(e)
        elif kind in _CLOSED_KINDS:
            closed.add(data["withdrawal"])
        elif kind == "withdrawal.released":
            released[data["withdrawal"]] = e["time"]
    out = []
    for e in created:
        d = e["data"]
        wid = d["withdrawal"]
        if wid in closed:
            continue
        amount = counted_amount(d["asset"], int(d["amount"]), int(d.get("fee", "0")), d.get("fee_asset"))
        if wid in released or d["expires_at"] > now:
            at = released.get(wid, e["time"])
            out.append(PastWithdrawal(wallet=d["wallet"], asset=d["asset"], amount=amount, time=at))
    return out


# What the offline signer needs besides the replayed kinds: a request's life, for
# velocity (see ``bundle_index_body``).
HISTORY_KINDS: tuple[str, ...] = ("withdrawal.created", "withdrawal.released", *sorted(_CLOSED_KINDS))
_INDEX_FIELDS = (
    "deployment",
    "tree_size",
    "root",
    "withdrawal",
    "replayed_kinds",
    "history",
    "tail_from",
    "indices",
)


def bundle_index_body(
    *,
    deployment: str,
    tree_size: int,
    root: str,
    withdrawal: str,
    wallet: str,
    since: int,
    created_index: int,
    indices: Sequence[int],
) -> dict[str, Any]:
    """What the service states, signed, about the entries it put in a bundle for the
    tree (``tree_size``, ``root``); see ADR 0011. The entries at ``indices`` are:

    - every entry of a kind in ``replayed_kinds`` (membership, policy, address book,
      key sets, the genesis);
    - every entry from ``tail_from`` (this request's creation) to the end of the tree;
    - every entry of a kind in :data:`HISTORY_KINDS`, below ``history.before``, of each
      request of ``history.wallet`` created or released at or after ``history.since``.

    The signer checks the last two against its own rule and relies on the service's
    signature for completeness, as it relies on the checkpoint for the tree itself."""
    return {
        "deployment": deployment,
        "tree_size": tree_size,
        "root": root,
        "withdrawal": withdrawal,
        "replayed_kinds": list(REPLAYED_KINDS),
        "history": {"wallet": wallet, "since": since, "before": created_index},
        "tail_from": created_index,
        "indices": list(indices),
    }


def sign_bundle_index(sign_seed: bytes, body: Mapping[str, Any]) -> dict[str, Any]:
    """The index document: ``body`` signed with the service key under its own domain
    (never a checkpoint's or a marker's)."""
    signature = (
        nacl.signing.SigningKey(bytes(sign_seed))
        .sign(domain_bytes(BUNDLE_INDEX_DOMAIN, dict(body)))
        .signature
    )
    return {"index": dict(body), "signature": base64.b64encode(bytes(signature)).decode("ascii")}


def _uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def verify_bundle_index(doc: Any, service_public: bytes) -> dict[str, Any]:
    """The body of an index document once its signature verifies under the service key."""
    check_fields(doc, required=("index", "signature"), where="bundle.audit.index")
    body = check_fields(doc["index"], required=_INDEX_FIELDS, where="bundle.audit.index.index")
    verify_service_signature(
        service_public,
        BUNDLE_INDEX_DOMAIN,
        body,
        doc["signature"],
        what="the bundle index",
        error=BadSignatureError,
    )
    history = check_fields(
        body["history"], required=("wallet", "since", "before"), where="bundle index history"
    )
    if not (_uint(body["tree_size"]) and _uint(body["tail_from"])):
        raise VerificationError("the bundle index sizes must be non-negative integers")
    if not (_uint(history["since"]) and _uint(history["before"])) or not isinstance(history["wallet"], str):
        raise VerificationError("the bundle index history is malformed")
    indices = body["indices"]
    if not isinstance(indices, list) or not all(_uint(i) for i in indices):
        raise VerificationError("the bundle index lists indices that are not non-negative integers")
    return body


@dataclass(frozen=True)
class SparseLog:
    """The entries a bundle carries, each shown to be in the signed tree."""

    index: Mapping[str, Any]
    entries: list[dict[str, Any]]
    tree_size: int
    by_index: Mapping[int, dict[str, Any]]


def verify_sparse_log(audit: Any, *, deployment: str, service_public: bytes) -> SparseLog:
    """The bundle's log selection, checked against the pinned service key alone:

    the checkpoint's signature; the index's signature and that it names the same tree;
    that it selects every replayed kind this signer knows; that the lines are exactly
    the listed entries and the tail is contiguous to the end of the tree; each line's
    own hash; and each entry's place in the tree, by the next entry's ``prev`` when the
    next entry is included and by an inclusion proof against the signed root otherwise
    (the last entry is also the checkpoint's ``last_hash``). Raises
    :class:`AuditVerificationError` naming the entry at fault."""
    audit = check_fields(audit, required=("checkpoint", "index", "lines", "proofs"), where="bundle.audit")
    checkpoint, index = _signed_tree(audit, deployment=deployment, service_public=service_public)
    tree_size: int = checkpoint["tree_size"]
    indices = _selected_indices(index, tree_size)
    lines, proofs = _lines_and_proofs(audit, indices)
    entries = _entries_in_tree(
        lines,
        proofs,
        indices,
        deployment=deployment,
        tree_size=tree_size,
        root=bytes.fromhex(checkpoint["root"]),
    )
    if entries[-1]["hash"] != checkpoint["last_hash"]:
        raise AuditVerificationError(
            f"entry {tree_size - 1}: hash differs from the checkpoint's last_hash", index=tree_size - 1
        )
    if entries[0]["prev"] != audit_core.GENESIS_PREV:
        raise AuditVerificationError("entry 0: prev is not the genesis value", index=0)
    return SparseLog(
        index=index, entries=entries, tree_size=tree_size, by_index={e["index"]: e for e in entries}
    )


def _signed_tree(
    audit: Mapping[str, Any], *, deployment: str, service_public: bytes
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint and the index, each signed by the service key, for this deployment
    and the same tree, the index selecting the kinds this signer replays."""
    try:
        checkpoint = audit_core.verify_checkpoint(audit["checkpoint"], service_public)
        index = verify_bundle_index(audit["index"], service_public)
    except BadSignatureError as exc:
        raise AuditVerificationError(exc.message) from None
    if checkpoint["deployment"] != deployment:
        raise AuditVerificationError("the checkpoint is for another deployment")
    if (index["deployment"], index["tree_size"], index["root"]) != (
        deployment,
        checkpoint["tree_size"],
        checkpoint["root"],
    ):
        raise AuditVerificationError("the bundle's index is for another tree than its checkpoint")
    if index["replayed_kinds"] != list(REPLAYED_KINDS):
        raise AuditVerificationError(
            "the bundle's index selects other entry kinds than this signer replays; "
            "signer and service versions differ"
        )
    return checkpoint, index


def _selected_indices(index: Mapping[str, Any], tree_size: int) -> list[int]:
    """The indices the bundle lists: from the genesis, increasing, to the end of the
    tree, with every entry from the request's creation on."""
    indices: list[int] = index["indices"]
    if not indices or indices[0] != 0 or any(b <= a for a, b in itertools.pairwise(indices)):
        raise AuditVerificationError("the bundle's indices must start at the genesis and increase")
    if indices[-1] != tree_size - 1:
        raise AuditVerificationError("the bundle's entries must reach the end of the signed tree")
    tail = tree_size - index["tail_from"]
    if not 1 <= tail <= len(indices) or indices[-tail] != index["tail_from"]:
        # Increasing, ending at tree_size - 1: the last ``tail`` are then exactly the tail.
        raise AuditVerificationError("the bundle's entries after the request's creation are not all there")
    return indices


def _lines_and_proofs(audit: Mapping[str, Any], indices: Sequence[int]) -> tuple[list[str], list[Any]]:
    """One line, and one proof or null, per listed index."""
    lines, proofs = audit["lines"], audit["proofs"]
    if (
        not isinstance(lines, list)
        or not all(isinstance(x, str) for x in lines)
        or len(lines) != len(indices)
    ):
        raise AuditVerificationError("bundle.audit.lines must be the lines of the listed entries")
    if not isinstance(proofs, list) or len(proofs) != len(indices):
        raise AuditVerificationError("bundle.audit.proofs must give one proof (or null) per line")
    return lines, proofs


def _entries_in_tree(
    lines: Sequence[str],
    proofs: Sequence[Any],
    indices: Sequence[int],
    *,
    deployment: str,
    tree_size: int,
    root: bytes,
) -> list[dict[str, Any]]:
    """Each line's entry, from the last back: its own hash, and its place in the tree by
    the next entry's ``prev`` where that one is listed, by an inclusion proof otherwise."""
    entries: list[dict[str, Any]] = [{}] * len(indices)
    for pos in range(len(indices) - 1, -1, -1):
        i = indices[pos]
        entry = audit_core.check_entry_line(lines[pos], index=i, deployment=deployment)
        proof = proofs[pos]
        if pos + 1 < len(indices) and indices[pos + 1] == i + 1:
            # The next entry is in the tree, and names this one's hash as its prev.
            if proof is not None:
                raise AuditVerificationError(f"entry {i}: a proof is given where the chain suffices", index=i)
            if entries[pos + 1]["prev"] != entry["hash"]:
                raise AuditVerificationError(
                    f"entry {i + 1}: prev does not match the hash of entry {i}", index=i
                )
        else:
            _check_inclusion(entry, proof, i, tree_size=tree_size, root=root)
        entries[pos] = entry
    return entries


def _check_inclusion(entry: Mapping[str, Any], proof: Any, i: int, *, tree_size: int, root: bytes) -> None:
    """Entry ``i`` in the signed tree of ``tree_size`` entries, by its inclusion proof."""
    if not isinstance(proof, list) or not all(isinstance(p, str) for p in proof):
        raise AuditVerificationError(f"entry {i}: no inclusion proof", index=i)
    try:
        nodes = [bytes.fromhex(p) for p in proof]
        merkle.verify_inclusion_for_hash(
            merkle.leaf_hash(bytes.fromhex(entry["hash"])), i, tree_size, nodes, root
        )
    except (ValueError, VerificationError) as exc:
        raise AuditVerificationError(f"entry {i}: not in the signed tree: {exc}", index=i) from None


def _policy_from_log(state: LogState, *, at: int, before: int) -> Policy:
    """The policy in force at ``at``, as the justified replay of the log rebuilt it: only
    versions that follow from a manager's signed proposal and a custodian's signed
    approval (or from the genesis every initial member signed) count."""
    try:
        return state.policy_at(at, before=before)
    except VerificationError:
        raise VerificationError("no policy was in force when the withdrawal was requested") from None


def _book_from_log(state: LogState, *, at: int, before: int) -> list[AddressBookEntry]:
    """The address book in force at ``at``, from the justified replay (never from the
    server's ``addressbook.change_approved`` data alone)."""
    return state.book_at(at, before=before)


def _escalated_required(
    required: Mapping[Role, int], entries: Iterable[Mapping[str, Any]], withdrawal_id: str
) -> dict[Role, int]:
    """The quorum raised by every escalation the server recorded at a release attempt
    (``withdrawal.escalated``). The entry is the server's, not a member's: it can only
    make the offline signer ask for more, never for less."""
    out = dict(required)
    for e in entries:
        if e["kind"] != "withdrawal.escalated" or e["data"].get("withdrawal") != withdrawal_id:
            continue
        raised = e["data"].get("required")
        if not isinstance(raised, dict):
            raise VerificationError("a withdrawal.escalated entry names no required approvals")
        for name, n in raised.items():
            if not isinstance(name, str) or isinstance(n, bool) or not isinstance(n, int):
                raise VerificationError("a withdrawal.escalated entry has a malformed requirement")
            role = parse_role(name)
            out[role] = max(out.get(role, 0), n)
    return out


def _logged_action(env: Any, logged: Collection[bytes], *, type_: str, deployment: str) -> SignedAction:
    """An action from the bundle that the log holds verbatim. The membership replay
    checked its signature against the key its signer had at that point of the log, so
    a later rekey does not invalidate it, and a forged action is not in the log."""
    action = parse_envelope(env)
    if action.type != type_:
        raise VerificationError(f"expected a {type_} action, found {action.type}")
    if action.deployment != deployment:
        raise VerificationError("an action in the bundle was signed for another deployment")
    if canonical(env) not in logged:
        raise VerificationError(f"the {type_} action by {action.actor} is not in the log")
    return action


_BUNDLE_FIELDS = (
    "format",
    "genesis",
    "genesis_signatures",
    "audit",
    "withdrawal",
    "actions",
    "keyset",
    "signer",
    "shares",
    "policy",
)
_WITHDRAWAL_FIELDS = (
    "id",
    "wallet",
    "key_id",
    "chain",
    "network",
    "requester",
    "intent",
    "intent_hash",
    "unsigned_tx",
    "prevouts",
    "public_key",
    "tx_digest",
    "decision",
    "policy_version",
    "created_at",
    "expires_at",
    "time_lock_until",
)


def verify_bundle(bundle: Any, *, now: int, genesis_hash_pin: str | None = None) -> VerifiedBundle:
    """Everything the offline signer checks before it will sign, from the bundle alone.

    1. genesis: its members' signatures; its hash against ``genesis_hash_pin`` if given;
    2. the audit log selection (ADR 0011): checkpoint and index signed by the genesis
       service key, each entry in the signed tree (chain link or inclusion proof), every
       replayed kind present, and every action in it re-verified against the membership
       in force at that point;
    3. the create action and every approval: signatures, types, the request, and that the
       log holds each of them (the server accepted them, TOTP included);
    4. the policy (rebuilt from the log) and its decision, re-run on the intent;
    5. quorum of current members, approvals unexpired, not time-locked, not expired;
    6. the transaction: decoded and compared with the intent, rebuilt from it byte for
       byte, and both digests recomputed and equal to what was approved.

    The steps are those of :class:`_BundleVerifier`, in that order.
    """
    return _BundleVerifier(bundle, now=now, genesis_hash_pin=genesis_hash_pin).run()


class _BundleVerifier:
    """The offline signer's checks of one bundle, one named step each. Every step reads
    what the steps before it established; the first refusal ends the verification."""

    # Set by the steps, in order.
    root: str
    deployment: str
    sparse: SparseLog
    replay: LogState
    eligible: dict[str, Role]
    members: Mapping[str, Any]
    logged: set[bytes]
    w: Mapping[str, Any]
    intent: Intent
    ih: str
    td: str
    actions: Mapping[str, Any]
    index: int
    created: Mapping[str, Any]
    policy: Policy
    view: dict[str, Any]
    decision: PolicyDecision
    required: dict[Role, int]

    def __init__(self, bundle: Any, *, now: int, genesis_hash_pin: str | None) -> None:
        self.bundle = bundle
        self.now = now
        self.genesis_hash_pin = genesis_hash_pin

    def run(self) -> VerifiedBundle:
        self.genesis_and_pin()
        self.log_and_membership()
        self.withdrawal_record()
        self.creation_in_the_log()
        self.policy_at_the_time()
        self.transaction()
        self.decision_at_the_time()
        self.still_open()
        self.address_book_now()
        approvers = self.approvals_quorum()
        return VerifiedBundle(
            withdrawal=self.w,
            intent=self.intent,
            view=self.view,
            decision=self.decision,
            approvers=approvers,
            members=self.eligible,
        )

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.sparse.entries

    def genesis_and_pin(self) -> None:
        """The bundle's format, its genesis signed by every initial member, and the
        genesis hash against the pin."""
        check_fields(self.bundle, required=_BUNDLE_FIELDS, where="bundle")
        if self.bundle["format"] != BUNDLE_FORMAT:
            raise VerificationError(f"not a {BUNDLE_FORMAT} bundle")
        genesis = self.bundle["genesis"]
        check_genesis(genesis, self.bundle["genesis_signatures"])
        self.root = root = genesis_hash(genesis)
        if self.genesis_hash_pin is not None and root != self.genesis_hash_pin:
            raise VerificationError(f"genesis hash {root} is not the pinned {self.genesis_hash_pin}")
        self.deployment = genesis["deployment"]

    def log_and_membership(self) -> None:
        """The log selection against the genesis service key, starting at this genesis,
        and the membership replayed from it."""
        genesis = self.bundle["genesis"]
        service_public = bytes.fromhex(genesis["service"]["sign_public"])
        self.sparse = verify_sparse_log(
            self.bundle["audit"], deployment=self.deployment, service_public=service_public
        )
        entries = self.entries
        if entries[0]["kind"] != "deployment.genesis" or entries[0]["data"]["genesis"] != genesis:
            raise VerificationError("the log does not start with this genesis")
        # Every effect on members, policy and address book is recomputed from the member-
        # signed proposals and approvals in the log; the server's word for it counts for
        # nothing (THREATS 26).
        self.replay = LogState(genesis_hash_pin=self.root)
        for e in entries:
            self.replay.observe_entry(e)
        self.members = members = self.replay.members
        self.eligible = {m.id: m.role for m in members.values() if m.active}
        self.logged = {
            canonical(e["envelope"]) for e in entries if e["outcome"] == "ok" and e["envelope"] is not None
        }

    def withdrawal_record(self) -> None:
        """The request: its intent in normal form, and both digests recomputed."""
        self.w = w = self.bundle["withdrawal"]
        check_fields(w, required=_WITHDRAWAL_FIELDS, where="bundle.withdrawal")
        self.intent = intent = require_normal_intent(w["intent"])
        self.ih = intent_hash(w["intent"])
        if self.ih != w["intent_hash"]:
            raise VerificationError("the intent hash does not match the intent")
        self.td = tx_digest(
            chain=intent.chain,
            network=intent.network,
            public_key=w["public_key"],
            unsigned_tx=w["unsigned_tx"],
            prevouts=w["prevouts"],
        )
        if self.td != w["tx_digest"]:
            raise VerificationError("the transaction digest does not match the transaction")
        if (intent.wallet, intent.chain, intent.network) != (w["wallet"], w["chain"], w["network"]):
            raise VerificationError("the withdrawal record disagrees with its intent")

    def creation_in_the_log(self) -> None:
        """The create action, by the requester and logged once for this request; the
        bundle's selection made for this request; the log's digests and time for it."""
        w = self.w
        self.actions = actions = check_fields(
            self.bundle["actions"], required=("create", "approvals"), where="bundle.actions"
        )
        create = _logged_action(
            actions["create"], self.logged, type_="withdrawal.create", deployment=self.deployment
        )
        if create.actor != w["requester"] or dict(create.body).get("intent") != w["intent"]:
            raise VerificationError("the create action is not this request by its requester")
        created_at = [
            e["index"]
            for e in self.entries
            if e["kind"] == "withdrawal.created"
            and e["outcome"] == "ok"
            and e["data"]["withdrawal"] == w["id"]
        ]
        if len(created_at) != 1 or self.sparse.by_index[created_at[0]]["envelope"] != actions["create"]:
            raise VerificationError("the log does not record this create action for this request")
        self.index = index = created_at[0]
        self.created = created = self.sparse.by_index[index]
        # The bundle's selection is this request's (its entries from its creation on) and
        # covers the history its velocity limits look at.
        selection = self.sparse.index
        if selection["withdrawal"] != w["id"] or selection["tail_from"] > index:
            raise VerificationError("the bundle's entries are selected for another request")
        if created["data"]["intent_hash"] != self.ih or created["data"]["tx_digest"] != self.td:
            raise VerificationError("the log recorded other digests for this request")
        if created["time"] != w["created_at"]:
            raise VerificationError("the request's creation time differs from the log")

    def policy_at_the_time(self) -> None:
        """The policy in force when the request was made, from the log, and the bundle's
        copy of it equal to it."""
        self.policy = policy = _policy_from_log(self.replay, at=self.created["time"], before=self.index)
        check_fields(
            self.bundle["policy"],
            required=("version", "change_delay_seconds", "rules"),
            optional=("wallet_limits", "membership"),
            where="bundle.policy",
        )
        if parse_policy(self.bundle["policy"]) != policy or policy.version != self.w["policy_version"]:
            raise VerificationError(
                "the bundle's policy is not the policy in force when the request was made"
            )

    def transaction(self) -> None:
        """The wallet's key, and the transaction decoded, compared with the intent and
        rebuilt from it (first, since its worst-case fee is a policy fact)."""
        w = self.w
        keyset = split.SealedKeyset.from_dict(self.bundle["keyset"])
        key = keyset.key(w["key_id"])
        if keyset.keyset_id != w["wallet"] or key.public_key.hex() != w["public_key"]:
            raise VerificationError("the key set in the bundle is not the wallet's")
        self.view = check_transaction(
            self.intent,
            public_key=key.public_key,
            unsigned=bytes.fromhex(w["unsigned_tx"]),
            prevouts=w["prevouts"],
        )

    def decision_at_the_time(self) -> None:
        """The policy's decision re-run as of the request, on the history and the address
        book of that time, and equal to the server's."""
        w, intent, at = self.w, self.intent, self.created["time"]
        history = self.sparse.index["history"]
        if (
            history["wallet"] != intent.wallet
            or history["before"] != self.index
            or history["since"] > max(0, at - velocity_window_seconds(self.policy))
        ):
            raise VerificationError(
                "the bundle's history does not cover the window the policy's limits look at"
            )
        book = _book_from_log(self.replay, at=at, before=self.index)
        self.decision = decision = evaluate(
            self.policy,
            intent.facts(fee_of(intent, self.view)),
            now=at,
            address_book=book,
            history=_history_from_log(self.entries, before=self.index, now=at),
        )
        decision.require()
        mine, theirs = decision.to_json(), dict(w["decision"])
        mine.pop("explanation")
        theirs.pop("explanation", None)
        if mine != theirs:
            raise VerificationError("the server's decision differs from the policy re-run offline")
        if decision.request_expires_at != w["expires_at"] or decision.time_lock_until != w["time_lock_until"]:
            raise VerificationError("the request's expiry or time lock differs from the policy decision")

    def still_open(self) -> None:
        """Not expired, not time-locked, not vetoed; the quorum raised by any escalation."""
        w = self.w
        if self.now >= w["expires_at"]:
            raise ExpiredError(f"the request expired at {w['expires_at']}")
        if w["time_lock_until"] is not None and self.now < w["time_lock_until"]:
            raise TimeLockedError(f"time-locked until {w['time_lock_until']}")
        if any(
            e["kind"] == "withdrawal.vetoed" and e["data"].get("withdrawal") == w["id"] for e in self.entries
        ):
            raise VerificationError("the log records a veto of this request")
        self.required = _escalated_required(self.decision.required, self.entries, w["id"])

    def address_book_now(self) -> None:
        """The destination still allowed as of the end of the log, not only when the
        request was made (THREATS 31)."""
        matched = next((r for r in self.policy.rules if r.name == self.decision.rule_name), None)
        if matched is not None and matched.allowlist_only:
            facts = self.intent.facts()
            book = _book_from_log(self.replay, at=self.now, before=self.sparse.tree_size)
            if not any(e.allows(facts) for e in book):
                raise VerificationError(f"destination {self.intent.destination} has left the address book")

    def approvals_quorum(self) -> frozenset[str]:
        """Approvals signed, recorded, for exactly this content, counted per current member
        by the same engine the server counts with; the members counted."""
        result = approvals_engine.evaluate(
            approvals_engine.Request(
                requester=self.w["requester"],
                kind="withdrawal",
                digest=self.td,
                policy_version=self.policy.version,
                created_at=self.w["created_at"],
            ),
            self.approvals_given(),
            membership=approvals_engine.standing_by_role(self.eligible),
            required=self.required,
            now=self.now,
            ttl_seconds=self.decision.approval_ttl_seconds,
        )
        result.require()
        return result.counted

    def approvals_given(self) -> list[approvals_engine.Given]:
        """Each approval in the bundle: logged, for this content, at the time the log
        accepted it."""
        if not isinstance(self.actions["approvals"], list):
            raise VerificationError("bundle.actions.approvals must be a list")
        logged_at: dict[bytes, int] = {}
        for e in self.entries:
            if e["outcome"] == "ok" and e["envelope"] is not None:
                logged_at.setdefault(canonical(e["envelope"]), e["time"])
        members = self.members
        given: list[approvals_engine.Given] = []
        for env in self.actions["approvals"]:
            action = _logged_action(env, self.logged, type_="withdrawal.approve", deployment=self.deployment)
            body = parse_approval(action.body)
            if (
                body["withdrawal"] != self.w["id"]
                or body["intent_hash"] != self.ih
                or body["tx_digest"] != self.td
            ):
                raise VerificationError(f"approval by {action.actor} is for other content")
            given.append(
                approvals_engine.Given(
                    member=action.actor,
                    role=members[action.actor].role,
                    at=logged_at[canonical(env)],
                    digest=body["tx_digest"],
                    policy_version=body["policy_version"],
                    expires_at=body["expires_at"],
                )
            )
        return given


def offline_sign(
    bundle: Any, seal_private: bytes | bytearray, *, now: int, genesis_hash_pin: str | None = None
) -> dict[str, Any]:
    """Verify the bundle, open both shares resealed to this signer, sign, and return the
    result document for ``tandem bundle import``. Nothing is signed if any check fails."""
    verified = verify_bundle(bundle, now=now, genesis_hash_pin=genesis_hash_pin)
    w = verified.withdrawal
    card = IdentityCard.from_json(bundle["signer"])
    op_private = bytes(seal_private)
    op_key = split.OperationKey(randbytes=lambda n: op_private)
    if op_key.public_key != card.seal_public:
        op_key.close()
        raise VerificationError("this signer key is not the one the bundle's shares were sealed to")
    shares = check_fields(bundle["shares"], required=("manager", "custodian"), where="bundle.shares")
    keyset = split.SealedKeyset.from_dict(bundle["keyset"])
    key = keyset.key(w["key_id"])
    sealed = {}
    for side in split.SIDES:
        doc = check_fields(shares[side], required=("member", "sealed"), where=f"bundle.shares.{side}")
        if doc["member"] not in keyset.members(side):
            raise VerificationError(f"the {side} share names someone who holds no {side} share")
        sealed[side] = unb64(doc["sealed"], what=f"{side} share")
    with split.open_operation_shares(
        op_key,
        keyset_id=keyset.keyset_id,
        operation_id=offline_operation_id(w["id"]),
        sealed_manager=sealed["manager"],
        sealed_custodian=sealed["custodian"],
        commitments=keyset.commitments,
        dek_check=keyset.dek_check,
    ) as dek:
        private = split.decrypt_private_key(
            dek, keyset_id=keyset.keyset_id, key_id=key.key_id, public_key=key.public_key, blob=key.ciphertext
        )
        try:
            signed, txid = sign_transaction(
                w["chain"], bytes.fromhex(w["unsigned_tx"]), w["prevouts"], bytes(private)
            )
        finally:
            split.wipe(private)
    check_signed_transaction(
        w["chain"],
        signed,
        unsigned=bytes.fromhex(w["unsigned_tx"]),
        prevouts=w["prevouts"],
        from_address=verified.intent.from_address,
    )
    return {
        "format": RESULT_FORMAT,
        "withdrawal": w["id"],
        "intent_hash": w["intent_hash"],
        "tx_digest": w["tx_digest"],
        "signed_tx": signed.hex(),
        "txid": txid,
    }
