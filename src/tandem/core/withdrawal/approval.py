"""What a member's approval of a withdrawal signs, and the share it carries."""

from __future__ import annotations

import hashlib
from typing import Any

from tandem.core.canonical import (
    check_fields,
)
from tandem.core.identity import unb64
from tandem.errors import (
    InputError,
)

# --- approvals -------------------------------------------------------------------------

APPROVAL_FIELDS = ("withdrawal", "intent_hash", "tx_digest", "policy_version", "expires_at")
SHARE_FIELDS = ("operation", "share_digest")


def approval_body(
    *,
    withdrawal: str,
    intent_hash_hex: str,
    tx_digest_hex: str,
    policy_version: int,
    expires_at: int,
    operation: str | None = None,
    share_digest: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "withdrawal": withdrawal,
        "intent_hash": intent_hash_hex,
        "tx_digest": tx_digest_hex,
        "policy_version": policy_version,
        "expires_at": expires_at,
    }
    if operation is not None:
        body.update(operation=operation, share_digest=share_digest)
    return body


def parse_approval(body: Any) -> dict[str, Any]:
    check_fields(body, required=APPROVAL_FIELDS, optional=SHARE_FIELDS, where="approval")
    for key in ("withdrawal", "intent_hash", "tx_digest"):
        if not isinstance(body[key], str):
            raise InputError(f"approval.{key} must be a string")
    for key in ("policy_version", "expires_at"):
        if isinstance(body[key], bool) or not isinstance(body[key], int):
            raise InputError(f"approval.{key} must be an integer")
    if ("operation" in body) != ("share_digest" in body):
        raise InputError("approval.operation and approval.share_digest come together")
    return body  # type: ignore[no-any-return]


def share_digest(sealed_b64: str) -> str:
    """Binds a resealed share (sent beside the envelope, never logged) to the signed action."""
    return hashlib.sha256(unb64(sealed_b64, what="sealed_share")).hexdigest()
