"""The local endpoint is a signing tool: every request is checked before any page runs.

* Host must be ``127.0.0.1:PORT`` or ``localhost:PORT`` (a DNS-rebinding page names its
  own host and is refused).
* The per-run token: the URL the console opens carries it once (``?t=``); it becomes an
  HttpOnly, SameSite=Strict cookie and the address bar loses it. Every later request must
  carry that cookie.
* A request that changes anything (not GET/HEAD) must come from the console's own
  origin: ``Origin`` one of the two allowed, ``Sec-Fetch-Site`` (when sent) same-origin.
  Forms carry a CSRF token besides (checked where the form is read, see ``app``).
* Every answer: a Content-Security-Policy of ``default-src 'self'``, no caching, no
  framing, no referrer to other sites.

Each refusal is logged with its stable code (never the token, never a query string).
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import cookie_parser
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.console.state import ConsoleState

log = logging.getLogger("tandem.console")

COOKIE = "tandem_console"
TOKEN_PARAM = "t"  # noqa: S105 - the name of the query parameter, not a secret
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store, max-age=0",
    "pragma": "no-cache",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",  # no-referrer would make Origin "null"
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
SAFE_METHODS = frozenset({"GET", "HEAD"})

# code -> (HTTP status, what the person reads)
REFUSALS = {
    "host_not_allowed": (
        421,
        "refused [host_not_allowed]: this console answers only to 127.0.0.1 or localhost on its "
        "own port. A page that reached it under another name is refused (DNS rebinding).",
    ),
    "cross_site_request": (
        403,
        "refused [cross_site_request]: a request from another site may not act in this console.",
    ),
    "cross_origin_request": (
        403,
        "refused [cross_origin_request]: a request that changes something must come from this "
        "console's own pages.",
    ),
    "missing_token": (
        403,
        "refused [missing_token]: open the console with the link `tandem console` printed "
        "(it carries this run's token); a new run prints a new link.",
    ),
}


def refusal(code: str) -> Response:
    status, text = REFUSALS[code]
    return PlainTextResponse(text, status_code=status)


class Guard:
    def __init__(self, app: ASGIApp, state: ConsoleState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response = self.check(scope)
        send_secure = self._secure(send)
        if response is not None:
            await response(scope, receive, send_secure)
            return
        await self.app(scope, receive, send_secure)

    def check(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        path = scope.get("path", "/")
        if headers.get("host") not in self.state.allowed_hosts():
            return self._refuse("host_not_allowed", path)
        if scope["method"] not in SAFE_METHODS:
            site = headers.get("sec-fetch-site")
            if site is not None and site != "same-origin":
                return self._refuse("cross_site_request", path)
            if headers.get("origin") not in self.state.allowed_origins():
                return self._refuse("cross_origin_request", path)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = [v for k, v in query if k == TOKEN_PARAM]
        if offered and scope["method"] in SAFE_METHODS:
            if not self.state.token_ok(offered[0]):
                return self._refuse("missing_token", path)
            rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAM])
            redirect = RedirectResponse(path + (f"?{rest}" if rest else ""), status_code=303)
            redirect.set_cookie(COOKIE, self.state.token, httponly=True, samesite="strict", path="/")
            return redirect
        cookies = cookie_parser(headers.get("cookie", ""))
        if not self.state.token_ok(cookies.get(COOKIE)):
            return self._refuse("missing_token", path)
        return None

    @staticmethod
    def _refuse(code: str, path: str) -> Response:
        log.warning("console refused a request [%s] for %s", code, path)
        return refusal(code)

    @staticmethod
    def _secure(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        return wrapped
