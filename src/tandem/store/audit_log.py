"""The audit log in the database: append inside the caller's write transaction.

Every read here costs O(1) or O(log n) rows in the size of the log, or streams in
pages of a fixed size: the latest checkpoint is one primary-key lookup, a root or a
proof reads the O(log n) stored subtree roots (``AuditNode``) it is made of, and an
export pages through the rows in index order without holding them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, or_
from sqlmodel import Session, col, select

from tandem.core import audit, merkle
from tandem.core.canonical import canonical, loads_strict
from tandem.core.service_key import ServiceKey
from tandem.errors import AuditVerificationError, AuditWriteError, NotFoundError
from tandem.store import facts
from tandem.store.models import AuditHead, AuditMarker, AuditNode, AuditRow, CheckpointRow

PAGE = 5000
MARKER_ID = 1


class _TreeCache:
    """The writer's Merkle accumulator, kept between appends instead of being rebuilt
    from the head row every time. Keyed by the head it extends (size, last hash),
    which the last hash pins to one history, so a rolled-back append or another
    process's append simply misses and the head row is read instead."""

    __slots__ = ("_lock", "_states")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: OrderedDict[tuple[int, str], merkle.MerkleAccumulator] = OrderedDict()

    def get(self, size: int, last_hash: str) -> merkle.MerkleAccumulator | None:
        with self._lock:
            acc = self._states.get((size, last_hash))
            # Callers mutate what they get; the cached one stays as it was.
            return acc.copy() if acc is not None else None

    def put(self, last_hash: str, acc: merkle.MerkleAccumulator) -> None:
        with self._lock:
            self._states[(acc.size, last_hash)] = acc.copy()
            while len(self._states) > 4:
                self._states.popitem(last=False)


_cache_for = facts.PerEngine(_TreeCache).of


@dataclass(frozen=True)
class Record:
    """What one audit entry says; the store adds its index, chain link and hash."""

    kind: str
    actor: str | None
    outcome: str
    code: str | None
    envelope: dict[str, Any] | None
    data: dict[str, Any]
    time: int


def append(  # noqa: PLR0913 - keyword-only fields of one entry
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
    """Append one entry, the subtree roots it completes and a fresh signed checkpoint.
    Raises on any failure, so the surrounding transaction (and the state change in it)
    rolls back: fail closed."""
    record = Record(kind, actor, outcome, code, envelope, data, time)
    return append_batch(session, key, deployment=deployment, records=[record])[0]


def append_batch(
    session: Session, key: ServiceKey, *, deployment: str, records: Sequence[Record]
) -> list[dict[str, Any]]:
    """:func:`append` for several entries in order, as one set of inserts: each entry
    still gets its own subtree roots and its own signed checkpoint."""
    facts.head_at_start(session)  # the head this transaction found, for the fact cache
    head = session.get(AuditHead, 1)
    if head is None:
        head = AuditHead(id=1, size=0, last_hash=audit.GENESIS_PREV, state="")
    cache = _cache_for(session)
    acc = cache.get(head.size, head.last_hash)
    if acc is None:
        acc = (
            merkle.MerkleAccumulator.from_state(loads_strict(head.state))
            if head.state
            else merkle.MerkleAccumulator()
        )
    if acc.size != head.size:
        raise AuditWriteError("the audit head disagrees with its own tree; nothing was changed")
    entries: list[dict[str, Any]] = []
    rows: list[AuditRow] = []
    nodes: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    prev = head.last_hash
    for record in records:
        entry, line = audit.make_entry_line(
            index=acc.size,
            time=record.time,
            deployment=deployment,
            kind=record.kind,
            actor=record.actor,
            outcome=record.outcome,
            code=record.code,
            envelope=record.envelope,
            data=record.data,
            prev=prev,
        )
        digest: str = entry["hash"]
        completed = acc.append_leaf_hash_with_subtrees(merkle.leaf_hash(bytes.fromhex(digest)))
        rows.append(AuditRow(seq=entry["index"], hash=digest, kind=record.kind, line=line.decode()))
        nodes.extend({"height": h, "idx": i, "hash": root.hex()} for h, i, root in completed[1:])
        doc = audit.sign_checkpoint(
            key.sign_seed,
            deployment=deployment,
            tree_size=acc.size,
            root=acc.root().hex(),
            last_hash=digest,
            time=record.time,
        )
        checkpoints.append({"tree_size": acc.size, "doc": audit.fast_canonical(doc).decode()})
        entries.append(entry)
        prev = digest
    if not entries:
        return entries
    head.size = acc.size
    head.last_hash = prev
    head.state = audit.fast_canonical(acc.state()).decode()
    session.add(head)
    session.add_all(rows)
    try:
        session.flush()
        # Plain inserts on the session's own connection and transaction for the rows
        # nothing else ever loads as objects: the ORM's unit of work costs more than
        # the hashing and signing for them.
        connection = session.connection()
        if nodes:
            connection.execute(insert(AuditNode), nodes)
        connection.execute(insert(CheckpointRow), checkpoints)
    except Exception as exc:
        raise AuditWriteError("the audit entry could not be written; nothing was changed") from exc
    cache.put(prev, acc)
    facts.appended(session, [r.kind for r in records], (acc.size, prev))
    return entries


def size(session: Session) -> int:
    head = session.get(AuditHead, 1)
    return head.size if head else 0


def last_hash(session: Session) -> str:
    head = session.get(AuditHead, 1)
    return head.last_hash if head else audit.GENESIS_PREV


def latest_checkpoint(session: Session) -> dict[str, Any] | None:
    """The checkpoint of the largest tree: one row through the primary-key index."""
    row = session.exec(select(CheckpointRow).order_by(col(CheckpointRow.tree_size).desc()).limit(1)).first()
    return loads_strict(row.doc) if row else None


def checkpoint_at(session: Session, tree_size: int) -> dict[str, Any]:
    row = session.get(CheckpointRow, tree_size)
    if row is None:
        raise NotFoundError(f"no checkpoint for tree size {tree_size}")
    result: dict[str, Any] = loads_strict(row.doc)
    return result


def lines(session: Session, *, start: int = 0, stop: int | None = None) -> list[str]:
    """The lines of ``[start, stop)`` as a list: for bounded ranges only; an export of
    the whole log goes through :func:`iter_lines`."""
    query = select(AuditRow.line).where(col(AuditRow.seq) >= start).order_by(col(AuditRow.seq))
    if stop is not None:
        query = query.where(col(AuditRow.seq) < stop)
    return list(session.exec(query).all())


def rows_page(session: Session, start: int, stop: int) -> list[tuple[int, str, str]]:
    """(seq, hash, line) of the rows with ``start <= seq < stop``, in order."""
    query = (
        select(AuditRow.seq, AuditRow.hash, AuditRow.line)
        .where(col(AuditRow.seq) >= start, col(AuditRow.seq) < stop)
        .order_by(col(AuditRow.seq))
    )
    return [(seq, digest, line) for seq, digest, line in session.exec(query).all()]


def iter_rows(
    session: Session, *, start: int = 0, stop: int, page: int = PAGE
) -> Iterator[tuple[int, str, str]]:
    """(seq, hash, line) for ``start <= seq < stop``, one page of rows in memory at a time."""
    for lo in range(start, stop, page):
        yield from rows_page(session, lo, min(stop, lo + page))


def iter_lines(session: Session, *, start: int = 0, stop: int, page: int = PAGE) -> Iterator[str]:
    for _seq, _digest, line in iter_rows(session, start=start, stop=stop, page=page):
        yield line


def entry(session: Session, index: int) -> dict[str, Any]:
    row = session.get(AuditRow, index)
    if row is None:
        raise NotFoundError(f"no audit entry {index}")
    result: dict[str, Any] = loads_strict(row.line)
    return result


def row(session: Session, index: int) -> AuditRow | None:
    return session.get(AuditRow, index)


def entries_of_kinds(session: Session, kinds: Iterable[str]) -> list[dict[str, Any]]:
    """Every entry of ``kinds``, in log order (the kind column is indexed)."""
    query = select(AuditRow).where(col(AuditRow.kind).in_(list(kinds))).order_by(col(AuditRow.seq))
    return [loads_strict(r.line) for r in session.exec(query).all()]


# --- subtree roots -------------------------------------------------------------------


def _node_hex(value: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != merkle.HASH_SIZE:
        raise AuditVerificationError(f"stored {what} is not a 32-byte hex hash")
    return raw


def subtrees(session: Session, ids: Iterable[merkle.SubtreeId]) -> dict[merkle.SubtreeId, bytes]:
    """The stored roots of the named perfect subtrees (height 0: leaf hashes from the
    rows). Two queries whatever the log's size; a missing one is an
    :class:`AuditVerificationError`, since appends write every one."""
    wanted = list(dict.fromkeys(ids))
    leaves = [idx for height, idx in wanted if height == 0]
    nodes = [(height, idx) for height, idx in wanted if height > 0]
    found: dict[merkle.SubtreeId, bytes] = {}
    if leaves:
        query = select(AuditRow.seq, AuditRow.hash).where(col(AuditRow.seq).in_(leaves))
        for seq, digest in session.exec(query).all():
            found[(0, seq)] = merkle.leaf_hash(_node_hex(digest, f"hash of entry {seq}"))
    if nodes:
        condition = or_(*(and_(col(AuditNode.height) == h, col(AuditNode.idx) == i) for h, i in nodes))
        query2 = select(AuditNode.height, AuditNode.idx, AuditNode.hash).where(condition)
        for height, idx, digest in session.exec(query2).all():
            found[(height, idx)] = _node_hex(digest, f"subtree root ({height}, {idx})")
    missing = [i for i in wanted if i not in found]
    if missing:
        height, idx = missing[0]
        raise AuditVerificationError(
            f"stored subtree root (height {height}, index {idx}) is missing",
            index=min((idx + 1) << height, size(session)) - 1,
        )
    return found


def subtrees_completed_in(session: Session, start: int, stop: int) -> dict[merkle.SubtreeId, str]:
    """The stored roots (height >= 1) that the appends of entries ``[start, stop)``
    wrote: one range query per height, O(stop - start) rows."""
    conditions = []
    height = 1
    while (1 << height) <= stop:
        # Subtree (h, i) is completed by entry (i + 1) * 2**h - 1.
        first = -(-(start + 1) // (1 << height)) - 1
        last = stop // (1 << height) - 1
        if first <= last:
            conditions.append(
                and_(
                    col(AuditNode.height) == height,
                    col(AuditNode.idx) >= first,
                    col(AuditNode.idx) <= last,
                )
            )
        height += 1
    if not conditions:
        return {}
    query = select(AuditNode.height, AuditNode.idx, AuditNode.hash).where(or_(*conditions))
    return {(h, i): digest for h, i, digest in session.exec(query).all()}


def root_at(session: Session, tree_size: int) -> bytes:
    """The Merkle root of the first ``tree_size`` entries from O(log n) stored roots."""
    return merkle.root_from_subtrees(tree_size, subtrees(session, merkle.root_subtrees(tree_size)))


def peaks_at(session: Session, tree_size: int) -> merkle.MerkleAccumulator:
    ids = merkle.root_subtrees(tree_size)
    found = subtrees(session, ids)
    return merkle.MerkleAccumulator.from_peaks(tree_size, [found[i] for i in ids])


def inclusion_proof(session: Session, index: int, tree_size: int) -> list[bytes]:
    ids = merkle.inclusion_proof_subtrees(index, tree_size)
    return merkle.inclusion_proof_from_subtrees(index, tree_size, subtrees(session, ids))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    ids = merkle.consistency_proof_subtrees(old_size, new_size)
    return merkle.consistency_proof_from_subtrees(old_size, new_size, subtrees(session, ids))


def leaf_hashes(session: Session, tree_size: int) -> list[bytes]:
    """Every leaf hash below ``tree_size``: O(n), for tests that cross-check proofs
    against the full computation; no request path reads it."""
    query = select(AuditRow.hash).where(col(AuditRow.seq) < tree_size).order_by(col(AuditRow.seq))
    return [bytes.fromhex(h) for h in session.exec(query).all()]


# --- the verified-up-to marker --------------------------------------------------------


def marker(session: Session) -> Any:
    """The stored marker document, parsed, or None. Unparseable text is an
    :class:`AuditVerificationError` (it was not written by the service)."""
    stored = session.get(AuditMarker, MARKER_ID)
    if stored is None:
        return None
    try:
        return loads_strict(stored.doc)
    except Exception:
        raise AuditVerificationError("the verified-up-to marker is not valid JSON") from None


def put_marker(session: Session, doc: dict[str, Any], *, replace: bool = False) -> None:
    """Store ``doc`` as the marker unless one covering more entries is already there
    (two start-ups racing never move it backwards); ``replace`` overwrites whatever is
    there, for the operator's full re-verification."""
    stored = session.get(AuditMarker, MARKER_ID)
    if stored is not None and replace:
        stored.doc = canonical(doc).decode()
    elif stored is not None:
        try:
            current = loads_strict(stored.doc)["marker"]["tree_size"]
        except Exception:
            current = -1
        if isinstance(current, int) and current > doc["marker"]["tree_size"]:
            return
        stored.doc = canonical(doc).decode()
    else:
        stored = AuditMarker(id=MARKER_ID, doc=canonical(doc).decode())
    session.add(stored)
    session.flush()
