"""Request and response schemas (separate from tables). Unknown fields are refused."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(Strict):
    code: str = Field(description="Stable machine-readable error code")
    message: str = Field(description="What went wrong, for a person")
    details: dict[str, Any] | None = None


class EnvelopeIn(Strict):
    envelope: dict[str, Any] = Field(description="Signed action envelope {action, signature}")


class ApprovalIn(Strict):
    envelope: dict[str, Any]
    totp: str = Field(
        description="Current 6-digit TOTP code of the approver", min_length=6, max_length=6
    )


class TotpEnrolIn(Strict):
    envelope: dict[str, Any]
    confirm_code: str = Field(min_length=6, max_length=6, description="A code from the new seed")
    totp: str | None = Field(
        default=None, description="Current code of the old seed, when replacing one"
    )


class GenesisIn(Strict):
    genesis: dict[str, Any]
    signatures: dict[str, str]


class Health(Strict):
    status: str
    sealed: bool
    reason: str | None = None
