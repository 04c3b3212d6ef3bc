"""A key set's export: the public record one deployment hands another for import.

An export carries the sealed key-set record, its keys, addresses and birth proofs, and
the hash of the ceremony transcript that made it. :func:`check_export` verifies all of
it offline from public data; opening a share still needs a manager and a custodian.
"""

from __future__ import annotations

from typing import Any

from tandem.core import keygen, split
from tandem.core.canonical import check_fields, digest_hex
from tandem.core.ceremony import verify_birth_proofs
from tandem.errors import InputError, VerificationError

EXPORT_FORMAT = "tandem-keyset-export/1"
_EXPORT_FIELDS = (
    "format",
    "deployment",
    "entity",
    "keyset",
    "sealed",
    "keys",
    "addresses",
    "transcript_hash",
    "exported_at",
)
EXPORT_KEYSET_FIELDS = (
    "id",
    "ceremony",
    "curve",
    "segregation",
    "status",
    "generation",
    "created_at",
)


def export_hash(doc: Any) -> str:
    return digest_hex("keyset-export", doc)


def check_export(doc: Any) -> split.SealedKeyset:  # noqa: C901 - one check per part of the export, in order
    """Check an export's public data offline: the sealed record parses and lists exactly
    the exported keys, every address derives from its key and its birth proof verifies.
    Nothing here can open a share; that needs a manager and a custodian."""
    top = check_fields(doc, required=_EXPORT_FIELDS, where="export")
    if top["format"] != EXPORT_FORMAT:
        raise InputError(f"export.format must be {EXPORT_FORMAT!r}")
    ks = check_fields(top["keyset"], required=EXPORT_KEYSET_FIELDS, where="export.keyset")
    for name in ("id", "ceremony", "curve", "segregation", "status"):
        if not isinstance(ks[name], str) or not 0 < len(ks[name]) <= 64:
            raise InputError(f"export.keyset.{name} must be a short string")
    for name in ("generation", "created_at"):
        if isinstance(ks[name], bool) or not isinstance(ks[name], int) or ks[name] < 1:
            raise InputError(f"export.keyset.{name} must be a positive integer")
    if ks["curve"] not in keygen.CURVES:
        raise InputError("export.keyset.curve is not a known curve")
    sealed = split.SealedKeyset.from_dict(top["sealed"])
    problems: list[str] = []
    if sealed.keyset_id != ks["id"]:
        problems.append("the sealed record is for another key set")
    keys = top["keys"] if isinstance(top["keys"], list) else []
    listed = {}
    for i, k in enumerate(keys):
        try:
            entry = check_fields(
                k, required=("key_id", "position", "curve", "public_key"), where=f"export.keys[{i}]"
            )
        except InputError as exc:
            problems.append(exc.message)
            continue
        if (
            not isinstance(entry["key_id"], str)
            or len(entry["key_id"]) > 64
            or entry["curve"] != ks["curve"]
            or isinstance(entry["position"], bool)
            or not isinstance(entry["position"], int)
        ):
            problems.append(f"keys[{i}] is malformed")
            continue
        listed[entry["key_id"]] = entry["public_key"]
    if listed != {k.key_id: k.public_key.hex() for k in sealed.keys}:
        problems.append("keys differ from the keys in the sealed record")
    addresses = top["addresses"] if isinstance(top["addresses"], list) else []
    for i, a in enumerate(addresses):
        if not isinstance(a, dict) or listed.get(str(a.get("key_id"))) != a.get("public_key"):
            problems.append(f"addresses[{i}]: not an address of an exported key")
        elif a.get("segregation") != ks["segregation"]:
            problems.append(f"addresses[{i}]: segregation differs from the key set's")
    verify_birth_proofs(addresses, problems=problems, expected_message=_proof_message_naming)
    if problems:
        raise VerificationError(
            "the key-set export does not verify: " + "; ".join(problems),
            details={"problems": problems},
        )
    return sealed


def _proof_message_naming(a: dict[str, Any]) -> str:
    """The stored message, provided it names this address and segregation class."""
    message = (
        str(a.get("birth_proof", {}).get("message", "")) if isinstance(a.get("birth_proof"), dict) else ""
    )
    lines = message.split("\n")
    if f"Address: {a['address']}" in lines and f"Segregation: {a['segregation']}" in lines:
        return message
    return "\x00(a birth proof naming this address and segregation class)"
