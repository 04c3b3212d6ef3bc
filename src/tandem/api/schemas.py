"""Request and response schemas (separate from tables). Unknown fields are refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tandem.errors import InputError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def same_subject(envelope: dict[str, Any], key: str, path_id: str) -> None:
    """The object a signed action names must be the one in the URL: a signature over
    one request can never be posted against another."""
    action = envelope.get("action")
    body = action.get("body") if isinstance(action, dict) else None
    if not isinstance(body, dict) or body.get(key) != path_id:
        raise InputError(f"the signed action's {key} does not match the URL")


class ErrorBody(Strict):
    code: str = Field(description="Stable machine-readable error code")
    message: str = Field(description="What went wrong, for a person")
    details: dict[str, Any] | None = None


class EnvelopeIn(Strict):
    envelope: dict[str, Any] = Field(description="Signed action envelope {action, signature}")


class ApprovalIn(Strict):
    envelope: dict[str, Any]
    totp: str = Field(description="Current 6-digit TOTP code of the approver", min_length=6, max_length=6)


class TotpEnrolIn(Strict):
    envelope: dict[str, Any]
    confirm_code: str = Field(min_length=6, max_length=6, description="A code from the new seed")
    totp: str | None = Field(default=None, description="Current code of the old seed, when replacing one")


class GenesisIn(Strict):
    genesis: dict[str, Any]
    signatures: dict[str, str]


class Health(Strict):
    status: str
    sealed: bool
    reason: str | None = None
    # Only when sealed: the stable code of the start-up check that sealed signing.
    code: str | None = None
