"""Signed action envelopes: the one way anything changes state in Tandem.

An action is ``{type, deployment, actor, body, nonce, issued_at}``. Its signing bytes
are ``domain_bytes("action", action)``: RFC 8785 canonical JSON behind a domain
prefix, so the signature covers the type (no cross-type replay), the deployment (no
cross-deployment replay), the actor, the body (request ids and digests live there)
and a nonce the store accepts exactly once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tandem.core.canonical import check_fields, domain_bytes
from tandem.core.identity import b64, unb64, verify_ed25519
from tandem.errors import (
    BadSignatureError,
    InputError,
    StaleActionError,
    WrongActionTypeError,
    WrongDeploymentError,
)

ACTION_FIELDS = ("type", "deployment", "actor", "body", "nonce", "issued_at")
ENVELOPE_FIELDS = ("action", "signature")
TYPE_RE = re.compile(r"^[a-z]+(\.[a-z_]+)+$")
NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
ACTOR_RE = re.compile(r"^mem_[0-9a-f]{20}$")
# How far an action's issued_at may lie from the server's clock.
MAX_AGE_SECONDS = 300
MAX_FUTURE_SECONDS = 60


class Signer(Protocol):
    @property
    def member_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class SignedAction:
    type: str
    deployment: str
    actor: str
    body: Mapping[str, Any]
    nonce: str
    issued_at: int
    signature: bytes

    def action(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "deployment": self.deployment,
            "actor": self.actor,
            "body": dict(self.body),
            "nonce": self.nonce,
            "issued_at": self.issued_at,
        }

    def signing_bytes(self) -> bytes:
        return domain_bytes("action", self.action())

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action(), "signature": b64(self.signature)}

    def verify(self, public_key: bytes) -> None:
        verify_ed25519(public_key, self.signing_bytes(), self.signature, what=f"action {self.type}")

    def verifies_with(self, public_key: bytes) -> bool:
        """Whether ``public_key`` made this signature (to name a refusal, never to accept)."""
        try:
            self.verify(public_key)
        except BadSignatureError:
            return False
        return True


def sign_action(
    signer: Signer,
    *,
    type: str,
    deployment: str,
    body: Mapping[str, Any],
    issued_at: int,
    nonce: str | None = None,
) -> SignedAction:
    unsigned = SignedAction(
        type=type,
        deployment=deployment,
        actor=signer.member_id,
        body=dict(body),
        nonce=nonce or os.urandom(16).hex(),
        issued_at=issued_at,
        signature=b"",
    )
    _check_shape(unsigned)
    sig = signer.sign(unsigned.signing_bytes())
    return SignedAction(**{**unsigned.__dict__, "signature": sig})


def parse_envelope(doc: Any) -> SignedAction:
    """Strictly parse an envelope (already strict-JSON-decoded)."""
    check_fields(doc, required=ENVELOPE_FIELDS, where="envelope")
    action = check_fields(doc["action"], required=ACTION_FIELDS, where="action")
    if not isinstance(action["body"], dict):
        raise InputError("action.body must be an object")
    for key in ("type", "deployment", "actor", "nonce"):
        if not isinstance(action[key], str):
            raise InputError(f"action.{key} must be a string")
    if isinstance(action["issued_at"], bool) or not isinstance(action["issued_at"], int):
        raise InputError("action.issued_at must be an integer (unix seconds)")
    if not isinstance(doc["signature"], str):
        raise InputError("envelope.signature must be base64")
    sig = unb64(doc["signature"], what="envelope.signature")
    if len(sig) != 64:
        raise InputError("envelope.signature must be a 64-byte Ed25519 signature")
    signed = SignedAction(
        type=action["type"],
        deployment=action["deployment"],
        actor=action["actor"],
        body=action["body"],
        nonce=action["nonce"],
        issued_at=action["issued_at"],
        signature=sig,
    )
    _check_shape(signed)
    return signed


def _check_shape(action: SignedAction) -> None:
    if not TYPE_RE.fullmatch(action.type):
        raise InputError("action.type is not a known form")
    if not ACTOR_RE.fullmatch(action.actor):
        raise InputError("action.actor must be a member id (mem_ and 20 hex characters)")
    if not NONCE_RE.fullmatch(action.nonce):
        raise InputError("action.nonce must be 32 lowercase hex characters")


def check_context(
    action: SignedAction,
    *,
    expected_type: str | frozenset[str],
    deployment: str,
    now: int,
) -> None:
    """Type, deployment and freshness. The signature and nonce are checked by the caller,
    who knows the actor's key and owns the nonce store."""
    allowed = {expected_type} if isinstance(expected_type, str) else set(expected_type)
    if action.type not in allowed:
        raise WrongActionTypeError(
            f"action of type {action.type!r} presented where {' or '.join(sorted(allowed))} is required"
        )
    if action.deployment != deployment:
        raise WrongDeploymentError("action was signed for another deployment")
    if action.issued_at < now - MAX_AGE_SECONDS:
        raise StaleActionError(
            f"action was issued {now - action.issued_at} s ago (limit {MAX_AGE_SECONDS} s)"
        )
    if action.issued_at > now + MAX_FUTURE_SECONDS:
        raise StaleActionError("action is issued in the future; check the signer's clock")
