"""The log selection an offline-signer bundle carries (ADR 0011): the replayed kinds,
one request's entries from its creation on, and its wallet's velocity history, each
placed in the signed tree by a chain link or an inclusion proof, under an index the
service signs. Every read is by an index and costs what the selection holds, not the
size of the log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from tandem.core import merkle
from tandem.core import withdrawal as wcore
from tandem.core.canonical import loads_strict
from tandem.core.membership import REPLAYED_KINDS
from tandem.core.policy import parse_policy, velocity_window_seconds
from tandem.core.service_key import ServiceKey
from tandem.errors import InvalidStateError
from tandem.store import audit_log
from tandem.store.models import AuditRow, PolicyRow, Withdrawal

# Rows read per step of a backward scan, and stored subtree roots asked for per query
# (each is one term of an OR, which SQLite bounds in depth).
_SCAN_PAGE = 500
_NODES_PER_QUERY = 200


@dataclass(frozen=True)
class Selection:
    checkpoint: dict[str, Any]
    index: dict[str, Any]
    lines: list[str]
    proofs: list[list[str] | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "index": self.index,
            "lines": self.lines,
            "proofs": self.proofs,
        }


def _data_withdrawal(line: str) -> tuple[str | None, str]:
    entry = loads_strict(line)
    data = entry.get("data")
    wid = data.get("withdrawal") if isinstance(data, dict) else None
    return (wid if isinstance(wid, str) else None), entry["outcome"]


def _history_rows(
    session: Session, *, withdrawal_id: str, wanted: set[str], below: int
) -> tuple[int, dict[int, str]]:
    """Scan the lifecycle entries (by the kind index) back from the end of the log until
    the creation of ``withdrawal_id`` and of every request in ``wanted`` has been seen.
    Returns the creation index of ``withdrawal_id`` and the lines of the wanted
    requests' lifecycle entries. The requests are recent (approved and unexpired, or in
    the velocity window), so the scan reads only the recent part of the log."""
    created_at: int | None = None
    missing = set(wanted)
    found: dict[int, str] = {}
    hi = below
    while created_at is None or missing:
        rows = session.exec(
            select(AuditRow.seq, AuditRow.kind, AuditRow.line)
            .where(col(AuditRow.kind).in_(wcore.HISTORY_KINDS), col(AuditRow.seq) < hi)
            .order_by(col(AuditRow.seq).desc())
            .limit(_SCAN_PAGE)
        ).all()
        if not rows:
            break
        for seq, kind, line in rows:
            wid, outcome = _data_withdrawal(line)
            if wid is None:
                continue
            if wid == withdrawal_id and kind == "withdrawal.created" and outcome == "ok":
                created_at = seq
            if wid in wanted:
                found[seq] = line
                if kind == "withdrawal.created" and outcome == "ok":
                    missing.discard(wid)
        hi = rows[-1][0]
    if created_at is None:
        raise InvalidStateError("the log does not record this request's creation")
    if missing:
        raise InvalidStateError(f"the log does not record the creation of {sorted(missing)[0]}")
    return created_at, {seq: line for seq, line in found.items() if seq < created_at}


def _proofs(session: Session, indices: Iterable[int], tree_size: int) -> dict[int, list[str]]:
    """Inclusion proofs for ``indices`` in the tree of ``tree_size``, from the stored
    subtree roots: O(log n) roots each, asked for in a few queries."""
    wanted = list(indices)
    ids = list(dict.fromkeys(sid for i in wanted for sid in merkle.inclusion_proof_subtrees(i, tree_size)))
    found: dict[merkle.SubtreeId, bytes] = {}
    for lo in range(0, len(ids), _NODES_PER_QUERY):
        found.update(audit_log.subtrees(session, ids[lo : lo + _NODES_PER_QUERY]))
    return {i: [h.hex() for h in merkle.inclusion_proof_from_subtrees(i, tree_size, found)] for i in wanted}


def select_for(session: Session, key: ServiceKey, *, deployment: str, row: Withdrawal) -> Selection:
    """The signed selection of the log that request ``row``'s offline signer needs."""
    tree_size = audit_log.size(session)
    checkpoint = audit_log.checkpoint_at(session, tree_size)
    root: str = checkpoint["checkpoint"]["root"]
    policy_row = session.get(PolicyRow, row.policy_version)
    if policy_row is None:
        raise InvalidStateError("the request's policy is missing")
    window = velocity_window_seconds(parse_policy(loads_strict(policy_row.doc)))
    since = max(0, row.created_at - window)
    # Two range reads, one per (keyset, time) index: an OR of both would make the
    # planner read every row of the wallet.
    wanted: set[str] = set()
    for column in (Withdrawal.created_at, Withdrawal.released_at):
        wanted.update(
            session.exec(
                select(Withdrawal.id).where(
                    Withdrawal.keyset == row.keyset,
                    col(column) >= since,
                    col(Withdrawal.created_at) <= row.created_at,
                )
            ).all()
        )
    wanted.discard(row.id)
    created_index, history = _history_rows(session, withdrawal_id=row.id, wanted=wanted, below=tree_size)
    lines: dict[int, str] = dict(history)
    for seq, line in session.exec(
        select(AuditRow.seq, AuditRow.line).where(
            col(AuditRow.kind).in_(REPLAYED_KINDS), col(AuditRow.seq) < created_index
        )
    ).all():
        lines[seq] = line
    for seq, _digest, line in audit_log.iter_rows(session, start=created_index, stop=tree_size):
        lines[seq] = line
    indices = sorted(lines)
    # An entry whose successor is included is placed by the successor's prev; the
    # others need a proof.
    chosen = set(indices)
    ends = [i for i in indices if i + 1 not in chosen]
    proofs = _proofs(session, ends, tree_size)
    body = wcore.bundle_index_body(
        deployment=deployment,
        tree_size=tree_size,
        root=root,
        withdrawal=row.id,
        wallet=row.keyset,
        since=since,
        created_index=created_index,
        indices=indices,
    )
    return Selection(
        checkpoint=checkpoint,
        index=wcore.sign_bundle_index(key.sign_seed, body),
        lines=[lines[i] for i in indices],
        proofs=[proofs.get(i) for i in indices],
    )
