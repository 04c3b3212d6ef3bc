"""The audit export and its verification stream: the API's export is the same bytes as
the whole log joined at once, the CLI writes it as it arrives and verifies it line by
line, and none of them holds the log in memory (tracemalloc, two sizes)."""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import T0, World, new_member
from typer.testing import CliRunner

from tandem.api.routes_audit import _ndjson_pages
from tandem.cli import audit_cmds
from tandem.cli.main import app as cli_app
from tandem.client.members import draft_genesis, sign_genesis
from tandem.core import audit
from tandem.core.membership import genesis_hash
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.services import audit as audit_service
from tandem.store import audit_log


def old_export_bytes(world: World) -> bytes:
    """What the export route answered before it streamed: every line joined at once."""
    lines, _checkpoint = world.svc.audit.export()
    return ("\n".join(lines) + "\n").encode("utf-8")


def fill(world: World, count: int) -> None:
    """More entries through the store's own append path (no envelopes, so cheap)."""
    with world.svc.db.write() as session:
        deployment = world.svc.runner.deployment(session).id
        for i in range(count):
            audit_log.append(
                session,
                world.svc.key,
                deployment=deployment,
                kind="test.filler",
                actor=None,
                outcome="ok",
                code=None,
                envelope=None,
                data={"i": i, "note": "filler entry for the streaming tests"},
                time=T0 + i,
            )


@pytest.mark.parametrize("page", [1, 3, 5000])
def test_streamed_export_is_the_old_export_byte_for_byte(
    world: World, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    fill(world, 20)
    monkeypatch.setattr(audit_service, "EXPORT_CHUNK", page)
    token = world.client.session(world["olga"])
    response = world.client.http.get("/v1/audit/export", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.content == old_export_bytes(world)
    # The size is fixed when the stream starts: the read session's own entry comes later.
    assert int(response.headers["X-Tandem-Tree-Size"]) == response.content.count(b"\n")


@pytest.mark.parametrize("per_chunk", [1, 2, 7, 1000])
def test_chunks_join_to_the_same_bytes(per_chunk: int) -> None:
    lines = [json.dumps({"i": i, "t": "é" * (i % 3)}) for i in range(23)]
    joined = b"".join(_ndjson_pages(iter(lines), per_chunk=per_chunk))
    assert joined == ("\n".join(lines) + "\n").encode("utf-8")


def test_empty_log_export_is_refused_before_streaming(world: World, tmp_path: Path) -> None:
    from tandem.errors import NotFoundError
    from tandem.services import Tandem
    from tandem.store.db import Database

    empty = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    empty.migrate()
    try:
        with pytest.raises(NotFoundError):
            Tandem(empty, world.svc.key, clock=world.clock).audit.export_stream()
    finally:
        empty.dispose()


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(audit_cmds, "Client", lambda server: world.client)
    monkeypatch.setattr(audit_cmds, "load_member", lambda path: world["olga"])
    return CliRunner()


def test_cli_export_writes_the_same_bytes_and_verifies(
    world: World, cli: CliRunner, tmp_path: Path
) -> None:
    fill(world, 30)
    out = tmp_path / "export"
    result = cli.invoke(cli_app, ["audit", "export", "--out", str(out), "--keystore", "unused.ks"])
    assert result.exit_code == 0, result.output
    checkpoint = json.loads((out / "checkpoint.json").read_text())
    size = checkpoint["checkpoint"]["tree_size"]
    lines, _ = world.svc.audit.export()
    expected = ("\n".join(lines[:size]) + "\n").encode("utf-8")
    assert (out / "audit.jsonl").read_bytes() == expected
    verified = cli.invoke(cli_app, ["audit", "verify", str(out / "audit.jsonl")])
    assert verified.exit_code == 0, verified.output
    entries = expected.count(b"\n")
    assert "verifying" not in verified.output  # no progress bar when piped
    assert f"OK {entries} entries" in verified.output
    assert "checkpoint signed by the service key " in verified.output


def test_verify_without_a_file_or_full_is_refused(cli: CliRunner) -> None:
    result = cli.invoke(cli_app, ["audit", "verify"])
    assert result.exit_code != 0
    assert "--full" in result.output


# --- memory stays flat -----------------------------------------------------------------


def peak_bytes(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_stream_memory_does_not_grow_with_the_log(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_service, "EXPORT_CHUNK", 200)

    def drain() -> int:
        _size, lines = world.svc.audit.export_stream()
        return sum(len(chunk) for chunk in _ndjson_pages(lines, per_chunk=200))

    fill(world, 600)
    small_bytes = drain()
    small = peak_bytes(drain)
    fill(world, 2400)
    large_bytes = drain()
    large = peak_bytes(drain)
    assert large_bytes > 4 * small_bytes
    # A list of every line would hold the whole export (over 1 MB here) at once; the
    # stream holds a page of rows and a chunk, whatever the size.
    assert large_bytes > 1_000_000
    assert large < 512 * 1024
    assert large < small * 1.25 + 64 * 1024


def synthetic_export(tmp_path: Path, count: int, key: ServiceKey) -> tuple[Path, dict[str, Any]]:
    acc = audit.MerkleAccumulator()
    prev = audit.GENESIS_PREV
    path = tmp_path / f"audit-{count}.jsonl"
    # Entry 0 is a real genesis (the verifier replays the log from it); the rest filler.
    people = [new_member("mia", Role.MANAGER), new_member("carl", Role.CUSTODIAN)]
    doc = draft_genesis(
        deployment="dep_mem",
        entity="Streaming Test Fund",
        created_at=T0,
        service=key.public_json(),
        cards=[m.card() for m in people],
    )
    genesis = {
        "genesis": doc,
        "signatures": dict(sign_genesis(m, doc) for m in people),
        "genesis_hash": genesis_hash(doc),
    }
    with path.open("wb") as out:
        for i in range(count):
            entry = audit.make_entry(
                index=i,
                time=T0 + i,
                deployment="dep_mem",
                kind="deployment.genesis" if i == 0 else "test.filler",
                actor=None,
                outcome="ok",
                code=None,
                envelope=None,
                data=genesis if i == 0 else {"i": i, "note": "filler entry for the streaming tests"},
                prev=prev,
            )
            prev = entry["hash"]
            acc.append(bytes.fromhex(prev))
            out.write(audit.export_line(entry))
    checkpoint = audit.sign_checkpoint(
        key.sign_seed, deployment="dep_mem", tree_size=count, root=acc.root().hex(), last_hash=prev, time=T0
    )
    return path, checkpoint


def test_verify_file_memory_does_not_grow_with_the_log(tmp_path: Path) -> None:
    key = ServiceKey.generate()
    small_path, small_cp = synthetic_export(tmp_path, 1500, key)
    large_path, large_cp = synthetic_export(tmp_path, 6000, key)

    def run(path: Path, cp: dict[str, Any]) -> Callable[[], Any]:
        return lambda: audit_cmds.verify_export_file(path, cp, key.sign_public)

    small = peak_bytes(run(small_path, small_cp))
    large = peak_bytes(run(large_path, large_cp))
    assert large < large_path.stat().st_size / 4
    assert large < small * 1.5 + 64 * 1024
