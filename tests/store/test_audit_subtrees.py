"""The audit tree in the database: the subtree roots appends store give the same roots
and proofs as the full computation over every leaf, read O(log n) rows to do it, and
survive rolled-back appends, other writers and the 0007 migration's backfill."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, text
from sqlmodel import select
from tests.conftest import T0

from tandem.core import audit, merkle
from tandem.core.service_key import ServiceKey
from tandem.store import audit_log
from tandem.store.db import Database
from tandem.store.migrate import alembic_config
from tandem.store.models import AuditNode

SIZE = 150
PROPERTY = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def grow(db: Database, key: ServiceKey, count: int, *, batch: int = 64) -> None:
    for lo in range(0, count, batch):
        with db.write() as session:
            for _ in range(lo, min(count, lo + batch)):
                i = audit_log.size(session)
                audit_log.append(
                    session,
                    key,
                    deployment="dep_store",
                    kind="test.entry",
                    actor=None,
                    outcome="ok",
                    code=None,
                    envelope=None,
                    data={"i": i},
                    time=T0 + i,
                )


@pytest.fixture
def grown(db: Database, service_key: ServiceKey) -> tuple[Database, list[bytes]]:
    grow(db, service_key, SIZE)
    with db.read() as session:
        leaves = audit_log.leaf_hashes(session, SIZE)
    return db, [merkle.leaf_hash(h) for h in leaves]


def test_every_root_matches_the_full_computation(grown: tuple[Database, list[bytes]]) -> None:
    db, leaves = grown
    with db.read() as session:
        for n in range(1, SIZE + 1):
            assert audit_log.root_at(session, n) == merkle.root_from_leaf_hashes(leaves[:n])
            doc = audit_log.checkpoint_at(session, n)
            assert doc["checkpoint"]["root"] == audit_log.root_at(session, n).hex()


@PROPERTY
@given(data=st.data())
def test_inclusion_proofs_from_stored_roots_equal_those_from_all_leaves(
    grown: tuple[Database, list[bytes]], data: st.DataObject
) -> None:
    db, leaves = grown
    size = data.draw(st.integers(1, SIZE), label="tree_size")
    index = data.draw(st.integers(0, size - 1), label="index")
    with db.read() as session:
        stored = audit_log.inclusion_proof(session, index, size)
    assert stored == merkle.inclusion_proof_for_hashes(leaves, index, size)
    merkle.verify_inclusion_for_hash(
        leaves[index], index, size, stored, merkle.root_from_leaf_hashes(leaves[:size])
    )


@PROPERTY
@given(data=st.data())
def test_consistency_proofs_from_stored_roots_equal_those_from_all_leaves(
    grown: tuple[Database, list[bytes]], data: st.DataObject
) -> None:
    db, leaves = grown
    new = data.draw(st.integers(1, SIZE), label="new")
    old = data.draw(st.integers(1, new), label="old")
    with db.read() as session:
        stored = audit_log.consistency_proof(session, old, new)
    assert stored == merkle.consistency_proof_for_hashes(leaves, old, new)
    merkle.verify_consistency(
        old,
        new,
        merkle.root_from_leaf_hashes(leaves[:old]),
        merkle.root_from_leaf_hashes(leaves[:new]),
        stored,
    )


def test_every_proof_of_every_size_matches(grown: tuple[Database, list[bytes]]) -> None:
    """Exhaustive over the small sizes, where the tree's edge cases all occur."""
    db, leaves = grown
    with db.read() as session:
        for size in range(1, 40):
            for index in range(size):
                assert audit_log.inclusion_proof(
                    session, index, size
                ) == merkle.inclusion_proof_for_hashes(leaves, index, size)
            for old in range(1, size + 1):
                assert audit_log.consistency_proof(
                    session, old, size
                ) == merkle.consistency_proof_for_hashes(leaves, old, size)


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.reader, "before_cursor_execute", record)
    yield seen
    event.remove(db.reader, "before_cursor_execute", record)


def test_a_proof_reads_a_few_rows_not_every_leaf(
    grown: tuple[Database, list[bytes]], statements: list[str]
) -> None:
    db, _ = grown
    bound = 2 * math.ceil(math.log2(SIZE)) + 2
    for index, size in ((0, SIZE), (SIZE - 1, SIZE), (77, 129)):
        assert len(merkle.inclusion_proof_subtrees(index, size)) <= bound
        assert len(merkle.consistency_proof_subtrees(index + 1, size)) <= bound
    with db.read() as session:
        statements.clear()
        audit_log.inclusion_proof(session, 77, SIZE)
        audit_log.consistency_proof(session, 77, SIZE)
        audit_log.latest_checkpoint(session)
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(queries) <= 5
    # No query reads the leaf hashes by range, and the latest checkpoint is one row.
    assert not any("auditrow.seq <" in q for q in queries)
    assert any("checkpointrow" in q and "LIMIT" in q.upper() for q in queries)


def test_rolled_back_append_leaves_the_tree_right(db: Database, service_key: ServiceKey) -> None:
    grow(db, service_key, 5)

    def append_then_fail() -> None:
        with db.write() as session:
            audit_log.append(
                session,
                service_key,
                deployment="dep_store",
                kind="test.rolled_back",
                actor=None,
                outcome="ok",
                code=None,
                envelope=None,
                data={},
                time=T0,
            )
            raise RuntimeError("the state change failed after its audit entry")

    with pytest.raises(RuntimeError):
        append_then_fail()
    grow(db, service_key, 4)
    _assert_sound(db, service_key, 9)


def test_another_writer_in_between_leaves_the_tree_right(
    db: Database, service_key: ServiceKey, tmp_path: Path, backend: str
) -> None:
    """A second process (here a second engine) appends; the first one's kept
    accumulator no longer matches the head and is not used."""
    other = Database(db.url, schema=db.schema)
    try:
        grow(db, service_key, 3)
        grow(other, service_key, 2)
        grow(db, service_key, 3)
        grow(other, service_key, 1)
    finally:
        other.dispose()
    _assert_sound(db, service_key, 9)


def _assert_sound(db: Database, key: ServiceKey, n: int) -> None:
    with db.read() as session:
        lines = audit_log.lines(session, stop=n)
        checkpoint = audit_log.checkpoint_at(session, n)
        leaves = [merkle.leaf_hash(h) for h in audit_log.leaf_hashes(session, n)]
        for size in range(1, n + 1):
            assert audit_log.root_at(session, size) == merkle.root_from_leaf_hashes(leaves[:size])
    assert audit.verify_export(lines, checkpoint, key.sign_public).entries == n


def test_migration_0007_backfills_the_subtree_roots_of_an_existing_log(
    db: Database, service_key: ServiceKey
) -> None:
    grow(db, service_key, 37)
    with db.read() as session:
        before = sorted((n.height, n.idx, n.hash) for n in session.exec(select(AuditNode)).all())
    assert len(before) == 37 - (37).bit_count()
    cfg = alembic_config()
    with db.writer.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    with db.writer.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM auditrow")).scalar() == 37
    db.migrate()
    with db.read() as session:
        after = sorted((n.height, n.idx, n.hash) for n in session.exec(select(AuditNode)).all())
    assert after == before
    grow(db, service_key, 5)
    _assert_sound(db, service_key, 42)
