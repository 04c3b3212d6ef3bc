"""The one-time claim token of a fresh server (THREATS 23).

``tandem init`` makes a random token, prints it once to the operator and keeps only its
SHA-256 in ``claim.json`` in the data directory. ``POST /v1/genesis`` must present it
(header ``X-Tandem-Claim-Token``); it is compared in constant time and consumed by the
genesis that succeeds. Without it, whoever reaches a fresh server first cannot make it
theirs.

Refused claims happen before any deployment (and so before any audit log) exists. They
are counted here, in a record of fixed size (count, first and last time, count per
code; never the token presented), and the genesis that succeeds writes that record to
the audit log as one ``deployment.claim.refused`` entry. An unauthenticated caller can
therefore grow neither this file nor the log by more than a bounded amount (THREATS 33).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.errors import ClaimTokenError, ClaimTokenRequiredError, ConfigurationError

CLAIM_FILE = "claim.json"
CLAIM_FORMAT = "tandem-claim/1"
TOKEN_PREFIX = "tclaim_"  # noqa: S105 - a label, not a secret
_MAX_TOKEN_CHARS = 128
_CODES = (ClaimTokenError.code, ClaimTokenRequiredError.code)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


@dataclass
class ClaimGate:
    """Holds the hash of the unused claim token (or none) and the refusal tally."""

    token_sha256: str | None = None
    path: Path | None = None
    refused: dict[str, int] = field(default_factory=dict)
    first_refused_at: int | None = None
    last_refused_at: int | None = None
    consumed_at: int | None = None

    def __repr__(self) -> str:  # the hash is not secret, but nobody needs to read it
        return f"ClaimGate(issued={self.token_sha256 is not None}, consumed_at={self.consumed_at})"

    # --- issuing and storing -------------------------------------------------------------

    @classmethod
    def for_token(cls, token: str, *, path: Path | None = None) -> ClaimGate:
        gate = cls(token_sha256=_digest(token), path=path)
        gate.save()
        return gate

    @classmethod
    def issue(cls, path: Path | None = None) -> tuple[ClaimGate, str]:
        """A new token (returned once, for the operator) and the gate keeping its hash."""
        token = new_token()
        return cls.for_token(token, path=path), token

    @classmethod
    def load(cls, path: Path) -> ClaimGate:
        """The gate of a data directory; without a claim file every claim is refused."""
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path=path)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the claim file {path}: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != CLAIM_FORMAT:
            raise ConfigurationError(f"{path} is not a {CLAIM_FORMAT} file")
        refused = doc.get("refused") or {}
        return cls(
            token_sha256=doc.get("token_sha256"),
            path=path,
            refused={c: int(refused.get(c, 0)) for c in _CODES if refused.get(c)},
            first_refused_at=doc.get("first_refused_at"),
            last_refused_at=doc.get("last_refused_at"),
            consumed_at=doc.get("consumed_at"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": CLAIM_FORMAT,
            "token_sha256": self.token_sha256,
            "refused": dict(self.refused),
            "first_refused_at": self.first_refused_at,
            "last_refused_at": self.last_refused_at,
            "consumed_at": self.consumed_at,
        }

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, sort_keys=True)
                f.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # --- at genesis ---------------------------------------------------------------------------

    @property
    def issued(self) -> bool:
        return self.token_sha256 is not None

    def check(self, presented: str | None) -> None:
        """Raise unless ``presented`` is the unused claim token (constant-time compare)."""
        if self.token_sha256 is None:
            raise ClaimTokenError(
                "this server has no unused claim token: genesis is refused (an operator runs "
                "`tandem init` on the data directory to issue one)"
            )
        if not presented:
            raise ClaimTokenRequiredError(
                "genesis needs the claim token `tandem init` printed (--claim-token or TANDEM_CLAIM_TOKEN)"
            )
        candidate = _digest(presented[:_MAX_TOKEN_CHARS]) if len(presented) <= _MAX_TOKEN_CHARS else ""
        if not hmac.compare_digest(candidate.encode(), self.token_sha256.encode()):
            raise ClaimTokenError("the claim token is not this server's")

    def note_refusal(self, code: str, now: int) -> None:
        """Count one refused claim (fixed-size record; the token presented is not kept)."""
        key = code if code in _CODES else ClaimTokenError.code
        self.refused[key] = self.refused.get(key, 0) + 1
        if self.first_refused_at is None:
            self.first_refused_at = now
        self.last_refused_at = now
        self.save()

    def refusals(self) -> dict[str, Any] | None:
        """The tally for the audit log, or None when nobody was refused."""
        if not self.refused:
            return None
        return {
            "count": sum(self.refused.values()),
            "codes": dict(sorted(self.refused.items())),
            "first_at": self.first_refused_at,
            "last_at": self.last_refused_at,
        }

    def consume(self, now: int) -> None:
        """The genesis that succeeded used the token up; the tally went to the log."""
        self.token_sha256 = None
        self.consumed_at = now
        self.refused = {}
        self.first_refused_at = self.last_refused_at = None
        self.save()
