"""THREATS 34: an oversized body is cut off while streaming, before it is buffered.

Against ``tandem serve`` in a subprocess (uvicorn, real sockets): a chunked upload with
no Content-Length, far larger than the body cap, is answered 413 with the stable JSON
error while the client is still sending, the connection is closed rather than drained,
and neither the server's memory nor its log nor its audit log took the body. A
Content-Length that announces too much is refused before a byte of body is read; one
that announces little is not believed (in-process, through the real app: the count is
of bytes received).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from scripts.harness import Server, Store, in_process
from sqlmodel import select as sql_select
from tests.conftest import BACKENDS, PG_URL, World
from tests.helpers.audit import audit_entries, membership_state

from tandem.client.members import draft_genesis, sign_genesis
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.settings import Settings
from tandem.store.models import AuditRow, CheckpointRow, Member, UsedNonce

pytestmark = pytest.mark.slow

CAP = Settings().max_body_bytes
MIB = 1 << 20
CHUNK = 64 * 1024
TOTAL = 64 * MIB  # what the client is prepared to send
# Socket buffers on both ends hold a few MiB; a server that buffered the whole body
# would answer only after all of it.
ANSWERED_WITHIN = 24 * MIB


@dataclass
class Served:
    store: Store
    server: Server


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    backend = str(request.param)
    store = Store.new(
        backend, tmp_path_factory.mktemp(f"t34-{backend}") / "data", pg_admin_url=PG_URL, prefix="tandem_t34"
    )
    try:
        genesis(store)
        with Server(store) as server:
            yield Served(store, server)
    finally:
        store.drop()


def genesis(store: Store) -> None:
    """A deployment with one member per role, so refusals have a log to go into."""
    key = ServiceKey.generate()
    key_file = store.data_dir / "service.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.to_file_bytes())
    now = int(time.time())
    people = [
        MemberSecrets.generate(name="manager-1", role=Role.MANAGER),
        MemberSecrets.generate(name="custodian-1", role=Role.CUSTODIAN),
        MemberSecrets.generate(name="auditor", role=Role.AUDITOR),
    ]
    claim_token = secrets.token_urlsafe(24)
    with in_process(store, lambda: now, key, claim_token=claim_token) as client:
        doc = draft_genesis(
            deployment="dep_" + secrets.token_hex(8),
            entity="Body Cap Test Fund",
            created_at=now,
            service=client.deployment()["service"],
            cards=[m.card() for m in people],
        )
        client.members.submit_genesis(
            doc, dict(sign_genesis(m, doc) for m in people), claim_token=claim_token
        )


def db_state(store: Store) -> dict[str, Any]:
    db = store.database()
    try:
        with db.read() as s:
            lines = [r.line for r in s.exec(sql_select(AuditRow)).all()]
            checkpoints = [c.doc for c in s.exec(sql_select(CheckpointRow)).all()]
            return {
                "entries": [json.loads(x) for x in lines],
                "log_bytes": sum(len(x) for x in lines + checkpoints),
                "members": sorted(m.id for m in s.exec(sql_select(Member)).all()),
                "nonces": sorted(n.nonce for n in s.exec(sql_select(UsedNonce)).all()),
            }
    finally:
        db.dispose()


def peak_memory(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def read_response(sock: socket.socket, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off ``sock`` (until its Content-Length, or EOF)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        try:
            part = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not part:
            break
        body += part
    return int(status_line.split()[1]), headers, body


def stream_chunked(server: Server, path: str) -> tuple[int, int, dict[str, str], bytes]:
    """POST a chunked body of up to TOTAL bytes, sending while the server reads and
    stopping as soon as it answers. Returns (bytes sent, status, headers, body)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode("ascii")
        )
        frame = f"{CHUNK:x}\r\n".encode("ascii") + b'{"pad":"' + b"a" * (CHUNK - 8) + b"\r\n"
        sock.setblocking(False)
        sent = 0
        pending = memoryview(frame)
        deadline = time.monotonic() + 120
        while sent < TOTAL and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break
            if writable:
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break  # the server hung up; its answer is already waiting
                pending = pending[n:]
                if not pending:
                    sent += CHUNK
                    pending = memoryview(frame)
        status, headers, body = read_response(sock)
        return sent, status, headers, body
    finally:
        sock.close()


def test_chunked_upload_is_cut_off_while_streaming(served: Served) -> None:
    before = db_state(served.store)
    assert served.server.proc is not None
    pid = served.server.proc.pid
    memory_before = peak_memory(pid)
    log_before = served.server.log.stat().st_size

    sent, status, headers, body = stream_chunked(served.server, "/v1/sessions")

    assert status == 413, body[:300]
    assert json.loads(body)["code"] == "payload_too_large"
    assert headers.get("connection") == "close"
    assert sent < ANSWERED_WITHIN, f"the answer came only after {sent} bytes were sent"
    assert sent < TOTAL
    assert peak_memory(pid) - memory_before < 16 * MIB, "the server buffered the body"
    assert served.server.log.stat().st_size - log_before < 4096
    after = db_state(served.store)
    assert (after["members"], after["nonces"]) == (before["members"], before["nonces"])
    new = after["entries"][len(before["entries"]) :]
    assert [(e["kind"], e["code"], e["envelope"]) for e in new] == [
        ("http.request.refused", "payload_too_large", None)
    ]
    assert new[0]["data"]["path"] == "/v1/sessions"
    assert after["log_bytes"] - before["log_bytes"] < 2048
    assert served.server.health()["status"] == "ok"


def test_announced_oversize_is_refused_before_the_body_is_read(served: Served) -> None:
    before = db_state(served.store)
    sock = socket.create_connection(("127.0.0.1", served.server.port), timeout=30)
    try:
        sock.sendall(
            f"POST /v1/members/proposals HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {1 << 30}\r\n\r\n".encode("ascii")
        )
        # No body byte is sent: the answer cannot depend on reading any.
        status, headers, body = read_response(sock, timeout=20)
    finally:
        sock.close()
    assert status == 413
    assert json.loads(body)["code"] == "payload_too_large"
    assert headers.get("connection") == "close"
    after = db_state(served.store)
    assert (after["members"], after["nonces"]) == (before["members"], before["nonces"])
    new = after["entries"][len(before["entries"]) :]
    assert [(e["kind"], e["code"]) for e in new] == [("http.request.refused", "payload_too_large")]


def test_understated_content_length_is_not_believed(world: World) -> None:
    """A front end that passes on more bytes than the Content-Length said (or none at
    all) still meets the count of bytes received: the app stops asking for more as
    soon as the cap is passed, and answers 413."""
    app = world.client.http.app
    before = membership_state(world)
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        # Ends at last (8 times the cap), so an app that reads on fails rather than hangs.
        more = asked * CHUNK < 8 * CAP
        return {"type": "http.request", "body": b"a" * CHUNK, "more_body": more}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/sessions",
        "raw_path": b"/v1/sessions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", b"10"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))

    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body)["code"] == "payload_too_large"
    assert asked <= CAP // CHUNK + 1, f"the app read {asked} chunks past a {CAP}-byte cap"
    assert membership_state(world) == before
    world.client._sessions.clear()
    entries = audit_entries(world)
    hits = [e for e in entries if e["code"] == "payload_too_large"]
    assert [(e["kind"], e["data"]["path"]) for e in hits] == [("http.request.refused", "/v1/sessions")]


def test_body_under_the_cap_still_reaches_the_route(world: World) -> None:
    """The cap counts; it does not get in the way of an ordinary request."""
    env = world.client.sign(world["bob"], "session.open", {})
    response = world.client.http.post(
        "/v1/sessions",
        content=json.dumps({"envelope": env}).encode(),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    assert response.status_code == 201, response.text
