"""The tamper-evident audit log: a hash chain of entries, an RFC 6962 Merkle tree over
them, checkpoints signed by the service key, and offline verification of an export.

An entry is a JSON object with exactly these fields::

    index       int, 0-based position in the log
    time        int, unix seconds
    deployment  str
    kind        str, e.g. "member.proposed"
    actor       str | null, the member id
    outcome     "ok" | "refused"
    code        str | null, the error code of a refusal (null when the outcome is ok)
    envelope    object | null, the signed action as received
    data        object, public facts
    prev        hex64, the previous entry's hash (64 zeros for entry 0)
    hash        hex64, SHA-256 of domain_bytes("audit-entry", entry without "hash")

The Merkle leaf of an entry is the 32 bytes its ``hash`` names. An export is JSON
Lines: ``canonical(entry)`` per line, in index order. A checkpoint signs the tree
head: ``{"checkpoint": {deployment, tree_size, root, last_hash, time, key_id},
"signature": base64 Ed25519 over domain_bytes("audit-checkpoint", checkpoint)}``.

Verification names the first entry at which the export stops being what the service
wrote, so an auditor knows where to look. The chain localises most edits exactly;
an edit followed by re-hashing every later entry is only visible against the
checkpoint, and is reported at the last entry.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from tandem.core.canonical import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_SAFE_INT,
    canonical,
    domain_bytes,
    loads_strict,
)
from tandem.core.identity import verify_service_signature
from tandem.core.merkle import EMPTY_ROOT, MerkleAccumulator
from tandem.errors import AuditVerificationError, BadSignatureError, Error, InputError

GENESIS_PREV = "0" * 64
ENTRY_DOMAIN = "audit-entry"
CHECKPOINT_DOMAIN = "audit-checkpoint"
ENTRY_FIELDS = frozenset(
    {
        "index",
        "time",
        "deployment",
        "kind",
        "actor",
        "outcome",
        "code",
        "envelope",
        "data",
        "prev",
        "hash",
    }
)
CHECKPOINT_FIELDS = frozenset({"deployment", "tree_size", "root", "last_hash", "time", "key_id"})
KEY_ID_HEX_CHARS = 16
PROGRESS_EVERY = 10_000

EnvelopeVerifier = Callable[[dict[str, Any]], None]
# Sees every entry in index order once its own checks pass, e.g. the justified replay of
# membership, policy and address book (core.membership.LogState.observe).
EntryObserver = Callable[[dict[str, Any]], None]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_HEX_CHARS}}}")
_sha256 = hashlib.sha256

# domain_bytes(d, v) is a fixed prefix followed by canonical(v). The verifier hashes
# bytes it has already proven canonical, so it only needs the prefix.
_ENTRY_PREFIX = domain_bytes(ENTRY_DOMAIN, None)[: -len(canonical(None))]
_CHECKPOINT_PREFIX = domain_bytes(CHECKPOINT_DOMAIN, None)[: -len(canonical(None))]


# --- entries -------------------------------------------------------------------------


def _field_problem(entry: Mapping[str, Any]) -> str | None:
    """What is wrong with the field values of an entry (keys already checked), if anything.

    Runs once per entry when a million-line export is verified, hence exact type
    tests rather than isinstance (which would also let ``True`` pass as an index).
    """
    index = entry["index"]
    if type(index) is not int or index < 0:
        return "index must be a non-negative integer"
    time = entry["time"]
    if type(time) is not int or time < 0:
        return "time must be a non-negative integer (unix seconds)"
    deployment = entry["deployment"]
    if type(deployment) is not str or not deployment:
        return "deployment must be a non-empty string"
    kind = entry["kind"]
    if type(kind) is not str or not kind:
        return "kind must be a non-empty string"
    actor = entry["actor"]
    if actor is not None and (type(actor) is not str or not actor):
        return "actor must be a member id or null"
    outcome = entry["outcome"]
    code = entry["code"]
    if outcome == "ok":
        if code is not None:
            return "code must be null when the outcome is ok"
    elif outcome == "refused":
        if type(code) is not str or not code:
            return "a refusal must carry its error code"
    else:
        return "outcome must be 'ok' or 'refused'"
    envelope = entry["envelope"]
    if envelope is not None and type(envelope) is not dict:
        return "envelope must be an object or null"
    if type(entry["data"]) is not dict:
        return "data must be an object"
    prev = entry["prev"]
    if type(prev) is not str or not _HEX64.fullmatch(prev):
        return "prev must be 64 lowercase hex characters"
    if "hash" in entry:
        digest = entry["hash"]
        if type(digest) is not str or not _HEX64.fullmatch(digest):
            return "hash must be 64 lowercase hex characters"
    return None


def entry_hash(entry_without_hash: Mapping[str, Any]) -> str:
    """The ``hash`` field of an entry with the given other fields."""
    if "hash" in entry_without_hash:
        # Hashing the whole entry is an easy mistake that would yield a plausible but
        # wrong value; refuse it instead.
        raise InputError("entry_hash takes the entry without its hash field")
    return _sha256(domain_bytes(ENTRY_DOMAIN, dict(entry_without_hash))).hexdigest()


def make_entry(  # noqa: PLR0913 - keyword-only fields of one entry
    *,
    index: int,
    time: int,
    deployment: str,
    kind: str,
    actor: str | None,
    outcome: str,
    code: str | None,
    envelope: dict[str, Any] | None,
    data: dict[str, Any],
    prev: str,
) -> dict[str, Any]:
    """A new entry, hash included, as a fresh plain-JSON copy of the arguments.

    Anything an offline verifier would refuse (floats, integers beyond 2^53, lone
    surrogates, nesting deeper than the strict parser allows, a line over 1 MiB) is
    refused here with :class:`InputError`, so the log can never contain an entry
    that makes its own export fail to verify.
    """
    entry, _line = make_entry_line(
        index=index,
        time=time,
        deployment=deployment,
        kind=kind,
        actor=actor,
        outcome=outcome,
        code=code,
        envelope=envelope,
        data=data,
        prev=prev,
    )
    return entry


def make_entry_line(  # noqa: PLR0913 - keyword-only fields of one entry
    *,
    index: int,
    time: int,
    deployment: str,
    kind: str,
    actor: str | None,
    outcome: str,
    code: str | None,
    envelope: dict[str, Any] | None,
    data: dict[str, Any],
    prev: str,
) -> tuple[dict[str, Any], bytes]:
    """:func:`make_entry` and the entry's canonical line (no newline), encoded once.

    The store writes the line as it is; the entry is what the verifier's own parser
    reads back from it, so an entry the verifier would refuse is refused here.
    """
    body: dict[str, Any] = {
        "index": index,
        "time": time,
        "deployment": deployment,
        "kind": kind,
        "actor": actor,
        "outcome": outcome,
        "code": code,
        "envelope": envelope,
        "data": data,
        "prev": prev,
    }
    problem = _field_problem(body)
    if problem is not None:
        raise InputError(f"audit entry: {problem}")
    if (index == 0) != (prev == GENESIS_PREV):
        raise InputError("audit entry: prev is 64 zeros for entry 0 and only for entry 0")
    unhashed, copy = _fast_canonical_and_copy(body)
    digest = _sha256(_ENTRY_PREFIX + unhashed).hexdigest()
    # The hash member sorts right after "envelope", just before "index"; everything
    # after the top-level "index" is an integer or a string (where a quote is always
    # escaped), so the last ',"index":' is the top-level one. The verifier removes
    # the member at the same place.
    cut = unhashed.rfind(b',"index":')
    line = unhashed[:cut] + b',"hash":"' + digest.encode("ascii") + b'"' + unhashed[cut:]
    if len(line) > MAX_DOCUMENT_BYTES:
        raise InputError(f"audit entry is {len(line)} bytes; the limit is {MAX_DOCUMENT_BYTES}")
    if copy is not None and unhashed.count(b"{") + unhashed.count(b"[") <= MAX_DEPTH:
        # Our own encoding of plain all-ASCII JSON (the round trip in the encoder
        # proved it), no deeper than the verifier allows: the decoded copy is what the
        # verifier's parser would read back from the line, so the line is not parsed.
        entry = {k: copy[k] for k in _ENTRY_KEYS_BEFORE_HASH}
        entry["hash"] = digest
        entry.update((k, copy[k]) for k in _ENTRY_KEYS_AFTER_HASH)
        return entry, line
    # Anything else (non-ASCII text, many brackets): the verifier's own parser decides.
    parsed: dict[str, Any] = _parse_canonical_line(line)
    return parsed, line


# An entry's members in canonical (sorted) order, around the hash.
_ENTRY_KEYS_BEFORE_HASH = ("actor", "code", "data", "deployment", "envelope")
_ENTRY_KEYS_AFTER_HASH = ("index", "kind", "outcome", "prev", "time")


def fast_canonical(value: Any) -> bytes:
    """``canonical(value)``, several times faster for plain all-ASCII JSON data.

    For such data the C encoder with sorted keys and no whitespace writes the RFC 8785
    bytes (the argument of :func:`_parse_canonical_line`); a round trip through the
    strict-number decoder proves the value was such data (string keys, lists, no
    floats, integers within 2^53), and anything else takes the RFC 8785 serialiser,
    which decides and refuses as before.
    """
    return _fast_canonical_and_copy(value)[0]


def _fast_canonical_and_copy(value: Any) -> tuple[bytes, Any]:
    """:func:`fast_canonical`, and the value the round trip decoded (a fresh plain-JSON
    copy, what a JSON parser reads back from the bytes) when the fast path was taken;
    None when the RFC 8785 serialiser had to decide."""
    try:
        text = _encode_json(value)
    except (TypeError, ValueError):
        return canonical(value), None
    if text.isascii():
        try:
            back = _decode_json(text)
        except (ValueError, RecursionError, _SlowPathNeededError):
            return canonical(value), None
        if type(back) is type(value) and back == value:
            return text.encode("ascii"), back
    return canonical(value), None


def entry_leaf(entry: Mapping[str, Any]) -> bytes:
    """The Merkle leaf data of an entry: the 32 bytes its hash names."""
    return bytes.fromhex(entry["hash"])


def export_line(entry: Mapping[str, Any]) -> bytes:
    """One line of an export, newline included."""
    return canonical(dict(entry)) + b"\n"


# --- checkpoints ---------------------------------------------------------------------


def key_id(public_key_raw32: bytes) -> str:
    """Short identifier of an Ed25519 public key: the first 16 hex chars of its SHA-256."""
    if not isinstance(public_key_raw32, bytes) or len(public_key_raw32) != 32:
        raise InputError("an Ed25519 public key is 32 bytes")
    return _sha256(public_key_raw32).hexdigest()[:KEY_ID_HEX_CHARS]


def _checkpoint_problem(checkpoint: Any) -> str | None:
    if not isinstance(checkpoint, dict):
        return "checkpoint must be an object"
    if set(checkpoint) != CHECKPOINT_FIELDS:
        return f"checkpoint must have exactly the fields {', '.join(sorted(CHECKPOINT_FIELDS))}"
    deployment = checkpoint["deployment"]
    if type(deployment) is not str or not deployment:
        return "deployment must be a non-empty string"
    for name in ("tree_size", "time"):
        value = checkpoint[name]
        if type(value) is not int or not 0 <= value <= MAX_SAFE_INT:
            return f"{name} must be a non-negative integer"
    for name in ("root", "last_hash"):
        value = checkpoint[name]
        if type(value) is not str or not _HEX64.fullmatch(value):
            return f"{name} must be 64 lowercase hex characters"
    kid = checkpoint["key_id"]
    if type(kid) is not str or not _KEY_ID.fullmatch(kid):
        return f"key_id must be {KEY_ID_HEX_CHARS} lowercase hex characters"
    if checkpoint["tree_size"] == 0 and (
        checkpoint["root"] != EMPTY_ROOT.hex() or checkpoint["last_hash"] != GENESIS_PREV
    ):
        return "an empty log has the empty-tree root and the genesis last_hash"
    return None


@dataclass(frozen=True)
class TreeHeadKind:
    """One kind of signed tree head: the member that holds it in its document, the
    domain it is signed under (distinct, so one kind never passes for another) and the
    words a refusal names it with."""

    member: str
    domain: str
    label: str  # the head, in a refusal
    document: str  # the whole document, in a refusal
    key: str  # the key it is verified under, in a refusal
    signature_error: type[Error]


CHECKPOINT = TreeHeadKind(
    member="checkpoint",
    domain=CHECKPOINT_DOMAIN,
    label="checkpoint",
    document="checkpoint document",
    key="the service key given",
    signature_error=BadSignatureError,
)


def sign_tree_head(
    kind: TreeHeadKind,
    private_key_raw32: bytes,
    *,
    deployment: str,
    tree_size: int,
    root: str,
    last_hash: str,
    time: int,
) -> dict[str, Any]:
    """A signed document of ``kind`` for the tree head (root and last_hash as hex):
    ``{kind.member: head, "signature": base64 Ed25519 over domain_bytes(kind.domain, head)}``."""
    if not isinstance(private_key_raw32, bytes) or len(private_key_raw32) != 32:
        raise InputError("an Ed25519 private key is a 32-byte seed")
    signing_key = nacl.signing.SigningKey(private_key_raw32)
    head = {
        "deployment": deployment,
        "tree_size": tree_size,
        "root": root,
        "last_hash": last_hash,
        "time": time,
        "key_id": key_id(bytes(signing_key.verify_key)),
    }
    problem = _checkpoint_problem(head)
    if problem is not None:
        raise InputError(f"{kind.member}: {problem}")
    # The checkpoint is signed on every append: its prefix is computed once.
    if kind.domain == CHECKPOINT_DOMAIN:
        message = _CHECKPOINT_PREFIX + fast_canonical(head)
    else:
        message = domain_bytes(kind.domain, head)
    signature = bytes(signing_key.sign(message).signature)
    return {kind.member: head, "signature": base64.b64encode(signature).decode("ascii")}


def verify_tree_head(kind: TreeHeadKind, doc: Any, public_key_raw32: bytes) -> dict[str, Any]:
    """The head of a ``kind`` document once its signature verifies under
    ``public_key_raw32``. A malformed document or one naming another key is an
    :class:`AuditVerificationError` saying so; a signature that does not verify is a
    ``kind.signature_error``."""
    expected_key_id = key_id(public_key_raw32)
    if not isinstance(doc, Mapping) or set(doc) != {kind.member, "signature"}:
        raise AuditVerificationError(
            f"{kind.document} must have exactly the fields {kind.member} and signature"
        )
    head = doc[kind.member]
    problem = _checkpoint_problem(head)
    if problem is not None:
        raise AuditVerificationError(f"{kind.label} is malformed: {problem}")
    if head["key_id"] != expected_key_id:
        raise AuditVerificationError(
            f"{kind.label} is signed by another key (key id {head['key_id']}; "
            f"{kind.key} has key id {expected_key_id})"
        )
    verify_service_signature(
        public_key_raw32, kind.domain, head, doc["signature"], what=kind.label, error=kind.signature_error
    )
    return dict(head)


def sign_checkpoint(
    private_key_raw32: bytes,
    *,
    deployment: str,
    tree_size: int,
    root: str,
    last_hash: str,
    time: int,
) -> dict[str, Any]:
    """A signed checkpoint document for the tree head (root and last_hash as hex)."""
    return sign_tree_head(
        CHECKPOINT,
        private_key_raw32,
        deployment=deployment,
        tree_size=tree_size,
        root=root,
        last_hash=last_hash,
        time=time,
    )


def verify_checkpoint(doc: Mapping[str, Any], public_key_raw32: bytes) -> dict[str, Any]:
    """The checkpoint of ``doc`` once its signature verifies under ``public_key_raw32``.

    A checkpoint naming another key is an :class:`AuditVerificationError` saying so; a
    signature that does not verify is a :class:`BadSignatureError`.
    """
    return verify_tree_head(CHECKPOINT, doc, public_key_raw32)


# --- parsing an export line ----------------------------------------------------------


class _SlowPathNeededError(Exception):
    """Internal: the line needs the full strict parser to decide."""


def _refuse_number(_text: str) -> Any:
    raise _SlowPathNeededError


def _safe_int(text: str) -> int:
    value = int(text)
    if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
        return value
    raise _SlowPathNeededError


_decode_json = json.JSONDecoder(
    parse_float=_refuse_number, parse_int=_safe_int, parse_constant=_refuse_number
).decode
_encode_json = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
).encode


class _NotCanonicalError(InputError):
    pass


def _parse_canonical_line(raw: bytes) -> Any:
    """The JSON value of ``raw``, which must be exactly that value's RFC 8785 form.

    Accepts precisely what ``loads_strict`` followed by ``canonical(value) == raw``
    accepts, but most lines take a path about six times faster: ``loads_strict``
    scans every character in Python before parsing, and the RFC 8785 serialiser is
    pure Python. For a value whose JSON text is all ASCII, the C encoder with sorted
    keys and no whitespace produces the RFC 8785 bytes (ASCII keys sort the same by
    code point as by UTF-16 unit; both escape only quote, backslash and control
    characters, the same way; integers within 2^53 print the same). Equality with
    the line then also rules out duplicate keys, and counting brackets bounds the
    nesting. Anything else falls through to the strict parser, which decides and
    gives the reason.
    """
    if raw.isascii() and len(raw) <= MAX_DOCUMENT_BYTES and raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH:
        text = raw.decode("ascii")
        try:
            value = _decode_json(text)
        except (ValueError, RecursionError, _SlowPathNeededError):
            pass
        else:
            if _encode_json(value) == text:
                return value
    value = loads_strict(raw)
    if canonical(value) != raw:
        raise _NotCanonicalError(
            "line is not in canonical form (RFC 8785): whitespace, key order, "
            "escaping or number format was changed"
        )
    return value


# --- the chain -----------------------------------------------------------------------


def _prev_error(i: int) -> AuditVerificationError:
    what = "the genesis value" if i == 0 else f"the hash of entry {i - 1}"
    return AuditVerificationError(f"entry {i}: prev does not match {what}", index=i)


class _Chain:
    """Per-entry checks shared by export verification, its parallel workers and the
    start-up self-check. ``prev`` None means the previous hash is not known here (a
    worker's first entry); the entry's ``prev`` is then recorded for the caller."""

    __slots__ = (
        "accumulator",
        "deployment",
        "envelope_verifier",
        "envelopes_verified",
        "first_prev",
        "observer",
        "position",
        "prev",
    )

    def __init__(
        self,
        *,
        deployment: str | None,
        start_index: int,
        prev: str | None,
        envelope_verifier: EnvelopeVerifier | None,
        observer: EntryObserver | None = None,
    ) -> None:
        self.deployment = deployment
        self.observer = observer
        self.position = start_index
        self.prev = prev
        self.first_prev: str | None = None
        self.envelope_verifier = envelope_verifier
        self.envelopes_verified = 0
        self.accumulator = MerkleAccumulator()

    def check_line(self, raw: bytes) -> dict[str, Any]:
        """Check the next line; return its entry, or raise naming its position."""
        i = self.position
        if not raw:
            raise AuditVerificationError(f"entry {i}: line is empty", index=i)
        try:
            entry = _parse_canonical_line(raw)
        except InputError as exc:
            raise AuditVerificationError(f"entry {i}: {exc.message}", index=i) from None
        if type(entry) is not dict or entry.keys() != ENTRY_FIELDS:
            raise AuditVerificationError(f"entry {i}: {_schema_difference(entry)}", index=i)
        index = entry["index"]
        if index != i or type(index) is not int:
            raise AuditVerificationError(f"entry {i}: index is {index!r}, expected {i}", index=i)
        problem = _field_problem(entry)
        if problem is not None:
            raise AuditVerificationError(f"entry {i}: {problem}", index=i)
        deployment = entry["deployment"]
        if self.deployment is None:
            self.deployment = deployment
        elif deployment != self.deployment:
            raise AuditVerificationError(
                f"entry {i}: deployment {deployment!r} differs from {self.deployment!r}", index=i
            )
        if self.prev is None:
            self.first_prev = entry["prev"]
        elif entry["prev"] != self.prev:
            raise _prev_error(i)
        digest: str = entry["hash"]
        # In canonical form "hash" is the member after "envelope", and everything after
        # it is an integer or a string (where a quote is always escaped), so the last
        # occurrence of the member is the top-level one; removing it leaves exactly
        # canonical(entry without hash). Cutting a nested look-alike instead would
        # leave the real hash inside the hashed bytes, which cannot then match.
        member = b',"hash":"' + digest.encode("ascii") + b'"'
        cut = raw.rfind(member)
        unhashed = raw[:cut] + raw[cut + len(member) :]
        if cut < 0 or _sha256(_ENTRY_PREFIX + unhashed).hexdigest() != digest:
            raise AuditVerificationError(f"entry {i}: hash does not match its content", index=i)
        if entry["envelope"] is not None:
            self.verify_envelope(entry, i)
        if self.observer is not None:
            self.observe(entry, i)
        self.accumulator.append(bytes.fromhex(digest))
        self.prev = digest
        self.position = i + 1
        return entry

    def verify_envelope(self, entry: dict[str, Any], i: int) -> None:
        verifier = self.envelope_verifier
        if verifier is None:
            return
        try:
            verifier(entry)
        except Error as exc:
            raise AuditVerificationError(
                f"entry {i}: envelope does not verify: {exc.message}", index=i
            ) from None
        self.envelopes_verified += 1

    def observe(self, entry: dict[str, Any], i: int) -> None:
        observer = self.observer
        if observer is None:
            return
        try:
            observer(entry)
        except AuditVerificationError as exc:
            raise AuditVerificationError(exc.message, index=i) from None
        except Error as exc:
            raise AuditVerificationError(f"entry {i}: {exc.message}", index=i) from None


def _schema_difference(value: Any) -> str:
    if type(value) is not dict:
        return "line is not a JSON object"
    unexpected = sorted(set(value) - ENTRY_FIELDS)
    missing = sorted(ENTRY_FIELDS - set(value))
    parts = []
    if unexpected:
        parts.append(f"unexpected field(s) {', '.join(unexpected)}")
    if missing:
        parts.append(f"missing field(s) {', '.join(missing)}")
    return "fields are not the audit-entry schema: " + "; ".join(parts)


def _as_line_bytes(line: bytes | str) -> bytes:
    # A str with a lone surrogate becomes bytes that are not UTF-8, which the strict
    # parser then refuses at the right position.
    raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else bytes(line)
    # One line terminator is part of the JSON Lines framing; anything else (a second
    # newline, a carriage return) is an edit.
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw


def check_entry_line(raw: bytes | str, *, index: int, deployment: str) -> dict[str, Any]:
    """One line checked on its own, for a verifier that holds a sparse selection of the
    log: the entry schema, that it is entry ``index`` of ``deployment``, and that its
    ``hash`` is the hash of its content. Its place in the log (the chain link to its
    neighbour or an inclusion proof) is the caller's to check. Raises
    :class:`AuditVerificationError` naming the entry."""
    chain = _Chain(deployment=deployment, start_index=index, prev=None, envelope_verifier=None)
    return chain.check_line(_as_line_bytes(raw))


# --- parallel verification -----------------------------------------------------------

# Entries per chunk handed to a worker process. A power of two, so that each full
# chunk is a perfect subtree of the log's Merkle tree and only its root travels back.
PARALLEL_CHUNK = 8192
# Below this many entries a process pool costs more than it saves.
PARALLEL_THRESHOLD = 65_536


@dataclass(frozen=True)
class _ChunkResult:
    count: int
    first_prev: str | None
    last_hash: str | None
    peaks: list[tuple[int, bytes]]
    envelope_positions: list[int]
    error: tuple[int | None, str] | None


def _check_chunk(start_index: int, deployment: str, lines: list[bytes]) -> _ChunkResult:
    """Worker side: every per-entry check except the link to the previous chunk and
    the caller's envelope verifier, which stay in the parent (the verifier may be a
    closure, and may rely on seeing entries in order)."""
    chain = _Chain(deployment=deployment, start_index=start_index, prev=None, envelope_verifier=None)
    envelope_positions: list[int] = []
    error: tuple[int | None, str] | None = None
    try:
        for raw in lines:
            if chain.check_line(raw)["envelope"] is not None:
                envelope_positions.append(chain.position - 1)
    except AuditVerificationError as exc:
        # Exceptions with keyword-only fields do not survive pickling; send the facts.
        error = (exc.index, exc.message)
    return _ChunkResult(
        count=chain.position - start_index,
        first_prev=chain.first_prev,
        last_hash=chain.prev,
        peaks=chain.accumulator.peaks(),
        envelope_positions=envelope_positions,
        error=error,
    )


def _absorb_chunk(
    chain: _Chain, result: _ChunkResult, lines: list[bytes], progress: Callable[[int], None] | None
) -> None:
    """Parent side: fold a worker's verdict into the chain, failing exactly where the
    sequential check would have failed first."""
    start = chain.position
    # The worker checked the first entry's prev against nothing; that check comes
    # before the hash check, so a broken link outranks a later fault in the entry.
    if result.first_prev is not None and result.first_prev != chain.prev:
        raise _prev_error(start)
    if chain.observer is not None:
        # Every entry the worker passed, in order, as the sequential check sees them.
        with_envelope = set(result.envelope_positions)
        for i in range(start, start + result.count):
            entry = json.loads(lines[i - start])
            if i in with_envelope:
                chain.verify_envelope(entry, i)
            chain.observe(entry, i)
    elif chain.envelope_verifier is not None:
        for i in result.envelope_positions:
            chain.verify_envelope(json.loads(lines[i - start]), i)
    if result.error is not None:
        index, message = result.error
        raise AuditVerificationError(message, index=index)
    for height, peak in result.peaks:
        chain.accumulator.append_subtree(peak, height)
    chain.prev = result.last_hash
    chain.position = start + result.count
    if progress is not None:
        progress(chain.position)


def _default_workers(tree_size: int) -> int:
    if tree_size < PARALLEL_THRESHOLD or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform can tell which CPUs are ours
        cpus = os.cpu_count() or 1
    return min(cpus, 8)


def _verify_lines_parallel(
    chain: _Chain,
    lines: Iterable[bytes | str],
    *,
    deployment: str,
    tree_size: int,
    workers: int,
    progress: Callable[[int], None] | None,
) -> int | None:
    """Check ``lines`` in worker processes; return the position of a line beyond
    ``tree_size``, if any, once everything before it has verified."""
    # fork, not spawn: the workers need nothing but this module, and spawn would
    # re-import the caller's __main__.
    context = multiprocessing.get_context("fork")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context)
    pending: collections.deque[tuple[concurrent.futures.Future[_ChunkResult], list[bytes]]] = (
        collections.deque()
    )
    beyond: int | None = None
    try:
        chunk: list[bytes] = []
        start = 0
        for position, line in enumerate(lines):
            if position >= tree_size:
                beyond = position
                break
            chunk.append(_as_line_bytes(line))
            if len(chunk) == PARALLEL_CHUNK:
                pending.append((pool.submit(_check_chunk, start, deployment, chunk), chunk))
                start += len(chunk)
                chunk = []
                # Bound the lines held in memory: read ahead only a few chunks.
                if len(pending) >= 2 * workers:
                    future, done = pending.popleft()
                    _absorb_chunk(chain, future.result(), done, progress)
        if chunk:
            pending.append((pool.submit(_check_chunk, start, deployment, chunk), chunk))
        while pending:
            future, done = pending.popleft()
            _absorb_chunk(chain, future.result(), done, progress)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return beyond


# --- verification --------------------------------------------------------------------


class _ProgressReport:
    """Passes counts on to the caller's callback, each at most once."""

    __slots__ = ("_callback", "_last")

    def __init__(self, callback: Callable[[int], None] | None) -> None:
        self._callback = callback
        self._last = -1

    def __call__(self, count: int) -> None:
        if self._callback is not None and count != self._last:
            self._last = count
            self._callback(count)


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification established."""

    entries: int
    tree_size: int
    root: str
    last_hash: str
    deployment: str
    checkpoint_time: int
    envelopes_verified: int


def verify_export(
    lines: Iterable[bytes | str],
    checkpoint_doc: Mapping[str, Any],
    service_public_key: bytes,
    *,
    envelope_verifier: EnvelopeVerifier | None = None,
    replay: EntryObserver | None = None,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Verify an exported log against a checkpoint signed by ``service_public_key``.

    ``lines`` are the export's lines in order, each with or without its newline (a
    binary file object will do). The checkpoint must cover the whole export: same
    size, same Merkle root, same last hash. ``envelope_verifier`` is called, in
    index order, with each entry that has an envelope and re-verifies it; any
    :class:`Error` it raises is reported at that entry. ``progress`` is called with
    the number of entries verified so far, every few thousand entries and at the end.
    ``workers`` is the number of processes to check entries in; by default one for
    small logs and one per CPU for large ones. The outcome never depends on it.
    ``replay`` is called with every entry, in index order, after the entry's own checks
    (pass ``LogState().observe`` so that every effect on membership, policy and address
    book must follow from member-signed proposals and approvals); any :class:`Error` it
    raises is reported at that entry.

    Raises :class:`AuditVerificationError` naming the first bad entry (``.index``);
    ``.index`` is None when the fault is in the checkpoint itself.
    """
    try:
        checkpoint = verify_checkpoint(checkpoint_doc, service_public_key)
    except BadSignatureError as exc:
        raise AuditVerificationError(exc.message) from None
    tree_size: int = checkpoint["tree_size"]
    chain = _Chain(
        deployment=checkpoint["deployment"],
        start_index=0,
        prev=GENESIS_PREV,
        envelope_verifier=envelope_verifier,
        observer=replay,
    )
    if workers is None:
        workers = _default_workers(tree_size)
    report = _ProgressReport(progress)
    beyond = _check_lines(
        chain, lines, deployment=checkpoint["deployment"], tree_size=tree_size, workers=workers, report=report
    )
    _require_covered(chain, checkpoint, beyond)
    root = chain.accumulator.root().hex()
    if root != checkpoint["root"]:
        raise AuditVerificationError("the Merkle root of the export differs from the checkpoint")
    report(chain.position)
    return VerifyReport(
        entries=chain.position,
        tree_size=tree_size,
        root=root,
        last_hash=checkpoint["last_hash"],
        deployment=checkpoint["deployment"],
        checkpoint_time=checkpoint["time"],
        envelopes_verified=chain.envelopes_verified,
    )


def _check_lines(
    chain: _Chain,
    lines: Iterable[bytes | str],
    *,
    deployment: str,
    tree_size: int,
    workers: int,
    report: _ProgressReport,
) -> int | None:
    """Every line the checkpoint covers passes its checks, in worker processes or in
    this one; the position of the first line beyond ``tree_size``, if there is one."""
    if workers > 1:
        return _verify_lines_parallel(
            chain, lines, deployment=deployment, tree_size=tree_size, workers=workers, progress=report
        )
    check_line = chain.check_line
    for position, line in enumerate(lines):
        if position >= tree_size:
            return position
        check_line(_as_line_bytes(line))
        if chain.position % PROGRESS_EVERY == 0:
            report(chain.position)
    return None


def _require_covered(chain: _Chain, checkpoint: Mapping[str, Any], beyond: int | None) -> None:
    """The export is exactly what the checkpoint covers: no entry more, none fewer,
    ending in the signed last hash."""
    tree_size: int = checkpoint["tree_size"]
    if beyond is not None:
        raise AuditVerificationError(
            f"entry {beyond}: not covered by the checkpoint, which covers {tree_size} entries",
            index=beyond,
        )
    count = chain.position
    if count < tree_size:
        raise AuditVerificationError(
            f"entry {count}: missing; the checkpoint covers {tree_size} entries and the "
            f"export ends after {count}",
            index=count,
        )
    if chain.prev != checkpoint["last_hash"]:
        # The chain was consistent up to here, so the entries were changed and every
        # later hash recomputed; only the signed last_hash shows it.
        raise AuditVerificationError(
            f"entry {count - 1}: hash differs from the checkpoint's last_hash (this entry "
            "or an earlier one was changed and the chain re-hashed)",
            index=count - 1,
        )


def verify_chain(
    entries: Iterable[Mapping[str, Any]],
    *,
    start_index: int = 0,
    prev: str = GENESIS_PREV,
    envelope_verifier: EnvelopeVerifier | None = None,
) -> None:
    """Check stored entries the way :func:`verify_export` checks an export's lines.

    For the server's start-up self-check, where there is no checkpoint to compare
    against. ``start_index`` and ``prev`` let a caller check only the entries after
    a point it has already verified. Raises :class:`AuditVerificationError` naming
    the first bad entry.
    """
    chain = _Chain(deployment=None, start_index=start_index, prev=prev, envelope_verifier=envelope_verifier)
    for entry in entries:
        i = chain.position
        try:
            text = _encode_json(entry)
            raw = text.encode("ascii") if text.isascii() else canonical(entry)
        except (TypeError, ValueError, InputError):
            raise AuditVerificationError(
                f"entry {i}: cannot be serialised as canonical JSON", index=i
            ) from None
        # The stored form must be plain JSON data that round-trips exactly (no tuples,
        # no non-string keys); otherwise what was hashed is not what is stored.
        if chain.check_line(raw) != entry:
            raise AuditVerificationError(f"entry {i}: is not plain JSON data", index=i)


# --- the server's own rows -----------------------------------------------------------


class StoredChainCheck:
    """Entry-by-entry verification of the rows the server stored, resumable from a
    verified point, in constant memory: the checks :func:`verify_export` makes on each
    line, plus that the stored hash column is the entry's hash, and (given the tree
    up to ``start_index``) the perfect subtrees each entry completes, so the caller
    can compare them with the roots it stored.

    ``prev`` None checks one entry on its own (its link backwards is not known here).
    """

    __slots__ = ("_chain", "tree")

    def __init__(
        self,
        *,
        start_index: int,
        prev: str | None,
        tree: MerkleAccumulator | None,
        deployment: str | None = None,
    ) -> None:
        if tree is not None and tree.size != start_index:
            raise InputError(f"a tree of {tree.size} leaves cannot resume at entry {start_index}")
        self._chain = _Chain(
            deployment=deployment, start_index=start_index, prev=prev, envelope_verifier=None
        )
        self.tree = tree

    @property
    def position(self) -> int:
        """The index of the next entry to check."""
        return self._chain.position

    @property
    def last_hash(self) -> str | None:
        return self._chain.prev

    @property
    def deployment(self) -> str | None:
        return self._chain.deployment

    def check(self, line: str, stored_hash: str) -> list[tuple[int, int, bytes]]:
        """Check the next stored line (no newline: the row holds exactly the canonical
        bytes) and its hash column; return the subtrees it completes, height 0 first."""
        i = self._chain.position
        entry = self._chain.check_line(line.encode("utf-8", "surrogatepass"))
        if stored_hash != entry["hash"]:
            raise AuditVerificationError(
                f"entry {i}: the stored hash column differs from the entry's hash", index=i
            )
        if self.tree is None:
            return []
        leaf = _sha256(b"\x00" + bytes.fromhex(stored_hash)).digest()
        return self.tree.append_leaf_hash_with_subtrees(leaf)
