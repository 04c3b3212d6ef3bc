"""The transport under every flow: HTTP to one server, member sessions, signed actions
and the deployment pin each answer is checked against.

Keys come from the member's genesis pin (``tandem.client.pin``), never from a server
response: a share is resealed only to an operation key the pinned service key signed,
for a key set the member countersigned.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from tandem.client import pin as client_pin
from tandem.client.pin import PinnedDeployment
from tandem.core.actions import sign_action
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets
from tandem.errors import (
    InputError,
    NotPinnedError,
    RemoteError,
    ServerTimeoutError,
    ServerTLSError,
    ServerUnreachableError,
    ServerURLError,
)

CLAIM_HEADER = "X-Tandem-Claim-Token"

DEFAULT_SERVER = "http://127.0.0.1:8600"
REQUEST_TIMEOUT = 60.0
_LARGEST_PAGE = 500  # the server's cap on a list page's ``limit``


def check_server_url(server: str) -> None:
    """Refuse, before anything is sent, a server URL httpx would misread: ``localhost:8600``
    parses as scheme ``localhost``."""
    try:
        url = httpx.URL(server)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ServerURLError(f"the server URL {shown_url(server)!r} is not a valid URL") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ServerURLError(
            f"the server URL {shown_url(server)!r} needs a scheme and a host: write it as "
            "http://HOST:PORT or https://HOST (--server or TANDEM_SERVER)"
        )


def _tls_reason(exc: BaseException) -> str | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or "certificate not trusted")
        if isinstance(seen, ssl.SSLError):
            return str(seen.reason or type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    return text if "SSL" in text or "CERTIFICATE" in text.upper() else None


def shown_url(server: str) -> str:
    """``server`` as it may be printed: any user:password part is left out."""
    try:
        url = httpx.URL(server)
    except (httpx.InvalidURL, TypeError, ValueError):
        return server
    return str(url.copy_with(username=None, password=None)) if url.userinfo else server


def transport_error(server: str, method: str, exc: httpx.TransportError) -> ServerUnreachableError:
    """What happened, in words, with what to do: no answer came back from ``server``."""
    server = shown_url(server)
    where = f"the Tandem server at {server}"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return ServerURLError(
            f"the server URL {server!r} needs http:// or https:// (--server or TANDEM_SERVER)"
        )
    if isinstance(exc, httpx.TimeoutException):
        sent = (
            "; it may still have acted on the request, so look (list or show) before retrying"
            if method != "GET" and not isinstance(exc, httpx.ConnectTimeout)
            else ""
        )
        return ServerTimeoutError(
            f"{where} did not answer within {REQUEST_TIMEOUT:.0f} s{sent}. Check the server is "
            "running and reachable from here, then try again"
        )
    reason = _tls_reason(exc)
    if reason is not None:
        return ServerTLSError(
            f"TLS with {where} failed ({reason}). Check the host name in the URL matches the "
            "server's certificate; for a private CA set SSL_CERT_FILE to its certificate; "
            "a server without TLS is reached with http://"
        )
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return ServerUnreachableError(
            f"cannot resolve the host of {where}. Check the host name in --server or TANDEM_SERVER"
        )
    if isinstance(exc, httpx.ConnectError):
        return ServerUnreachableError(
            f"cannot connect to {where} (connection refused or no route). Is `tandem serve` "
            "running there? Check --server or TANDEM_SERVER, or ask its operator"
        )
    return ServerUnreachableError(
        f"the connection to {where} failed ({type(exc).__name__}). Check the network and try again"
    )


class Transport:
    """HTTP to one Tandem server, the member sessions on it and the deployment pin every
    answer is checked against. The flows (``tandem.client.Client``) are built on it."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], int] = lambda: int(time.time()),
        pin: PinnedDeployment | None = None,
    ) -> None:
        """``pin``: the deployment this client trusts. Without one, each member's pin is
        read from beside its keystore (see :func:`tandem.client.pin.remember_keystore`)."""
        self.server = server
        self._url_checked = http is not None
        self.http = http or httpx.Client(base_url=server, timeout=REQUEST_TIMEOUT)
        self.clock = clock
        self.pin = pin
        self._pins: dict[str, PinnedDeployment] = {}
        self._sessions: dict[str, str] = {}
        self._deployment: dict[str, Any] | None = None

    # --- transport ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        token: str | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        next_cursor: list[str | None] | None = None,
    ) -> Any:
        """``next_cursor``, when given, receives the response's next-page cursor header
        (None when this was the last page)."""
        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        content = canonical(json_body) if json_body is not None else None
        if content is not None:
            hdrs["Content-Type"] = "application/json"
        if not self._url_checked:
            check_server_url(self.server)
            self._url_checked = True
        try:
            response = self.http.request(method, path, content=content, headers=hdrs, params=params)
        except httpx.TransportError as exc:
            raise transport_error(self.server, method, exc) from None
        except httpx.InvalidURL:
            raise ServerURLError(f"the server URL {shown_url(self.server)!r} is not a valid URL") from None
        if response.status_code >= 400:
            try:
                err = response.json()
                raise RemoteError(
                    err.get("code", "error"),
                    err.get("message", response.text),
                    response.status_code,
                    err.get("details"),
                )
            except ValueError:
                raise RemoteError("http_error", response.text[:200], response.status_code) from None
        if next_cursor is not None:
            next_cursor.append(response.headers.get("tandem-next-cursor"))
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def deployment(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._deployment is None or refresh:
            self._deployment = self.request("GET", "/v1/deployment")
        return self._deployment

    # --- the pin ---------------------------------------------------------------------------

    def _known_pin(self, member: MemberSecrets | None) -> PinnedDeployment | None:
        if self.pin is not None:
            return self.pin
        if member is None:
            return None
        path = client_pin.pin_file_for(member.member_id)
        if path is None or not path.exists():
            # No pin yet: reads and signed actions still work (a signature is bound to
            # the deployment it names); anything sealed is refused by pinned().
            return None
        key = str(path)
        if key not in self._pins:
            self._pins[key] = PinnedDeployment.load(path)
        return self._pins[key]

    def pinned(self, member: MemberSecrets | None = None) -> PinnedDeployment:
        """The pin this member's machine trusts, after checking the server is that
        deployment. Refuses (before anything is sealed) without a pin or on a mismatch."""
        pin = self._known_pin(member)
        if pin is None:
            raise NotPinnedError(
                "no genesis pin on this machine: `tandem genesis sign` writes one beside your "
                "keystore; a member who joined later runs `tandem pin genesis FILE --expect HASH`"
            )
        pin.check_served(self.deployment())
        return pin

    def reseal_for_operation(
        self,
        member: MemberSecrets,
        sealed_keyset: Any,
        operation: Any,
        *,
        keyset_id: str | None = None,
        purpose: str | None = None,
        local_copy: bool = False,
    ) -> tuple[str, str]:
        """Reseal ``member``'s share to ``operation``: only a pinned key set, only to an
        operation key the pinned service key signed. Returns ``(side, sealed share)``."""
        return self.pinned(member).reseal(
            member,
            sealed_keyset,
            operation,
            keyset_id=keyset_id,
            purpose=purpose,
            local_copy=local_copy,
        )

    def sign(self, member: MemberSecrets, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        dep = self.deployment()
        if "deployment" not in dep:
            raise InputError("the server has no deployment yet")
        pin = self._known_pin(member)
        if pin is not None:
            pin.check_served(dep)
        return sign_action(
            member,
            type=type_,
            deployment=pin.deployment if pin is not None else dep["deployment"],
            body=body,
            issued_at=self.clock(),
        ).to_json()

    def session(self, member: MemberSecrets) -> str:
        token = self._sessions.get(member.member_id)
        if token is None:
            token = self.request(
                "POST",
                "/v1/sessions",
                json_body={"envelope": self.sign(member, "session.open", {})},
            )["token"]
            self._sessions[member.member_id] = token
        return token

    def get(self, member: MemberSecrets, path: str, **params: Any) -> Any:
        """A read under the member's session; a session that lapsed meanwhile (they last
        15 minutes) is reopened once with a fresh signed action."""
        try:
            return self.request("GET", path, token=self.session(member), params=params or None)
        except RemoteError as exc:
            if exc.remote_code != "invalid_session":
                raise
            self._sessions.pop(member.member_id, None)
            return self.request("GET", path, token=self.session(member), params=params or None)

    def get_all(
        self, member: MemberSecrets, path: str, *, first: int | None = None, **params: Any
    ) -> list[Any]:
        """Every item of a paginated list, following its cursors page by page; with
        ``first``, only that many from the start (in pages of at most the server's cap)."""
        items: list[Any] = []
        cursor: str | None = None
        if first is not None:
            if first < 1:
                raise ValueError("first must be at least 1")
            params = {**params, "limit": min(first, _LARGEST_PAGE)}
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            seen: list[str | None] = []
            try:
                page = self.request(
                    "GET", path, token=self.session(member), params=query or None, next_cursor=seen
                )
            except RemoteError as exc:
                if exc.remote_code != "invalid_session":
                    raise
                self._sessions.pop(member.member_id, None)
                seen.clear()
                page = self.request(
                    "GET", path, token=self.session(member), params=query or None, next_cursor=seen
                )
            if not isinstance(page, list):
                raise RemoteError("bad_response", "a list route answered with something else", 502)
            items.extend(page)
            cursor = seen[-1] if seen else None
            if first is not None and len(items) >= first:
                return items[:first]
            if not cursor:
                return items
