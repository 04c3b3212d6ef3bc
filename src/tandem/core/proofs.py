"""Proof of ownership: challenges, the signed message text, bundles and their offline
verification.

A custodian or an auditor issues a *challenge* (nonce, statement, scope, expiry). Once
a manager and a custodian have both contributed their shares, every address in scope
signs one message in its chain's own standard format (BIP-322 simple or BIP-137,
EIP-191, Solana off-chain message v0), so wallets and libraries an auditor already has
can check it. The message text is fixed by :data:`MESSAGE_TEMPLATE`; the verifier
re-renders it from the bundle's own fields and requires byte equality, so a signature
over any other text (another entity, address, segregation class, nonce or day) fails.

A *bundle* is RFC 8785 canonical JSON::

    {"format": "tandem-proof-bundle/1",
     "challenge": {...the challenge document...},
     "signed_at": unix seconds, "date": "YYYY-MM-DD" (UTC day of signed_at),
     "message_template": MESSAGE_TEMPLATE,
     "checkpoint": {...signed audit checkpoint covering the challenge and contributions...},
     "proofs": [{chain, network, address, public_key, segregation, format, message,
                 signature[, payload_hex]}, ...]}

Its hash (:func:`bundle_hash`, SHA-256 of the canonical bytes, i.e. ``sha256sum`` of a
bundle file as Tandem writes it) is recorded in the audit log under ``proof.bundle``.

Nothing here does I/O: files are read by the CLI; worker processes are the only
side effect, and only when asked for.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tandem.core.canonical import MAX_SAFE_INT, canonical, parse_json_text, utf8_text
from tandem.core.chains import MessageProof, get_chain
from tandem.errors import (
    Error,
    InputError,
    UnknownFieldError,
    VerificationError,
)

CHALLENGE_FORMAT = "tandem-proof-challenge/1"
BUNDLE_FORMAT = "tandem-proof-bundle/1"

# The exact text every address signs. One line, so it pastes unchanged into a wallet's
# "verify message" box or a command-line argument; every field is rendered verbatim.
MESSAGE_TEMPLATE = (
    "Tandem proof of ownership | entity: {entity} | address: {address} | "
    "segregation: {segregation} | challenge: {nonce} | date: {date}"
)

# Which proof format each chain's addresses use (the chain module picks it by address
# type; the verifier refuses any other).
FORMATS_BY_CHAIN: Mapping[str, frozenset[str]] = {
    "bitcoin": frozenset({"bip322-simple", "bip137"}),
    "ethereum": frozenset({"eip191"}),
    "solana": frozenset({"solana-offchain-v0"}),
}

NONCE_RE = re.compile(r"[A-Za-z0-9._:-]{8,128}")
_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_STATEMENT_CHARS = 1000
MAX_SCOPE_ADDRESSES = 10_000
MAX_CHALLENGE_SECONDS = 31 * 24 * 3600
MAX_BUNDLE_BYTES = 1 << 30
SCOPE_KINDS = ("all", "keyset", "segregation", "addresses")

PROOF_FIELDS = (
    "chain",
    "network",
    "address",
    "public_key",
    "segregation",
    "format",
    "message",
    "signature",
)
CHALLENGE_FIELDS = (
    "format",
    "id",
    "deployment",
    "entity",
    "nonce",
    "statement",
    "scope",
    "keysets",
    "issuer",
    "issuer_role",
    "created_at",
    "expires_at",
)
BUNDLE_FIELDS = (
    "format",
    "challenge",
    "signed_at",
    "date",
    "message_template",
    "checkpoint",
    "proofs",
)

# Verification goes chunk by chunk (progress, and worker processes in the CLI).
CHUNK_SIZE = 500


# --- message text ----------------------------------------------------------------------


def utc_date(unix_seconds: int) -> str:
    """``YYYY-MM-DD`` of a unix time, in UTC."""
    return time.strftime("%Y-%m-%d", time.gmtime(unix_seconds))


def render_message(*, entity: str, address: str, segregation: str, nonce: str, date: str) -> str:
    """The exact text an address signs for a challenge (see :data:`MESSAGE_TEMPLATE`)."""
    return MESSAGE_TEMPLATE.format(
        entity=entity, address=address, segregation=segregation, nonce=nonce, date=date
    )


def check_segregation(value: Any, *, where: str = "segregation") -> str:
    """``own``, ``client-omnibus`` or ``client:<id>``."""
    if isinstance(value, str) and (
        value in ("own", "client-omnibus")
        or (value.startswith("client:") and _CLIENT_ID_RE.fullmatch(value.removeprefix("client:")))
    ):
        return value
    raise InputError(f"{where} must be 'own', 'client-omnibus' or 'client:<client-id>'")


def check_nonce(value: Any) -> str:
    if not isinstance(value, str) or not NONCE_RE.fullmatch(value):
        raise InputError("nonce must be 8-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")
    return value


# --- challenges ------------------------------------------------------------------------


def check_statement(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_STATEMENT_CHARS:
        raise InputError(f"statement must be 1-{MAX_STATEMENT_CHARS} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InputError("statement must not contain control characters")
    return value


def check_scope(value: Any) -> dict[str, Any]:
    """One of ``{"kind": "all"}``, ``{"kind": "keyset", "keyset": id}``,
    ``{"kind": "segregation", "segregation": class}``,
    ``{"kind": "addresses", "addresses": [address, ...]}``."""
    if not isinstance(value, dict) or value.get("kind") not in SCOPE_KINDS:
        raise InputError(f"scope.kind must be one of {', '.join(SCOPE_KINDS)}")
    kind = value["kind"]
    extra = {
        "all": (),
        "keyset": ("keyset",),
        "segregation": ("segregation",),
        "addresses": ("addresses",),
    }[kind]
    unknown = sorted(set(value) - {"kind", *extra})
    if unknown:
        raise UnknownFieldError(f"unknown field(s) in scope: {', '.join(unknown)}")
    missing = sorted(set(extra) - set(value))
    if missing:
        raise InputError(f"scope of kind {kind} needs {', '.join(missing)}")
    if kind == "keyset" and (not isinstance(value["keyset"], str) or not value["keyset"]):
        raise InputError("scope.keyset must be a key set id")
    if kind == "segregation":
        check_segregation(value["segregation"], where="scope.segregation")
    if kind == "addresses":
        addresses = value["addresses"]
        if (
            not isinstance(addresses, list)
            or not 1 <= len(addresses) <= MAX_SCOPE_ADDRESSES
            or not all(isinstance(a, str) and 1 <= len(a) <= 128 for a in addresses)
        ):
            raise InputError(f"scope.addresses must be a list of 1-{MAX_SCOPE_ADDRESSES} addresses")
        if len({normalise_address(a) for a in addresses}) != len(addresses):
            raise InputError("scope.addresses lists an address twice")
    return dict(value)


def make_challenge(  # noqa: PLR0913 - keyword-only fields of one challenge
    *,
    challenge_id: str,
    deployment: str,
    entity: str,
    nonce: str,
    statement: str,
    scope: dict[str, Any],
    keysets: Sequence[str],
    issuer: str,
    issuer_role: str,
    created_at: int,
    expires_at: int,
) -> dict[str, Any]:
    """The challenge document, checked whole; it is copied into the bundle."""
    check_nonce(nonce)
    check_statement(statement)
    check_scope(scope)
    if expires_at <= created_at:
        raise InputError("expires_at must be in the future")
    if expires_at - created_at > MAX_CHALLENGE_SECONDS:
        raise InputError(f"a challenge may run for at most {MAX_CHALLENGE_SECONDS // 86400} days")
    if not keysets:
        raise InputError("the scope names no key set with addresses")
    return {
        "format": CHALLENGE_FORMAT,
        "id": challenge_id,
        "deployment": deployment,
        "entity": entity,
        "nonce": nonce,
        "statement": statement,
        "scope": scope,
        "keysets": sorted(keysets),
        "issuer": issuer,
        "issuer_role": issuer_role,
        "created_at": created_at,
        "expires_at": expires_at,
    }


def check_challenge(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InputError("challenge must be a JSON object")
    _exact_fields(doc, CHALLENGE_FIELDS, (), "challenge")
    if doc["format"] != CHALLENGE_FORMAT:
        raise InputError(f"challenge.format must be {CHALLENGE_FORMAT}")
    for key in ("id", "deployment", "entity", "issuer", "issuer_role"):
        if not isinstance(doc[key], str) or not doc[key]:
            raise InputError(f"challenge.{key} must be a non-empty string")
    for key in ("created_at", "expires_at"):
        if type(doc[key]) is not int or doc[key] < 0:
            raise InputError(f"challenge.{key} must be unix seconds")
    check_nonce(doc["nonce"])
    check_statement(doc["statement"])
    check_scope(doc["scope"])
    if not isinstance(doc["keysets"], list) or not all(isinstance(k, str) for k in doc["keysets"]):
        raise InputError("challenge.keysets must be a list of key set ids")
    return doc


# --- signing ---------------------------------------------------------------------------


def sign_proof(  # noqa: PLR0913 - keyword-only fields of one signed statement
    *,
    chain: str,
    network: str,
    address: str,
    public_key: bytes,
    segregation: str,
    private_key: bytes,
    entity: str,
    nonce: str,
    date: str,
) -> dict[str, Any]:
    """One bundle entry: the message for this address signed in its chain's format."""
    message = render_message(entity=entity, address=address, segregation=segregation, nonce=nonce, date=date)
    proof = get_chain(chain).sign_message(private_key, address, message, network, public_key=public_key)
    entry: dict[str, Any] = {
        "chain": chain,
        "network": network,
        "address": address,
        "public_key": public_key.hex(),
        "segregation": segregation,
        "format": proof.format,
        "message": message,
        "signature": proof.signature,
    }
    if proof.payload_hex is not None:
        entry["payload_hex"] = proof.payload_hex
    return entry


def build_bundle(
    *,
    challenge: dict[str, Any],
    signed_at: int,
    checkpoint: dict[str, Any] | None,
    proofs: Iterable[dict[str, Any]],
) -> dict[str, Any]:
    """The bundle document, proofs in (chain, network, address) order."""
    if not challenge["created_at"] <= signed_at <= challenge["expires_at"]:
        raise InputError("proofs must be signed between the challenge's creation and expiry")
    ordered = sorted(proofs, key=lambda p: (p["chain"], p["network"], p["address"]))
    return {
        "format": BUNDLE_FORMAT,
        "challenge": challenge,
        "signed_at": signed_at,
        "date": utc_date(signed_at),
        "message_template": MESSAGE_TEMPLATE,
        "checkpoint": checkpoint,
        "proofs": ordered,
    }


def bundle_bytes(bundle: Any) -> bytes:
    """RFC 8785 canonical bytes of a bundle.

    For documents whose object keys are all ASCII and that hold no floats (every
    bundle: keys are fixed field names, numbers are integers), RFC 8785 output equals
    sorted-key, separator-free ``json.dumps`` without ASCII escaping: both escape only
    ``"``, ``\\`` and control characters (as ``\\b \\t \\n \\f \\r`` or lowercase
    ``\\u00xx``), and UTF-16 and code-point key order agree on ASCII. That is an order
    of magnitude faster than the general encoder on a 100,000-proof bundle; anything
    else goes through :func:`canonical`.
    """
    if not _plain_json(bundle):
        return canonical(bundle)
    try:
        return json.dumps(
            bundle, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (UnicodeEncodeError, ValueError):
        raise InputError("bundle holds text that is not valid Unicode") from None


def _plain_json(value: Any) -> bool:
    """Only dicts with ASCII keys, lists, strings, safe integers, booleans and null."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if not all(type(k) is str and k.isascii() for k in item):
                return False
            children: Iterable[Any] = item.values()
        elif type(item) is list:
            children = item
        else:
            return False
        for sub in children:
            kind = type(sub)
            if kind in (dict, list):
                stack.append(sub)
            elif kind is int:
                if abs(sub) > MAX_SAFE_INT:
                    return False
            elif kind not in (str, bool) and sub is not None:
                return False
    return True


def bundle_hash(bundle: Any) -> str:
    """SHA-256 (hex) of the bundle's canonical bytes; what the audit log records."""
    return hashlib.sha256(bundle_bytes(bundle)).hexdigest()


# --- parsing ---------------------------------------------------------------------------


def parse_bundle(data: bytes) -> dict[str, Any]:
    """Strictly parse a bundle file: duplicate keys, floats, NaN and huge integers are
    refused, and the top level and challenge must have exactly their fields. Each
    proof's fields are checked when it is verified, so one bad entry is reported
    against its address instead of refusing the whole file."""
    doc = parse_json_text(utf8_text(data, MAX_BUNDLE_BYTES, "bundle"), "bundle JSON")
    if not isinstance(doc, dict):
        raise InputError("bundle must be a JSON object")
    _exact_fields(doc, BUNDLE_FIELDS, (), "bundle")
    if doc["format"] != BUNDLE_FORMAT:
        raise InputError(f"bundle.format must be {BUNDLE_FORMAT}, got {str(doc['format'])[:40]!r}")
    check_challenge(doc["challenge"])
    if type(doc["signed_at"]) is not int or doc["signed_at"] < 0:
        raise InputError("bundle.signed_at must be unix seconds")
    if not isinstance(doc["date"], str) or not _DATE_RE.fullmatch(doc["date"]):
        raise InputError("bundle.date must be YYYY-MM-DD")
    if not isinstance(doc["proofs"], list):
        raise InputError("bundle.proofs must be a list")
    if doc["checkpoint"] is not None and not isinstance(doc["checkpoint"], dict):
        raise InputError("bundle.checkpoint must be an object")
    return doc


def _exact_fields(obj: dict[str, Any], required: Sequence[str], optional: Sequence[str], where: str) -> None:
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise UnknownFieldError(f"unknown field(s) in {where}: {', '.join(unknown)}")
    missing = sorted(set(required) - set(obj))
    if missing:
        raise InputError(f"missing field(s) in {where}: {', '.join(missing)}")


# --- address lists ---------------------------------------------------------------------


def normalise_address(address: str) -> str:
    """The form addresses are compared in: hex and bech32 addresses are case-insensitive
    (an explorer export may lower-case an EIP-55 address), base58 ones are not."""
    lowered = address.strip().lower()
    if lowered.startswith(("0x", "bc1", "tb1", "bcrt1")):
        return lowered
    return address.strip()


@dataclass(frozen=True)
class ListedAddress:
    address: str
    line: int
    segregation: str | None = None


def parse_address_list(text: str) -> list[ListedAddress]:
    """Addresses an auditor expects proofs for: one per line (blank lines and ``#``
    comments skipped), or CSV with an ``address`` column and optionally a
    ``segregation`` column, as a block-explorer or register export has."""
    lines = text.lstrip("\ufeff").splitlines()
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    header = [h.strip().lower() for h in next(csv.reader([first]))] if first else []
    out: list[ListedAddress] = []
    if "address" in header:
        reader = csv.reader(io.StringIO("\n".join(lines)))
        rows = list(reader)
        start = next(i for i, row in enumerate(rows) if [h.strip().lower() for h in row] == header)
        col = header.index("address")
        seg_col = header.index("segregation") if "segregation" in header else None
        for number, row in enumerate(rows[start + 1 :], start=start + 2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) <= col or not row[col].strip():
                raise InputError(f"address list line {number}: no address")
            segregation = None
            if seg_col is not None and len(row) > seg_col and row[seg_col].strip():
                segregation = check_segregation(
                    row[seg_col].strip(), where=f"address list line {number} segregation"
                )
            out.append(ListedAddress(row[col].strip(), number, segregation))
    elif "," in first:
        raise InputError("address list looks like CSV but has no 'address' column")
    else:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if len(line.split()) != 1:
                raise InputError(f"address list line {number}: one address per line")
            out.append(ListedAddress(line, number))
    if not out:
        raise InputError("address list holds no address")
    return out


# --- verification ----------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Why one address (or the bundle as a whole, when ``address`` is None) failed."""

    reason: str
    address: str | None = None
    chain: str | None = None
    network: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "chain": self.chain,
            "network": self.network,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        where = self.address if self.address is not None else "bundle"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class ChainSummary:
    chain: str
    network: str
    format: str
    verified: int
    failed: int


@dataclass(frozen=True)
class ProofReport:
    """The outcome of verifying a bundle. ``require()`` raises when anything failed."""

    bundle_hash: str
    nonce: str
    entity: str
    deployment: str
    statement: str
    signed_at: int
    date: str
    proofs: int
    verified: int
    summary: tuple[ChainSummary, ...]
    failures: tuple[Failure, ...]
    listed: int | None = None
    checkpoint: dict[str, Any] | None = None
    checkpoint_signature_checked: bool = False
    segregation_counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def require(self) -> None:
        if self.failures:
            shown = "; ".join(str(f) for f in self.failures[:10])
            more = f" (and {len(self.failures) - 10} more)" if len(self.failures) > 10 else ""
            raise VerificationError(f"{len(self.failures)} failure(s): {shown}{more}")

    def to_json(self) -> dict[str, Any]:
        checkpoint = None
        if self.checkpoint is not None:
            found = self.checkpoint.get("checkpoint")
            inner = found if isinstance(found, dict) else {}
            checkpoint = {
                "tree_size": inner.get("tree_size"),
                "root": inner.get("root"),
                "time": inner.get("time"),
                "signature_checked": self.checkpoint_signature_checked,
            }
        return {
            "ok": self.ok,
            "bundle_hash": self.bundle_hash,
            "challenge": self.nonce,
            "entity": self.entity,
            "deployment": self.deployment,
            "statement": self.statement,
            "signed_at": self.signed_at,
            "date": self.date,
            "proofs": self.proofs,
            "verified": self.verified,
            "failed": self.proofs - self.verified,
            "listed_addresses": self.listed,
            "checkpoint": checkpoint,
            "segregation": dict(sorted(self.segregation_counts.items())),
            "by_chain": [
                {
                    "chain": s.chain,
                    "network": s.network,
                    "format": s.format,
                    "verified": s.verified,
                    "failed": s.failed,
                }
                for s in self.summary
            ],
            "failures": [f.to_json() for f in self.failures],
        }


def check_proof(entry: Any, *, entity: str, nonce: str, date: str) -> str | None:
    """Why one bundle entry is not a valid proof for this challenge, or None if it is."""
    try:
        return _check_proof(entry, entity=entity, nonce=nonce, date=date)
    except Error as exc:
        return exc.message
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        # Hostile input must produce a reason, never stop the verification.
        return f"malformed proof ({type(exc).__name__})"


_PROOF_KEYS = frozenset(PROOF_FIELDS)
_PROOF_KEYS_WITH_PAYLOAD = frozenset((*PROOF_FIELDS, "payload_hex"))


def _shape_reason(entry: dict[str, Any]) -> str | None:
    """Why an entry does not have a proof's fields, all strings; None if it does."""
    keys = entry.keys()
    # The usual answer in one comparison; anything else is examined field by field.
    if keys in (_PROOF_KEYS, _PROOF_KEYS_WITH_PAYLOAD) and all(type(v) is str for v in entry.values()):
        return None
    optional = ("payload_hex",)
    unknown = sorted(set(entry) - set(PROOF_FIELDS) - set(optional))
    missing = sorted(set(PROOF_FIELDS) - set(entry))
    if unknown or missing:
        return (
            f"unknown field(s) {', '.join(unknown)}" if unknown else f"missing field(s) {', '.join(missing)}"
        )
    for key in (*PROOF_FIELDS, *(k for k in optional if k in entry)):
        if not isinstance(entry[key], str):
            return f"{key} must be a string"
    return None


def _check_proof(entry: Any, *, entity: str, nonce: str, date: str) -> str | None:
    if not isinstance(entry, dict):
        return "proof entry is not an object"
    shape = _shape_reason(entry)
    if shape is not None:
        return shape
    chain_name, fmt = entry["chain"], entry["format"]
    if chain_name not in FORMATS_BY_CHAIN:
        return f"unknown chain {chain_name[:20]!r}"
    if fmt not in FORMATS_BY_CHAIN[chain_name]:
        return f"format {fmt[:30]!r} is not a {chain_name} proof format"
    if fmt == "solana-offchain-v0" and "payload_hex" not in entry:
        return "a solana-offchain-v0 proof must carry payload_hex"
    if fmt != "solana-offchain-v0" and "payload_hex" in entry:
        return "payload_hex belongs to solana-offchain-v0 proofs only"
    try:
        segregation = check_segregation(entry["segregation"])
    except InputError as exc:
        return exc.message
    expected = render_message(
        entity=entity, address=entry["address"], segregation=segregation, nonce=nonce, date=date
    )
    if entry["message"] != expected:
        return "message text is not the challenge's template for this address and class"
    try:
        public_key = bytes.fromhex(entry["public_key"])
    except ValueError:
        return "public_key is not hex"
    proof = MessageProof(fmt, entry["signature"], entry.get("payload_hex"))
    # Given the public key, the chain checks it is the address's key (hash160, keccak or
    # the key itself) and that the signature is by it; the address is decoded there, once.
    get_chain(chain_name).verify_message(
        entry["address"], entry["message"], proof, entry["network"], public_key=public_key
    )
    return None


def _check_chunk(entity: str, nonce: str, date: str, entries: list[Any]) -> list[str | None]:
    return [check_proof(e, entity=entity, nonce=nonce, date=date) for e in entries]


# A runner maps a function over chunks and yields the results in order: in this
# process by default; the CLI hands in one that uses worker processes.
Reasons = list[str | None]
ChunkRunner = Callable[[Callable[[list[Any]], Reasons], Sequence[list[Any]]], Iterable[Reasons]]


def _in_process(fn: Callable[[list[Any]], Reasons], chunks: Sequence[list[Any]]) -> Iterator[Reasons]:
    return (fn(chunk) for chunk in chunks)


def check_proofs(
    entries: Sequence[Any],
    *,
    entity: str,
    nonce: str,
    date: str,
    run_chunks: ChunkRunner | None = None,
    progress: Callable[[int, int], None] | None = None,
    meanwhile: Callable[[], None] | None = None,
    each: Callable[[int, Reasons], None] | None = None,
) -> list[str | None]:
    """Verify every entry's signature and text, chunk by chunk through ``run_chunks``; one
    reason or None per entry, in order. The result never depends on the runner.
    ``meanwhile`` is called once, after the first chunk is back: work for this process
    while a runner's workers go on with the rest; ``each`` gets every chunk's reasons, in
    order, with the index of its first entry, as it comes back."""
    total = len(entries)
    chunks = [list(entries[start : start + CHUNK_SIZE]) for start in range(0, total, CHUNK_SIZE)]
    run = run_chunks or _in_process
    results: list[str | None] = []
    outcomes = run(functools.partial(_check_chunk, entity, nonce, date), chunks)
    for chunk, checked in zip(chunks, outcomes, strict=True):
        if len(checked) != len(chunk):
            raise RuntimeError("a chunk came back with another number of results")
        if each is not None:
            each(len(results), checked)
        results.extend(checked)
        if meanwhile is not None:
            meanwhile()
            meanwhile = None
        if progress is not None:
            progress(len(results), total)
    if meanwhile is not None:
        meanwhile()
    return results


def verify_bundle(
    bundle: Mapping[str, Any],
    *,
    nonce: str,
    addresses: Sequence[ListedAddress] | None = None,
    entity: str | None = None,
    service_public_key: bytes | None = None,
    run_chunks: ChunkRunner | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ProofReport:
    """Verify a parsed bundle offline against the challenge nonce the auditor issued.

    Checks: the nonce; that proofs were signed inside the challenge's lifetime and the
    date in the text is that day; each proof's text is the template for its address,
    class, nonce and date, and its signature verifies in its chain's format by the key
    it names; no address is proved twice; no address or key is both own and
    client-segregated; every address of ``addresses`` has a valid proof (and the class
    the register gives it). With ``service_public_key`` the audit checkpoint's signature
    is checked too. Failures are collected, never raised: see :meth:`ProofReport.require`.
    """
    if not isinstance(bundle, Mapping) or not isinstance(bundle.get("challenge"), Mapping):
        raise InputError("not a proof bundle: expected an object with a challenge and proofs")
    challenge = bundle["challenge"]
    proofs: list[Any] = list(bundle["proofs"]) if isinstance(bundle.get("proofs"), list) else []
    failures = _challenge_failures(bundle, challenge, nonce=nonce, entity=entity)
    checkpoint = bundle["checkpoint"]
    if not proofs:
        failures.append(Failure("bundle holds no proof"))
    if checkpoint is None:
        failures.append(Failure("bundle carries no audit checkpoint"))
    else:
        failures.extend(_check_checkpoint(checkpoint, challenge, service_public_key))
    checkpoint_checked = checkpoint is not None and service_public_key is not None

    # Messages are checked against the nonce the auditor gave, not the bundle's own.
    date = bundle["date"]
    # The hash, and each chunk's tally, are done here while worker processes verify.
    hashed: list[str] = []
    tally = _ProofTally()

    def count(start: int, checked: Reasons) -> None:
        for index, reason in enumerate(checked, start):
            failures.extend(tally.add(index, proofs[index], reason))

    reasons = check_proofs(
        proofs,
        entity=challenge["entity"],
        nonce=nonce,
        date=date,
        run_chunks=run_chunks,
        progress=progress,
        meanwhile=lambda: hashed.append(bundle_hash(bundle)),
        each=count,
    )
    if len(reasons) != len(proofs):
        raise RuntimeError("verification returned another number of results than proofs")
    failures.extend(
        _segregation_failures(proofs, tally.valid_by_address, tally.classes_by_address, tally.classes_by_key)
    )
    if addresses is not None:
        failures.extend(_listed_failures(proofs, addresses, tally.valid_by_address, tally.reason_by_address))

    return ProofReport(
        bundle_hash=hashed[0],
        nonce=challenge["nonce"],
        entity=challenge["entity"],
        deployment=challenge["deployment"],
        statement=challenge["statement"],
        signed_at=bundle["signed_at"],
        date=date,
        proofs=len(proofs),
        verified=sum(t[0] for t in tally.tallies.values()),
        summary=tuple(ChainSummary(c, n, f, v, x) for (c, n, f), (v, x) in sorted(tally.tallies.items())),
        failures=tuple(failures),
        listed=None if addresses is None else len(addresses),
        checkpoint=checkpoint,
        checkpoint_signature_checked=checkpoint_checked,
        segregation_counts=tally.seg_counts,
    )


def _challenge_failures(
    bundle: Mapping[str, Any], challenge: Mapping[str, Any], *, nonce: str, entity: str | None
) -> list[Failure]:
    """The bundle answers this challenge, for this entity, signed within its lifetime,
    dated on the day it was signed, with this verifier's message template."""
    failures: list[Failure] = []
    bundle_nonce = challenge["nonce"]
    if bundle_nonce != nonce:
        failures.append(Failure(f"bundle answers challenge {bundle_nonce!r}, not {nonce!r}"))
    if entity is not None and challenge["entity"] != entity:
        failures.append(Failure(f"bundle names entity {challenge['entity']!r}, not {entity!r}"))
    signed_at, date = bundle["signed_at"], bundle["date"]
    if signed_at < challenge["created_at"]:
        failures.append(Failure("proofs are dated before the challenge was issued"))
    if signed_at > challenge["expires_at"]:
        failures.append(
            Failure(
                f"proofs were signed after the challenge expired "
                f"({utc_time(signed_at)} > {utc_time(challenge['expires_at'])})"
            )
        )
    if date != utc_date(signed_at):
        failures.append(Failure(f"bundle date {date} is not the UTC day of signed_at"))
    if bundle["message_template"] != MESSAGE_TEMPLATE:
        failures.append(Failure("message_template is not this verifier's template"))
    return failures


class _ProofTally:
    """Each proof's verdict, in bundle order: an address proved a second time fails, and
    every valid proof is counted by chain, network and format, by class, by address and
    by key, for the segregation and listed-address checks that follow."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, str], int] = {}
        self.classes_by_address: dict[str, set[str]] = {}
        self.classes_by_key: dict[str, set[str]] = {}
        self.valid_by_address: dict[str, list[int]] = {}
        self.reason_by_address: dict[str, str] = {}
        self.tallies: dict[tuple[str, str, str], list[int]] = {}
        self.seg_counts: dict[str, int] = {}

    def add(self, index: int, entry: Any, reason: str | None) -> list[Failure]:
        if not isinstance(entry, dict):
            return [Failure(f"proof {index}: {reason}")]
        chain = _text(entry.get("chain"))
        network = _text(entry.get("network"))
        address = _text(entry.get("address")) or f"(proof {index})"
        norm = normalise_address(address)
        key = (chain, network, norm)
        if reason is None and key in self.seen:
            reason = f"proved twice (also proof {self.seen[key]})"
        self.seen.setdefault(key, index)
        tally = self.tallies.setdefault((chain, network, _text(entry.get("format"))), [0, 0])
        if reason is not None:
            tally[1] += 1
            self.reason_by_address.setdefault(norm, reason)
            return [Failure(reason, address, chain, network)]
        tally[0] += 1
        segregation = entry["segregation"]
        self.seg_counts[segregation] = self.seg_counts.get(segregation, 0) + 1
        self.classes_by_address.setdefault(norm, set()).add(segregation)
        self.classes_by_key.setdefault(entry["public_key"].lower(), set()).add(segregation)
        self.valid_by_address.setdefault(norm, []).append(index)
        return []


def utc_time(unix_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_seconds))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _check_checkpoint(
    checkpoint: dict[str, Any], challenge: Mapping[str, Any], service_public_key: bytes | None
) -> list[Failure]:
    from tandem.core.audit import verify_checkpoint

    inner = checkpoint.get("checkpoint")
    if not isinstance(inner, dict):
        return [Failure("checkpoint is malformed")]
    if inner.get("deployment") != challenge["deployment"]:
        return [Failure("checkpoint is for another deployment than the challenge")]
    if service_public_key is not None:
        try:
            verify_checkpoint(checkpoint, service_public_key)
        except Error as exc:
            return [Failure(f"checkpoint: {exc.message}")]
    return []


def _segregation_failures(
    proofs: Sequence[Any],
    valid_by_address: Mapping[str, list[int]],
    classes_by_address: Mapping[str, set[str]],
    classes_by_key: Mapping[str, set[str]],
) -> list[Failure]:
    """Own and client assets must never share an address or a key."""
    out: list[Failure] = []
    for norm, classes in classes_by_address.items():
        if len(classes) > 1:
            entry = proofs[valid_by_address[norm][0]]
            named = ", ".join(sorted(classes))
            out.append(
                Failure(
                    f"appears under more than one segregation class ({named}); "
                    "own and client addresses must be disjoint",
                    entry["address"],
                    entry["chain"],
                    entry["network"],
                )
            )
    mixed_keys = {k for k, classes in classes_by_key.items() if len(classes) > 1}
    if mixed_keys:
        flagged = {f.address for f in out}
        for indexes in valid_by_address.values():
            for index in indexes:
                entry = proofs[index]
                if entry["public_key"].lower() in mixed_keys and entry["address"] not in flagged:
                    named = ", ".join(sorted(classes_by_key[entry["public_key"].lower()]))
                    out.append(
                        Failure(
                            f"its key also signs under another segregation class ({named}); "
                            "own and client keys must be disjoint",
                            entry["address"],
                            entry["chain"],
                            entry["network"],
                        )
                    )
    return out


def _listed_failures(
    proofs: Sequence[Any],
    addresses: Sequence[ListedAddress],
    valid_by_address: Mapping[str, list[int]],
    reason_by_address: Mapping[str, str],
) -> list[Failure]:
    out: list[Failure] = []
    for listed in addresses:
        norm = normalise_address(listed.address)
        indexes = valid_by_address.get(norm)
        if not indexes:
            why = reason_by_address.get(norm)
            reason = (
                f"listed (line {listed.line}) but its proof failed: {why}"
                if why
                else f"listed (line {listed.line}) but the bundle has no proof for it"
            )
            out.append(Failure(reason, listed.address))
            continue
        if listed.segregation is not None:
            classes = {proofs[i]["segregation"] for i in indexes}
            if listed.segregation not in classes:
                out.append(
                    Failure(
                        f"the list (line {listed.line}) says {listed.segregation}, the proof says "
                        f"{', '.join(sorted(classes))}",
                        listed.address,
                    )
                )
    return out
