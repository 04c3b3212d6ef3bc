"""How a refusal reads on a page: its stable code, in words a person understands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tandem.errors import Error, RemoteError

# Stable codes a person meets most, in words; the code is always shown beside them.
FRIENDLY = {
    "totp_invalid": "The TOTP code was not accepted. Type the 6 digits your authenticator app shows now.",
    "totp_replayed": "That TOTP code was already used. Wait for the next code (at most 30 seconds) "
    "and type it.",
    "totp_locked": "Too many wrong TOTP codes: the second factor is locked for a while.",
    "totp_throttled": "Too many TOTP attempts in a short time: wait a minute and try again.",
    "expired": "This request has expired: it can no longer be approved. The requester makes a new one.",
    "fingerprint_mismatch": "The fingerprint you typed is not this request's. Do not approve: call the "
    "requester back on a known number and compare again.",
    "request_changed": "The request changed after you reviewed it. Review it again before approving.",
    "self_approval": "You requested this yourself; the other side must approve it.",
    "role_not_allowed": "Your role may not do this.",
    "invalid_state": "The request is no longer in a state that accepts this.",
    "conflict": "This conflicts with what is already recorded (approved twice?).",
    "bad_signature": "The server did not accept the signature of this approval.",
    "keystore_error": "The keystore could not be opened with that passphrase.",
    "csrf_invalid": "This form is out of date (the console was restarted?). Reload the page and try again.",
    "unreachable": "The Tandem server cannot be reached.",
    "operation_key_lost": "The server no longer holds this request's one-time key (it restarted, "
    "or the key was used), so your share could never be opened: nothing was approved. The request "
    "itself stands; once it has a new operation key, approve it again.",
    "invalid_input": "The input was not accepted.",
    "not_found": "The server knows nothing by that id. Check the link, or go back to the queue.",
    "no_such_page": "This console has no such page. Check the link, or go back to the queue.",
}

# Failures that are not a refusal of something the member did: headed as what they are.
HEADINGS = {
    "unreachable": "The server did not answer",
    "not_found": "Not found",
    "no_such_page": "Not found",
    "error": "Something went wrong",
}


class ConsoleError(Error):
    """A refusal made by the console itself, before anything is signed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self._code = code

    def diagnostics(self) -> str:
        return f"{self.message} [{self._code}]"

    @property
    def stable_code(self) -> str:
        return self._code


Recovery = tuple[str, str, str]  # who runs it, the command, what follows


def words(code: str, detail: str, recovery: Recovery | None = None) -> dict[str, Any]:
    """What a page shows for a refusal: the words for its code, the code, the detail, and
    (when the page knows one) the command that recovers from it."""
    shown: dict[str, Any] = {
        "code": code,
        "text": FRIENDLY.get(code, detail),
        "detail": detail,
        "heading": HEADINGS.get(code, "Refused"),
    }
    if recovery is not None:
        shown["recovery"] = recovery
    return shown


def explain(exc: BaseException, recoveries: Mapping[str, Recovery] | None = None) -> dict[str, Any]:
    """``recoveries``: for the page's request, what to run after a refusal of that code."""
    if isinstance(exc, ConsoleError):
        code = exc.stable_code
    elif isinstance(exc, RemoteError):
        code = exc.remote_code
    elif isinstance(exc, Error):
        code = exc.code
    elif isinstance(exc, httpx.HTTPError):
        code = "unreachable"
    else:
        code = "error"
    detail = exc.message if isinstance(exc, Error) else type(exc).__name__
    return words(code, detail, (recoveries or {}).get(code))
