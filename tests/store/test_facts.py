"""The per-process fact cache (tandem.store.facts): a fact read by one write transaction
is reused only at the very audit head it was read at, moves on with this process's own
commits only when they provably left it alone, and is read again after anything else:
another process's write, an entry of another kind, a written fact row."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import Session
from tests.conftest import T0

from tandem.core.service_key import ServiceKey
from tandem.store import audit_log, facts
from tandem.store.db import Database
from tandem.store.models import AuditHead, PolicyRow


def _append(session: Session, key: ServiceKey, kind: str) -> None:
    audit_log.append(
        session,
        key,
        deployment="dep_facts",
        kind=kind,
        actor=None,
        outcome="ok",
        code=None,
        envelope=None,
        data={},
        time=T0,
    )


class Loads:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _session: Session) -> int:
        self.count += 1
        return self.count


@pytest.fixture
def key() -> ServiceKey:
    return ServiceKey.generate()


@pytest.fixture
def started(db: Database, key: ServiceKey) -> Database:
    with db.write() as session:
        _append(session, key, "test.start")
    return db


def _other_process(db: Database) -> Database:
    return Database(db.url, schema=db.schema)


def test_reused_at_the_same_head_and_read_again_after_another_process_wrote(
    started: Database, key: ServiceKey
) -> None:
    loads = Loads()
    for _ in range(3):
        with started.write() as session:
            assert facts.kept(session, "x", loads) == 1
    other = _other_process(started)
    try:
        with other.write() as session:
            _append(session, key, "withdrawal.created")  # a keeping kind, but not ours
    finally:
        other.dispose()
    with started.write() as session:
        assert facts.kept(session, "x", loads) == 2


@pytest.mark.parametrize("kind", ["withdrawal.approved", "withdrawal.approve.refused"])
def test_an_own_commit_of_a_keeping_kind_moves_the_facts_on(
    started: Database, key: ServiceKey, kind: str
) -> None:
    loads = Loads()
    with started.write() as session:
        assert facts.kept(session, "x", loads) == 1
        _append(session, key, kind)
        # Once this transaction appended, it reads for itself.
        assert facts.kept(session, "x", loads) == 2
    with started.write() as session:
        assert facts.kept(session, "x", loads) == 1


def test_an_entry_of_another_kind_forgets_the_facts(started: Database, key: ServiceKey) -> None:
    loads = Loads()
    with started.write() as session:
        facts.kept(session, "x", loads)
    with started.write() as session:
        _append(session, key, "policy.change_approved")
    with started.write() as session:
        assert facts.kept(session, "x", loads) == 2


def test_a_written_fact_row_forgets_the_facts_whatever_the_entry(started: Database, key: ServiceKey) -> None:
    loads = Loads()
    with started.write() as session:
        facts.kept(session, "x", loads)
    with started.write() as session:
        session.add(PolicyRow(version=99, doc="{}", hash="0" * 64, effective_at=T0))
        # A pending fact row: this transaction reads for itself.
        assert facts.kept(session, "x", loads) == 2
        _append(session, key, "withdrawal.created")
    with started.write() as session:
        assert facts.kept(session, "x", loads) == 3


def test_a_rolled_back_transaction_moves_nothing(started: Database, key: ServiceKey) -> None:
    loads = Loads()
    with started.write() as session:
        facts.kept(session, "x", loads)
    def rolled_back() -> None:
        with started.write() as session:
            _append(session, key, "withdrawal.created")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        rolled_back()
    with started.write() as session:
        # Still the head the fact was read at: it holds.
        assert facts.kept(session, "x", loads) == 1
        head = session.get(AuditHead, 1)
        assert head is not None
        assert head.size == 1


def test_reads_never_use_the_cache(started: Database) -> None:
    loads = Loads()
    with started.write() as session:
        facts.kept(session, "x", loads)
    with started.read() as session:
        assert facts.kept(session, "x", loads) == 2


def test_a_kept_row_enters_the_session_without_a_query(started: Database) -> None:
    with started.write() as session:
        session.add(PolicyRow(version=7, doc='{"a":1}', hash="1" * 64, effective_at=T0))
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    with started.write() as session:
        first = facts.kept_row(session, PolicyRow, 7)
        assert first is not None
        assert first.doc == '{"a":1}'
    event.listen(started.writer, "before_cursor_execute", count)
    try:
        with started.write() as session:
            facts.head_at_start(session)
            before = len(statements)
            row = facts.kept_row(session, PolicyRow, 7)
            assert row is not None
            assert (row.doc, row.effective_at) == ('{"a":1}', T0)
            assert session.get(PolicyRow, 7) is row
            assert len(statements) == before
    finally:
        event.remove(started.writer, "before_cursor_execute", count)
