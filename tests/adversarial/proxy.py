"""An intercepting proxy on the member's network path (THREATS 22, 41).

:class:`InterceptingProxy` is an httpx transport in front of the real app (behind the
``world``'s TestClient). It records every request body a member's client sends and can
rewrite the answers: serve its own service keys in ``GET /v1/deployment``, swap every
operation key (``{statement, signature}``) for one of its own that it signs with its own
service key, or rewrite the sealed key sets it passes on. It keeps the private halves,
so a test can try to open everything the members sent with them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nacl.exceptions
import nacl.public
import nacl.signing
from fastapi.testclient import TestClient
from tests.conftest import World

from tandem.client import Client
from tandem.core.canonical import canonical, domain_bytes

_FORWARDED = ("authorization", "content-type", "idempotency-key", "x-tandem-claim-token")


@dataclass
class InterceptingProxy(httpx.BaseTransport):
    upstream: TestClient
    swap_service: bool = False
    swap_operations: bool = False
    rewrite_keyset: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    sign_key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    seal_key: nacl.public.PrivateKey = field(default_factory=nacl.public.PrivateKey.generate)
    operation_key: nacl.public.PrivateKey = field(default_factory=nacl.public.PrivateKey.generate)
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)

    # --- transport -----------------------------------------------------------------------

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append((request.method, request.url.path, body))
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        answer = self.upstream.request(
            request.method,
            request.url.path,
            params=dict(request.url.params),
            content=body or None,
            headers=headers,
        )
        content = answer.content
        ctype = answer.headers.get("content-type", "")
        if ctype.startswith("application/json") and answer.status_code < 400:
            content = json.dumps(self.rewrite(request.url.path, answer.json())).encode()
        return httpx.Response(answer.status_code, headers={"content-type": ctype}, content=content)

    def client(self, world: World) -> Client:
        """A member's client whose every request goes through this proxy (same pin)."""
        http = httpx.Client(transport=self, base_url="http://testserver")
        return Client(http=http, clock=world.clock, pin=world.client.pin)

    # --- the attack ------------------------------------------------------------------------

    @property
    def service_public(self) -> dict[str, str]:
        return {
            "sign_public": bytes(self.sign_key.verify_key).hex(),
            "seal_public": bytes(self.seal_key.public_key).hex(),
        }

    def forged_operation(self, op: dict[str, Any]) -> dict[str, Any]:
        statement = {**op["statement"], "public_key": bytes(self.operation_key.public_key).hex()}
        signature = self.sign_key.sign(domain_bytes("operation-key", statement)).signature
        return {"statement": statement, "signature": base64.b64encode(signature).decode()}

    def rewrite(self, path: str, doc: Any) -> Any:
        if path == "/v1/deployment" and self.swap_service and isinstance(doc, dict):
            return {**doc, "service": self.service_public}
        return self._walk(doc)

    def _walk(self, doc: Any) -> Any:
        if isinstance(doc, list):
            return [self._walk(x) for x in doc]
        if isinstance(doc, str) and self.rewrite_keyset is not None and '"tandem-sealed-keyset/1"' in doc:
            # some answers carry the sealed key set as its canonical JSON text
            return canonical(self.rewrite_keyset(json.loads(doc))).decode()
        if not isinstance(doc, dict):
            return doc
        if (
            self.swap_operations
            and set(doc) == {"statement", "signature"}
            and isinstance(doc["statement"], dict)
            and "public_key" in doc["statement"]
        ):
            return self.forged_operation(doc)
        if self.rewrite_keyset is not None and doc.get("format") == "tandem-sealed-keyset/1":
            return self.rewrite_keyset(doc)
        return {k: self._walk(v) for k, v in doc.items()}

    # --- what left the members' machines -------------------------------------------------

    def posted(self, path_end: str) -> list[tuple[str, bytes]]:
        """Recorded POSTs to a path ending in ``path_end``."""
        return [(p, b) for m, p, b in self.requests if m == "POST" and p.endswith(path_end)]

    def opened_with_attacker_keys(self) -> list[str]:
        """Every base64 string in every recorded body that one of the proxy's private
        keys opens (a sealed share or seed that reached the attacker)."""
        boxes = [nacl.public.SealedBox(k) for k in (self.operation_key, self.seal_key)]
        opened = []
        for _method, path, body in self.requests:
            if not body:
                continue
            for text in _strings(json.loads(body)):
                try:
                    raw = base64.b64decode(text, validate=True)
                except ValueError:
                    continue
                for box in boxes:
                    try:
                        box.decrypt(raw)
                    except nacl.exceptions.CryptoError:
                        continue
                    opened.append(path)
        return opened

    def sealed_boxes_sent(self) -> int:
        return sum(1 for _m, _p, b in self.requests if b and any(_is_box(t) for t in _strings(json.loads(b))))


def _strings(doc: Any) -> Iterator[str]:
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, list):
        for x in doc:
            yield from _strings(x)
    elif isinstance(doc, dict):
        for v in doc.values():
            yield from _strings(v)


def _is_box(text: str) -> bool:
    try:
        return len(base64.b64decode(text, validate=True)) >= 48 + 32
    except ValueError:
        return False
