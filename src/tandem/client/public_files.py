"""Files an auditor fetches without a session, and their offline check (ADR 0012).

Nothing here needs a keystore: the server's answer is written as it came, and then
verified against what the auditor trusts, a :class:`~tandem.client.pin.PinnedDeployment`
made from the signed genesis file and its hash (communicated out of band) or read from
a pin file. The service key comes from that genesis, never from the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.client.pin import PinnedDeployment
from tandem.client.transport import Transport
from tandem.core import audit, merkle
from tandem.core.canonical import canonical, loads_strict
from tandem.errors import InputError, PinError, VerificationError

PREFIX = "/v1/public"
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Fetch:
    """One public file: what it is, where it is served, and what names it."""

    kind: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)


def checkpoint(tree_size: int | None = None) -> Fetch:
    return Fetch("checkpoint", f"{PREFIX}/checkpoint", _sized(tree_size))


def inclusion(index: int, tree_size: int | None = None) -> Fetch:
    if index < 0:
        raise InputError("an entry index is 0 or more")
    return Fetch("inclusion", f"{PREFIX}/inclusion/{index}", _sized(tree_size))


def consistency(old: int, new: int) -> Fetch:
    return Fetch("consistency", f"{PREFIX}/consistency", {"old": old, "new": new})


def proofs(challenge_id: str) -> Fetch:
    return Fetch("proofs", f"{PREFIX}/proofs/{_plain_id(challenge_id, 'pc_')}/bundle")


def transcript(ceremony_id: str) -> Fetch:
    return Fetch("transcript", f"{PREFIX}/ceremonies/{_plain_id(ceremony_id, 'cer_')}/transcript")


class PublicFiles:
    """``client.public_files``: the files served without a session."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def download(self, what: Fetch, out: Path) -> bytes:
        """GET the file with no session and write it to ``out`` as canonical JSON (for a
        bundle, the very bytes whose SHA-256 the audit log records)."""
        doc = self._client.request("GET", what.path, params=what.params or None)
        if not isinstance(doc, dict):
            raise VerificationError(f"the server answered something other than a {what.kind} file")
        data = canonical(doc)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        return data


# --- trust ---------------------------------------------------------------------------------


def trust_from(
    *, genesis_hash: str | None, genesis_file: Path | None, pin_file: Path | None
) -> PinnedDeployment | None:
    """What the offline check trusts, or None when nothing was given (then the file is
    written unverified). The genesis hash alone does not name the service key: it
    takes the genesis document that hashes to it, or a pin file made from one."""
    if pin_file is not None:
        pin = PinnedDeployment.from_json(_read(pin_file), path=pin_file)
        if genesis_hash is not None and pin.genesis_hash != genesis_hash.strip().lower():
            raise PinError(f"{pin_file} pins genesis {pin.genesis_hash}, not the --genesis-hash given")
        return pin
    if genesis_file is not None:
        if genesis_hash is None:
            raise InputError("--genesis needs --genesis-hash: the hash you were told by another channel")
        from tandem.core.membership import check_genesis

        doc = _read(genesis_file)
        genesis = doc.get("genesis", doc) if isinstance(doc, dict) else doc
        if isinstance(doc, dict) and "signatures" in doc:
            check_genesis(genesis, doc["signatures"])
        return PinnedDeployment.from_genesis(genesis, expect_hash=genesis_hash)
    if genesis_hash is not None:
        raise InputError(
            "the genesis hash names the service key only through the genesis document: add "
            "--genesis genesis.json (the signed genesis you were given), or use --pin FILE"
        )
    return None


# --- the offline checks --------------------------------------------------------------------


def verify(kind: str, data: bytes, pin: PinnedDeployment, *, nonce: str | None = None) -> list[str]:
    """Check a fetched file against ``pin``; the lines say what was checked. Raises a
    :class:`VerificationError` (or a subclass) naming what does not verify."""
    doc = loads_strict(data, max_bytes=MAX_FILE_BYTES)
    if not isinstance(doc, dict):
        raise VerificationError(f"a {kind} file is a JSON object")
    checks = {
        "checkpoint": _verify_checkpoint,
        "inclusion": _verify_inclusion,
        "consistency": _verify_consistency,
        "transcript": _verify_transcript,
    }
    if kind == "proofs":
        return _verify_bundle(data, pin, nonce)
    if kind not in checks:
        raise InputError(f"no offline check for {kind!r}")
    return checks[kind](doc, pin)


def _signed_head(doc: Any, pin: PinnedDeployment, what: str) -> dict[str, Any]:
    head = audit.verify_checkpoint(doc, pin.sign_public)
    if head["deployment"] != pin.deployment:
        raise VerificationError(
            f"{what} is of deployment {head['deployment']}, not the pinned {pin.deployment}"
        )
    return head


def _verify_checkpoint(doc: dict[str, Any], pin: PinnedDeployment) -> list[str]:
    head = _signed_head(doc, pin, "the checkpoint")
    return [
        f"checkpoint of {head['tree_size']} entries, root {head['root']}",
        f"signed by the service key {audit.key_id(pin.sign_public)} of genesis {pin.genesis_hash}",
    ]


def _verify_inclusion(doc: dict[str, Any], pin: PinnedDeployment) -> list[str]:
    index, size = _int(doc, "index"), _int(doc, "tree_size")
    head = _signed_head(doc.get("checkpoint"), pin, "the inclusion proof's checkpoint")
    if head["tree_size"] != size:
        raise VerificationError(f"the proof is for a tree of {size}, its checkpoint for {head['tree_size']}")
    leaf = _hex32(doc.get("leaf_hash"), "leaf_hash")
    merkle.verify_inclusion(leaf, index, size, _path(doc.get("proof")), bytes.fromhex(head["root"]))
    return [
        f"entry {index} (hash {leaf.hex()}) is in the tree of {size} entries, root {head['root']}",
        f"checkpoint signed by the service key {audit.key_id(pin.sign_public)} of genesis {pin.genesis_hash}",
        "compare the entry's own hash field with the hash above to tie it to an entry you hold",
    ]


def _verify_consistency(doc: dict[str, Any], pin: PinnedDeployment) -> list[str]:
    old, new = _int(doc, "old_size"), _int(doc, "new_size")
    a = _signed_head(doc.get("old_checkpoint"), pin, "the old checkpoint")
    b = _signed_head(doc.get("new_checkpoint"), pin, "the new checkpoint")
    if (a["tree_size"], b["tree_size"]) != (old, new):
        raise VerificationError("the checkpoints are not of the sizes the proof names")
    merkle.verify_consistency(
        old, new, bytes.fromhex(a["root"]), bytes.fromhex(b["root"]), _path(doc.get("proof"))
    )
    return [f"the tree of {new} entries extends the tree of {old} without rewriting it"]


def _verify_bundle(data: bytes, pin: PinnedDeployment, nonce: str | None) -> list[str]:
    from tandem.core import proofs as proofs_core

    bundle = proofs_core.parse_bundle(data)
    challenge = bundle["challenge"]
    if challenge.get("deployment") != pin.deployment:
        raise VerificationError(
            f"the bundle is of deployment {challenge.get('deployment')}, not {pin.deployment}"
        )
    report = proofs_core.verify_bundle(
        bundle,
        nonce=nonce if nonce is not None else str(challenge["nonce"]),
        entity=pin.entity,
        service_public_key=pin.sign_public,
    )
    if not report.ok:
        raise VerificationError(
            f"the bundle does not verify: {len(report.failures)} problem(s); first: {report.failures[0]}"
        )
    lines = [
        f"{report.verified} proofs verify; entity {report.entity}; bundle sha256 {report.bundle_hash}",
        f"its audit checkpoint is signed by the service key of genesis {pin.genesis_hash}",
    ]
    if nonce is None:
        lines.append("nonce taken from the bundle: pass --challenge with the one you issued to check it")
    return lines


def _verify_transcript(doc: dict[str, Any], pin: PinnedDeployment) -> list[str]:
    from tandem.core import ceremony as ceremony_core

    if doc.get("deployment") != pin.deployment:
        raise VerificationError(
            f"the transcript is of deployment {doc.get('deployment')}, not {pin.deployment}"
        )
    report = ceremony_core.verify_transcript(doc)
    report.require(complete=True)
    return [
        *report.checked,
        f"transcript of ceremony {report.ceremony} verifies, hash {report.transcript_hash}",
    ]


# --- helpers -------------------------------------------------------------------------------


def _sized(tree_size: int | None) -> dict[str, Any]:
    if tree_size is not None and tree_size < 1:
        raise InputError("a tree size is 1 or more")
    return {} if tree_size is None else {"tree_size": tree_size}


def _plain_id(value: str, prefix: str) -> str:
    if not value.startswith(prefix) or not value[len(prefix) :].isalnum() or not value.isascii():
        raise InputError(f"expected an id starting {prefix} followed by letters and digits, not {value!r}")
    return value


def _read(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return loads_strict(data, max_bytes=MAX_FILE_BYTES)


def _int(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:
        raise VerificationError(f"{name} must be a non-negative integer")
    return value


def _hex32(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise VerificationError(f"{name} must be 64 hex characters")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise VerificationError(f"{name} must be 64 hex characters") from None


def _path(value: Any) -> Sequence[bytes]:
    if not isinstance(value, list) or len(value) > 64:
        raise VerificationError("proof must be a list of at most 64 hashes")
    return [_hex32(p, "each proof hash") for p in value]
