"""The local endpoint refuses what a signing tool must: another Host (DNS rebinding), a
request without this run's token, a POST from another origin or site, a form without
the CSRF token; it sends a strict CSP and no-store, and locks the key when idle."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.console.conftest import PASSPHRASE, ConsoleWorld

from tandem.console.guard import COOKIE


def unlocked(c: ConsoleWorld) -> httpx.Client:
    """A client holding the token cookie, with the key unlocked (as the page would)."""
    http = httpx.Client(base_url=c.console.origin, follow_redirects=False)
    first = http.get(f"/?t={c.state.token}")
    assert first.status_code == 303
    assert first.headers["location"] == "/"
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    origin = {"Origin": c.console.origin}
    done = http.post("/unlock", data={"csrf": c.state.csrf, "passphrase": PASSPHRASE}, headers=origin)
    assert done.status_code == 303, done.text
    return http


def test_dns_rebinding_host_is_refused(console_world: ConsoleWorld) -> None:
    c = console_world
    http = unlocked(c)
    for host in ("evil.example", f"evil.example:{c.state.port}", "127.0.0.1:1", f"127.0.0.2:{c.state.port}"):
        r = http.get("/", headers={"Host": host})
        assert r.status_code == 421, host
        assert "host_not_allowed" in r.text
        assert "Waiting for you" not in r.text
    # Even with the token in the URL, another Host gets nothing (no cookie is set).
    r = httpx.get(f"{c.console.origin}/?t={c.state.token}", headers={"Host": "evil.example"})
    assert r.status_code == 421
    assert "set-cookie" not in r.headers
    # localhost:PORT is the console too.
    assert http.get("/", headers={"Host": f"localhost:{c.state.port}"}).status_code == 200


def test_missing_or_wrong_token_is_refused(console_world: ConsoleWorld) -> None:
    c = console_world
    unlocked(c)
    bare = httpx.Client(base_url=c.console.origin)
    for path in ("/", "/unlock", "/audit", "/static/console.css", f"/?t={c.state.token[:-2]}xx"):
        r = bare.get(path)
        assert r.status_code == 403, path
        assert "missing_token" in r.text
    r = bare.get("/", cookies={COOKIE: "not-the-token"})
    assert r.status_code == 403


def test_cross_origin_post_and_missing_csrf_are_refused(console_world: ConsoleWorld) -> None:
    c = console_world
    http = unlocked(c)
    evil = {"Origin": "http://evil.example"}
    r = http.post("/lock", data={"csrf": c.state.csrf}, headers=evil)
    assert r.status_code == 403
    assert "cross_origin_request" in r.text
    r = http.post("/lock", data={"csrf": c.state.csrf})  # no Origin at all
    assert r.status_code == 403
    r = http.post(
        "/lock",
        data={"csrf": c.state.csrf},
        headers={"Origin": c.console.origin, "Sec-Fetch-Site": "same-site"},
    )
    assert r.status_code == 403
    assert "cross_site_request" in r.text
    r = http.post("/lock", data={"csrf": "wrong"}, headers={"Origin": c.console.origin})
    assert r.status_code == 403
    assert "csrf_invalid" in r.text
    # Still unlocked: none of those did anything.
    assert http.get("/").status_code == 200


def test_headers_csp_and_no_cache(console_world: ConsoleWorld) -> None:
    c = console_world
    http = unlocked(c)
    for path in ("/", "/unlock", "/nope", "/static/favicon.svg"):
        r = http.get(path)
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert "no-store" in r.headers["cache-control"]
        assert r.headers["x-frame-options"] == "DENY"
    # Refusals carry them too.
    r = http.get("/", headers={"Host": "evil.example"})
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_idle_lock(console_world: ConsoleWorld) -> None:
    c = console_world
    http = unlocked(c)
    assert http.get("/").status_code == 200
    c.idle.now += 599
    assert http.get("/").status_code == 200  # each request counts as use
    c.idle.now += 601
    r = http.get("/")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/unlock")
    assert c.state.member() is None
    # The unlock page says why it is back, and says it no more once the key is unlocked again.
    assert "locked itself after 10 minutes without use" in http.get(r.headers["location"]).text
    origin = {"Origin": c.console.origin}
    http.post("/unlock", data={"csrf": c.state.csrf, "passphrase": PASSPHRASE}, headers=origin)
    http.post("/lock", data={"csrf": c.state.csrf}, headers=origin)
    assert "locked itself" not in http.get("/unlock").text


def test_a_page_that_does_not_exist_is_a_console_page_saying_so(console_world: ConsoleWorld) -> None:
    http = unlocked(console_world)
    r = http.get("/withdrawls/wd_0123456789abcdef")
    assert r.status_code == 404
    assert "This console has no such page" in r.text
    assert "[no_such_page]" in r.text
    assert 'href="/"' in r.text  # the way back to the queue
    r = http.get("/withdrawals/wd_0123456789abcdef")  # a page, for an id the server does not know
    assert "The server knows nothing by that id" in r.text
    assert "[not_found]" in r.text


def test_idle_lock_without_a_request(console_world: ConsoleWorld) -> None:
    """Left alone, the console drops the key by itself (its watcher), not at the next request."""
    c = console_world
    unlocked(c)
    assert not c.state.expire_if_idle()
    c.idle.now += 601
    deadline = time.monotonic() + 5
    while c.state._member is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.state._member is None


def test_wrong_passphrase_is_a_readable_refusal(console_world: ConsoleWorld) -> None:
    c = console_world
    http = httpx.Client(base_url=c.console.origin)
    http.get(f"/?t={c.state.token}")
    r = http.post(
        "/unlock", data={"csrf": c.state.csrf, "passphrase": "wrong"}, headers={"Origin": c.console.origin}
    )
    assert r.status_code == 403
    assert "keystore_error" in r.text
    assert c.state.member() is None


@pytest.fixture
def evil_site() -> Iterator[tuple[str, list[str]]]:
    """Another site on this machine (same host, another port: same-site, cross-origin),
    whose page posts a form to the console."""
    pages: list[str] = [""]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages[0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", pages
    server.shutdown()


def test_a_page_elsewhere_cannot_post_to_the_console(
    console_world: ConsoleWorld, page: Any, evil_site: tuple[str, list[str]]
) -> None:
    c = console_world
    url, pages = evil_site
    # The member has the console open and unlocked in this browser...
    page.goto(c.console.url)
    page.get_by_label("Keystore passphrase").fill(PASSPHRASE)
    page.get_by_role("button", name="Unlock").click()
    page.get_by_role("heading", name="Waiting for you").wait_for()
    # ...and visits another page, which submits a form to the console (it even knows the
    # CSRF token, as if it had leaked).
    pages[0] = (
        f'<form method="post" action="{c.console.origin}/lock">'
        f'<input type="hidden" name="csrf" value="{c.state.csrf}">'
        '<button type="submit">Win a prize</button></form>'
    )
    page.goto(url)
    page.get_by_role("button", name="Win a prize").click()
    page.wait_for_load_state()
    assert "refused [cross_site_request]" in page.content()
    assert c.state.member() is not None  # still unlocked: the lock did not run
    # A DNS-rebinding page reaches the console under its own name: refused as well.
    r = page.request.get(f"{c.console.origin}/", headers={"Host": "evil.example"})
    assert r.status == 421


def test_every_form_route_checks_the_csrf_token(console_world: ConsoleWorld) -> None:
    """Every POST route of the console, enumerated from the app (so a new one is covered),
    refuses a form without this run's CSRF token before it does anything."""
    from starlette.routing import Route

    from tandem.console.app import create_console_app

    c = console_world
    http = unlocked(c)
    posts = [
        r.path
        for r in create_console_app(c.state).routes
        if isinstance(r, Route) and "POST" in (r.methods or ())
    ]
    assert {"/batch/approve", "/books/reconciliations/run", "/books/statements/issue"} <= set(posts)
    before = len(c.world.client.audit.export(c.world["olga"])[0])
    for path in posts:
        url = path.replace("{id}", "wd_0000").replace("{action}", "approve")
        r = http.post(
            url, data={"csrf": "wrong", "passphrase": PASSPHRASE}, headers={"Origin": c.console.origin}
        )
        assert r.status_code in (403, 422), (path, r.status_code)
        assert "csrf_invalid" in r.text, path
    # Nothing was signed or sent: the log holds no new action (the pages shown with the
    # refusal read the server, over the console's own read session, and nothing else).
    lines = c.world.client.audit.export(c.world["olga"])[0][before:]
    assert {json.loads(line)["kind"] for line in lines} <= {"session.opened"}
    assert http.get("/").status_code == 200  # and the key is still unlocked
