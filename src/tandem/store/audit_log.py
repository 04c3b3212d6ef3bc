"""The audit log in the database: append inside the caller's write transaction."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from tandem.core import audit, merkle
from tandem.core.canonical import canonical, loads_strict
from tandem.core.service_key import ServiceKey
from tandem.errors import AuditWriteError, NotFoundError
from tandem.store.models import AuditHead, AuditRow, CheckpointRow


def append(
    session: Session,
    key: ServiceKey,
    *,
    deployment: str,
    kind: str,
    actor: str | None,
    outcome: str,
    code: str | None,
    envelope: dict[str, Any] | None,
    data: dict[str, Any],
    time: int,
) -> dict[str, Any]:
    """Append one entry and a fresh signed checkpoint. Raises on any failure, so the
    surrounding transaction (and the state change in it) rolls back: fail closed."""
    head = session.get(AuditHead, 1)
    if head is None:
        head = AuditHead(id=1, size=0, last_hash=audit.GENESIS_PREV, state="")
    acc = (
        merkle.MerkleAccumulator.from_state(loads_strict(head.state))
        if head.state
        else merkle.MerkleAccumulator()
    )
    entry = audit.make_entry(
        index=head.size,
        time=time,
        deployment=deployment,
        kind=kind,
        actor=actor,
        outcome=outcome,
        code=code,
        envelope=envelope,
        data=data,
        prev=head.last_hash,
    )
    acc.append(bytes.fromhex(entry["hash"]))
    session.add(
        AuditRow(seq=entry["index"], hash=entry["hash"], kind=kind, line=canonical(entry).decode())
    )
    head.size = acc.size
    head.last_hash = entry["hash"]
    head.state = canonical(acc.state()).decode()
    session.add(head)
    doc = audit.sign_checkpoint(
        key.sign_seed,
        deployment=deployment,
        tree_size=acc.size,
        root=acc.root().hex(),
        last_hash=entry["hash"],
        time=time,
    )
    session.add(CheckpointRow(tree_size=acc.size, doc=canonical(doc).decode()))
    try:
        session.flush()
    except Exception as exc:
        raise AuditWriteError("the audit entry could not be written; nothing was changed") from exc
    return entry


def size(session: Session) -> int:
    head = session.get(AuditHead, 1)
    return head.size if head else 0


def latest_checkpoint(session: Session) -> dict[str, Any] | None:
    row = session.exec(select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc())).first()
    return loads_strict(row.doc) if row else None


def checkpoint_at(session: Session, tree_size: int) -> dict[str, Any]:
    row = session.get(CheckpointRow, tree_size)
    if row is None:
        raise NotFoundError(f"no checkpoint for tree size {tree_size}")
    result: dict[str, Any] = loads_strict(row.doc)
    return result


def lines(session: Session, *, start: int = 0, stop: int | None = None) -> list[str]:
    query = select(AuditRow.line).where(col(AuditRow.seq) >= start).order_by(col(AuditRow.seq))
    if stop is not None:
        query = query.where(col(AuditRow.seq) < stop)
    return list(session.exec(query).all())


def leaf_hashes(session: Session, tree_size: int) -> list[bytes]:
    query = select(AuditRow.hash).where(col(AuditRow.seq) < tree_size).order_by(col(AuditRow.seq))
    return [bytes.fromhex(h) for h in session.exec(query).all()]


def entry(session: Session, index: int) -> dict[str, Any]:
    row = session.get(AuditRow, index)
    if row is None:
        raise NotFoundError(f"no audit entry {index}")
    result: dict[str, Any] = loads_strict(row.line)
    return result
