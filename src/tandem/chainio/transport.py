"""HTTP and JSON-RPC plumbing shared by every backend.

One place turns the ways a request can fail into Tandem errors: no connection or a
timeout (:class:`ChainUnreachableError`, :class:`ChainTimeoutError`), an answer that is
not the documented shape (:class:`ChainBadResponseError`), a JSON-RPC error object or a
refused broadcast (:class:`ChainRejectedError`). Messages name the method and the
node's scheme, host and port only: a URL's user, password, path and query (where
hosted providers put API keys) never reach a message, a log line or an audit entry.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from tandem.chainio import parse
from tandem.errors import (
    ChainBadResponseError,
    ChainConfigError,
    ChainRejectedError,
    ChainTimeoutError,
    ChainUnreachableError,
)

DEFAULT_TIMEOUT = 10.0
# What a node says about a refusal is shown to a person: printable, and short.
_MAX_NODE_TEXT = 300
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


def node_text(text: str) -> str:
    """A node's own words, made safe to show: printable ASCII, bounded length."""
    cleaned = _UNPRINTABLE.sub(" ", text).strip()
    if len(cleaned) > _MAX_NODE_TEXT:
        cleaned = cleaned[:_MAX_NODE_TEXT] + "..."
    return cleaned


def redact_url(url: str) -> str:
    """scheme://host[:port] of a URL: what may be shown of where a node is."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


class HttpEndpoint:
    """An HTTP(S) base URL with its credentials split off and a bounded read.

    ``transport`` lets tests serve documented response shapes (``httpx.MockTransport``)
    and is otherwise left to httpx's default.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise ChainConfigError("chain endpoint URL is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ChainConfigError("chain endpoint URL must be http:// or https:// with a host")
        auth: tuple[str, str] | None = None
        if parsed.username or parsed.password:
            auth = (parsed.username, parsed.password)
            parsed = parsed.copy_with(username=None, password=None)
        self.display = redact_url(str(parsed))
        self._base = str(parsed).rstrip("/")
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            auth=auth,
            headers=dict(headers or {}),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one request; transport failures become Tandem errors."""
        url = self._base + path
        try:
            with self._client.stream(method, url, content=content, headers=dict(headers or {})) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > parse.MAX_RESPONSE_BYTES:
                        raise ChainBadResponseError(
                            f"{what}: {self.display} sent more than {parse.MAX_RESPONSE_BYTES} bytes"
                        )
                return response.status_code, bytes(body)
        except httpx.TimeoutException:
            raise ChainTimeoutError(f"{what}: {self.display} did not answer in time") from None
        except httpx.TransportError as exc:
            reason = type(exc).__name__
            raise ChainUnreachableError(f"{what}: cannot reach {self.display} ({reason})") from None

    def check_status(self, status: int, body: bytes, what: str) -> None:
        """Refuse any answer that is not a 2xx: auth and server failures read as unreachable."""
        if 200 <= status < 300:
            return
        if status in (401, 403):
            raise ChainUnreachableError(f"{what}: {self.display} refused our credentials (HTTP {status})")
        if status == 404:
            raise ChainBadResponseError(f"{what}: {self.display} has no such resource (HTTP 404)")
        if status >= 500 or status == 429:
            raise ChainUnreachableError(f"{what}: {self.display} failed (HTTP {status})")
        detail = node_text(body.decode("utf-8", "replace"))
        raise ChainRejectedError(f"{what}: {self.display} refused (HTTP {status}): {detail}")


class JsonRpcError(ChainRejectedError):
    """A JSON-RPC error object; ``rpc_code`` is the node's own number for it."""

    def __init__(self, message: str, *, rpc_code: int) -> None:
        super().__init__(message, details={"rpc_code": rpc_code})
        self.rpc_code = rpc_code


class JsonRpcClient:
    """JSON-RPC over HTTP POST, as Ethereum nodes, Solana nodes and Bitcoin Core speak it.

    ``version`` is "2.0" for Ethereum and Solana; Bitcoin Core also answers 1.0-style
    (``{"result": ..., "error": null, "id": ...}``), which this accepts as well.
    """

    def __init__(self, http: HttpEndpoint, *, version: str = "2.0") -> None:
        self.http = http
        self.display = http.display
        self._version = version
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        request_id = next(self._ids)
        payload: dict[str, Any] = {
            "jsonrpc": self._version,
            "id": request_id,
            "method": method,
            "params": params if isinstance(params, Mapping) else list(params),
        }
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        status, answer = self.http.request(
            "POST", "", method, content=body, headers={"content-type": "application/json"}
        )
        # Bitcoin Core answers RPC errors with HTTP 500 (and 404 for an unknown method)
        # and a JSON body: read the body first, fall back to the status if it is not JSON.
        if status in (401, 403) or not answer:
            self.http.check_status(status, answer, method)
        try:
            reply = parse.obj(parse.loads(answer, method), method)
        except ChainBadResponseError:
            self.http.check_status(status, answer, method)
            raise
        if reply.get("id") != request_id or isinstance(reply.get("id"), bool):
            raise ChainBadResponseError(f"{method}: answer is for another request id")
        error = reply.get("error")
        if error is not None:
            error_obj = parse.obj(error, f"{method} error")
            code = error_obj.get("code")
            rpc_code = code if isinstance(code, int) and not isinstance(code, bool) else 0
            message = error_obj.get("message")
            text = node_text(message) if isinstance(message, str) else "no message"
            raise JsonRpcError(f"{method}: node refused ({rpc_code}): {text}", rpc_code=rpc_code)
        self.http.check_status(status, answer, method)
        if "result" not in reply:
            raise ChainBadResponseError(f"{method}: answer has neither result nor error")
        return reply["result"]
