"""THREATS 21 with a start-up that does not re-read the whole log: start-up resumes
from a signed "verified up to entry N, root R" marker, so each attack here is mounted
against a log that was verified once already, then the server restarts over it.

What start-up itself reads: the marker, entry N - 1, the O(log N) stored subtree roots
of the tree at N, then only the entries after N. What it does not read: a row before
N edited in place. That is caught by ``tandem audit verify --full`` (the operator's
re-verification of the server's own database) and by every auditor's offline
verification of an export, and the tests below show both (docs/adr/0010).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import select
from tests.adversarial import test_t21_sealed as t21
from tests.adversarial.test_t21_sealed import assert_sealed, assert_unsealed, line_of, restart, set_line
from tests.conftest import World
from typer.testing import CliRunner

from tandem.cli.main import app as cli_app
from tandem.core import audit, audit_marker, merkle
from tandem.core.canonical import canonical
from tandem.core.service_key import ServiceKey
from tandem.errors import AuditVerificationError
from tandem.services import Tandem
from tandem.store import audit_log
from tandem.store.models import AuditHead, AuditMarker, AuditNode, AuditRow, CheckpointRow

http_for = t21.http_for  # the same probe app, fixture shared


def head_size(world: World) -> int:
    with world.svc.db.read() as s:
        head = s.get(AuditHead, 1)
        assert head is not None
        return head.size


def marker_doc(world: World) -> dict[str, Any] | None:
    with world.svc.db.read() as s:
        row = s.get(AuditMarker, 1)
        return json.loads(row.doc) if row else None


def set_marker(world: World, doc: dict[str, Any]) -> None:
    with world.svc.db.write() as s:
        s.exec(text("UPDATE auditmarker SET doc = :d WHERE id = 1").bindparams(d=canonical(doc).decode()))


def grow_through_the_api(http: TestClient, count: int) -> None:
    """Real appends: each unauthenticated read is refused and the refusal audited."""
    for _ in range(count):
        assert http.get("/v1/members").status_code == 401


@pytest.fixture
def verified(world: World, http_for: Callable[[Tandem], TestClient]) -> tuple[Tandem, TestClient, int]:
    """A restart that verified the whole log and signed the marker, then more entries."""
    svc = restart(world)
    marked = head_size(world)
    doc = marker_doc(world)
    assert doc is not None
    assert doc["marker"]["tree_size"] == marked
    http = http_for(svc)
    assert_unsealed(world, svc, http)
    grow_through_the_api(http, 6)
    assert head_size(world) > marked
    return svc, http, marked


@pytest.fixture
def pages_read(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    original = audit_log.rows_page

    def recording(session: Any, start: int, stop: int) -> list[tuple[int, str, str]]:
        seen.append((start, stop))
        return original(session, start, stop)

    monkeypatch.setattr(audit_log, "rows_page", recording)
    return seen


def refused_sign_changes_nothing(world: World, http: TestClient) -> None:
    before = head_size(world)
    envelope = world.client.sign(world["olga"], "session.open", {})
    response = http.post("/test/sign", json={"envelope": envelope})
    assert (response.status_code, response.json()["code"]) == (503, "sealed")
    assert head_size(world) == before


# --- start-up reads only what it has not verified -----------------------------------------------


def test_startup_reads_only_the_entries_after_the_marker(
    world: World, verified: Any, http_for: Any, pages_read: list[tuple[int, int]]
) -> None:
    _svc, _http, marked = verified
    n = head_size(world)
    svc = restart(world)
    assert svc.runner.sealed_reason is None
    assert pages_read
    assert all(start >= marked for start, _stop in pages_read)
    assert sum(stop - start for start, stop in pages_read) == n - marked
    assert marker_doc(world)["marker"]["tree_size"] == n  # type: ignore[index]

    pages_read.clear()
    again = restart(world)
    assert pages_read == []  # nothing new since: no entry row is read at all
    assert_unsealed(world, again, http_for(again))


# --- attacks after the marker, at the marker, and on the marker ---------------------------------


def test_edit_after_the_marker_seals(world: World, verified: Any, http_for: Any) -> None:
    _svc, _http, marked = verified
    original = line_of(world, marked + 1)
    entry = json.loads(original)
    entry["data"]["tampered"] = True
    set_line(world, marked + 1, canonical(entry).decode())
    svc = restart(world)
    http = http_for(svc)
    assert_sealed(world, svc, http)
    assert f"entry {marked + 1}" in str(svc.runner.sealed_reason)
    refused_sign_changes_nothing(world, http)
    set_line(world, marked + 1, original)
    svc.audit.startup_check()
    assert_unsealed(world, svc, http)


def test_edit_of_the_marker_entry_itself_seals(world: World, verified: Any, http_for: Any) -> None:
    _svc, _http, marked = verified
    entry = json.loads(line_of(world, marked - 1))
    entry["time"] += 1
    set_line(world, marked - 1, canonical(entry).decode())
    svc = restart(world)
    http = http_for(svc)
    assert_sealed(world, svc, http)
    assert f"entry {marked - 1}" in str(svc.runner.sealed_reason)
    refused_sign_changes_nothing(world, http)


def test_chain_rehashed_through_the_marker_seals(world: World, verified: Any, http_for: Any) -> None:
    """Edit entry 1 and re-hash every later entry and its hash column: consistent, but
    entry N - 1 is no longer the entry that was verified."""
    with world.svc.db.read() as s:
        rows = list(s.exec(select(AuditRow).order_by(AuditRow.seq)).all())
    prev = audit.GENESIS_PREV
    with world.svc.db.write() as s:
        for row in rows:
            entry = json.loads(row.line)
            if row.seq == 1:
                entry["data"]["tampered"] = True
            entry["prev"] = prev
            entry.pop("hash")
            entry["hash"] = prev = audit.entry_hash(entry)
            s.exec(
                text("UPDATE auditrow SET line = :l, hash = :h WHERE seq = :q").bindparams(
                    l=canonical(entry).decode(), h=entry["hash"], q=row.seq
                )
            )
        s.exec(text("UPDATE audithead SET last_hash = :h WHERE id = 1").bindparams(h=prev))
    svc = restart(world)
    http = http_for(svc)
    assert_sealed(world, svc, http)
    refused_sign_changes_nothing(world, http)


def test_truncation_below_the_marker_seals(world: World, verified: Any, http_for: Any) -> None:
    _svc, _http, marked = verified
    keep = marked - 2
    with world.svc.db.read() as s:
        state = s.get(AuditHead, 1)
        assert state is not None
        last = s.get(AuditRow, keep - 1)
        assert last is not None
        last_hash = last.hash
    with world.svc.db.write() as s:
        s.exec(text("DELETE FROM auditrow WHERE seq >= :k").bindparams(k=keep))
        s.exec(text("DELETE FROM checkpointrow WHERE tree_size > :k").bindparams(k=keep))
        s.exec(
            text("UPDATE audithead SET size = :k, last_hash = :h WHERE id = 1").bindparams(
                k=keep, h=last_hash
            )
        )
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))
    assert "verified earlier" in str(svc.runner.sealed_reason)


def _forged_markers(world: World, marked: int) -> list[tuple[str, dict[str, Any]]]:
    real = marker_doc(world)
    assert real is not None
    tampered = json.loads(json.dumps(real))
    tampered["marker"]["tree_size"] = head_size(world)  # "all verified": skip the new entries
    with world.svc.db.read() as s:
        checkpoint = audit_log.checkpoint_at(s, head_size(world))
    other = ServiceKey.generate()
    by_other = audit_marker.sign_marker(other.sign_seed, **{
        k: v for k, v in real["marker"].items() if k != "key_id"
    })
    copied = {"marker": checkpoint["checkpoint"], "signature": checkpoint["signature"]}
    return [("tampered", tampered), ("another key", by_other), ("checkpoint copied", copied)]


@pytest.mark.parametrize("which", ["tampered", "another key", "checkpoint copied"])
def test_forged_marker_seals_and_full_verification_clears_it(
    world: World, verified: Any, http_for: Any, which: str, tmp_path: Path
) -> None:
    _svc, _http, marked = verified
    doc = dict(_forged_markers(world, marked))[which]
    # The forgery skips the new entries; one of them is edited to make it worth it.
    entry = json.loads(line_of(world, marked + 2))
    entry["data"]["tampered"] = True
    original = line_of(world, marked + 2)
    set_line(world, marked + 2, canonical(entry).decode())
    set_marker(world, doc)
    svc = restart(world)
    http = http_for(svc)
    assert_sealed(world, svc, http)
    assert "marker" in str(svc.runner.sealed_reason)
    refused_sign_changes_nothing(world, http)

    # The operator looks: --full finds the edited entry and leaves the marker alone.
    result = full_verify(world, tmp_path)
    assert result.exit_code != 0
    assert f"entry {marked + 2}" in result.output
    assert marker_doc(world) == doc
    # The entry restored, --full verifies every row and replaces the forged marker.
    set_line(world, marked + 2, original)
    result = full_verify(world, tmp_path)
    assert result.exit_code == 0, result.output
    assert marker_doc(world)["marker"]["tree_size"] == head_size(world)  # type: ignore[index]
    svc.audit.startup_check()
    assert_unsealed(world, svc, http)


@pytest.mark.parametrize("where", ["after the marker", "under the marker's root"])
def test_stored_subtree_root_edited_seals(world: World, verified: Any, http_for: Any, where: str) -> None:
    """Proofs are read from the stored roots, so start-up checks those it has not seen
    against the entries, and the ones under the marker's root against that root."""
    _svc, _http, marked = verified
    if where == "after the marker":
        with world.svc.db.read() as s:
            nodes = list(s.exec(select(AuditNode)).all())
        newest = max(nodes, key=lambda node: (node.idx + 1) << node.height)
        height, idx = newest.height, newest.idx
        assert (idx + 1) << height > marked
    else:
        height, idx = next(p for p in merkle.root_subtrees(marked) if p[0] > 0)
    with world.svc.db.write() as s:
        s.exec(
            text("UPDATE auditnode SET hash = :h WHERE height = :a AND idx = :b").bindparams(
                h="00" * 32, a=height, b=idx
            )
        )
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))
    assert ("subtree root" if where == "after the marker" else "Merkle tree") in str(svc.runner.sealed_reason)


def test_deleted_marker_means_the_whole_chain_is_verified(
    world: World, verified: Any, http_for: Any
) -> None:
    with world.svc.db.write() as s:
        s.exec(text("DELETE FROM auditmarker"))
    entry = json.loads(line_of(world, 2))
    entry["data"]["tampered"] = True
    set_line(world, 2, canonical(entry).decode())
    svc = restart(world)
    assert_sealed(world, svc, http_for(svc))
    assert "entry 2" in str(svc.runner.sealed_reason)


# --- before the marker: not re-read at start-up, caught by --full and by the auditor ------------


def full_verify(world: World, tmp_path: Path) -> Any:
    data_dir = tmp_path / "server-data"
    data_dir.mkdir(exist_ok=True)
    (data_dir / "service.key").write_bytes(world.svc.key.to_file_bytes())
    url = world.svc.db.url
    if not world.svc.db.sqlite:
        url += "?options=" + quote(f"-csearch_path={world.svc.db.schema}", safe="")
    return CliRunner().invoke(
        cli_app,
        ["audit", "verify", "--full", "--data-dir", str(data_dir)],
        env={"TANDEM_DATABASE_URL": url},
    )


def test_entry_before_the_marker_edited_in_place(
    world: World, verified: Any, http_for: Any, tmp_path: Path
) -> None:
    _svc, _http, marked = verified
    assert marked > 4
    entry = json.loads(line_of(world, 2))
    entry["data"]["tampered"] = True
    set_line(world, 2, canonical(entry).decode())  # hash column left alone

    # Start-up does not re-read it: that is the price of not re-reading the whole log.
    svc = restart(world)
    assert svc.runner.sealed_reason is None

    # The operator's full re-verification of the database names it...
    result = full_verify(world, tmp_path)
    assert result.exit_code != 0
    assert "entry 2" in result.output

    # ...and so does the auditor's offline verification of the export.
    http = http_for(svc)
    from tandem.client import Client

    auditor = Client(http=http, clock=world.clock)
    lines, checkpoint = auditor.audit.export(world["olga"])
    with pytest.raises(AuditVerificationError) as err:
        audit.verify_export(lines, checkpoint, world.svc.key.sign_public)
    assert err.value.index == 2


def test_full_verification_of_a_sound_database_moves_the_marker(
    world: World, verified: Any, tmp_path: Path
) -> None:
    n = head_size(world)
    result = full_verify(world, tmp_path)
    assert result.exit_code == 0, result.output
    assert f"{n} entries" in result.output
    assert marker_doc(world)["marker"]["tree_size"] == n  # type: ignore[index]
    with world.svc.db.read() as s:
        assert s.exec(select(CheckpointRow).where(CheckpointRow.tree_size == n)).first() is not None
