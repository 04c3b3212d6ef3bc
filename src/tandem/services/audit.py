"""Audit reads: export, proofs, and the start-up self-check that seals signing.

Nothing here grows with the log except the full re-verification an operator asks for:
start-up resumes from a signed "verified up to N" marker and checks only what was
appended since, a proof reads O(log n) stored subtree roots, the latest checkpoint is
one row, and an export streams page by page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from tandem.core import audit, audit_marker, merkle
from tandem.errors import AuditVerificationError, Error, InputError, NotFoundError
from tandem.services import keynetworks
from tandem.services.base import Runner
from tandem.store import audit_log

# Rows per read transaction of an export: a few hundred kilobytes in memory at most.
EXPORT_CHUNK = 1000
log = logging.getLogger("tandem.audit")


@dataclass(frozen=True)
class StoredVerifyReport:
    """What a verification of the server's own rows established."""

    entries: int
    verified_from: int
    root: str
    last_hash: str
    marker_written: bool


class AuditService:
    """Audit reads and the start-up check; sealing is the runner's state."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def startup_check(self) -> None:
        """Verify what was appended since the signed verified-up-to marker (the whole
        chain when there is none); on failure seal every signing endpoint (503)."""
        try:
            self.verify_stored(full=False)
        except Error as exc:
            self._seal(exc, f"audit chain does not verify at start-up: {exc.message}")
            return
        try:
            with self.runner.db.read() as session:
                keynetworks.require_one_network_per_key(session)
        except Error as exc:
            self._seal(exc, f"start-up check [{exc.code}]: {exc.message}")
            return
        self.runner.sealed_reason = None
        self.runner.sealed_code = None

    def _seal(self, exc: Error, reason: str) -> None:
        """Seal signing and say so in the server log: one ERROR line naming the check's
        code and the bad entry (its index and kind) or key set. Codes, indices, kinds and
        ids only: no entry body, no key material."""
        self.runner.sealed_reason = reason
        self.runner.sealed_code = exc.code
        where = ""
        index = getattr(exc, "index", None)
        if isinstance(index, int):
            where = f" at audit entry {index} (kind {self._entry_kind(index)})"
        keysets = exc.details.get("keysets")
        if keysets:
            where += f" in key set {', '.join(map(str, keysets))}"
        log.error("signing sealed by the start-up check [%s]%s: %s", exc.code, where, exc.message)

    def _entry_kind(self, index: int) -> str:
        """The kind an audit row says it is, for the log line; "unknown" when the row is
        missing or does not parse (that is often why it failed)."""
        try:
            with self.runner.db.read() as session:
                stored = audit_log.row(session, index)
            if stored is None:
                return "missing"
            kind = json.loads(stored.line).get("kind")
        except Exception:
            return "unknown"
        return kind if isinstance(kind, str) and kind.isprintable() and len(kind) <= 64 else "unknown"

    def verify_stored(
        self, *, full: bool, progress: Callable[[int, int], None] | None = None
    ) -> StoredVerifyReport:
        """Verify the stored chain, its subtree roots and its latest checkpoint, then
        move the marker to the end of what verified.

        ``full`` ignores the marker and re-reads every row from entry 0 (``tandem audit
        verify --full``): the one check that finds a row before the marker edited in
        place. It replaces the marker even when the one there does not verify, which
        is how an operator clears that seal once the log itself is sound. ``progress``
        is called with (entries verified, entries in the log) after every page.
        """
        with self.runner.db.read() as session:
            n = audit_log.size(session)
            start, prev, tree = 0, audit.GENESIS_PREV, merkle.MerkleAccumulator()
            doc = None if full else audit_log.marker(session)
            if doc is not None:
                start, prev, tree = self._resume(session, doc, n)
            check = audit.StoredChainCheck(start_index=start, prev=prev, tree=tree)
            for lo in range(start, n, audit_log.PAGE):
                hi = min(n, lo + audit_log.PAGE)
                self._check_page(session, check, lo, hi, n)
                if progress is not None:
                    progress(hi, n)
            if audit_log.row(session, n) is not None:
                raise AuditVerificationError(
                    f"entry {n}: the table holds entries beyond the {n} the audit head counts",
                    index=n,
                )
            if n == 0:
                return StoredVerifyReport(0, 0, merkle.EMPTY_ROOT.hex(), audit.GENESIS_PREV, False)
            root = tree.root().hex()
            last_hash = str(check.last_hash)
            deployment = self._check_latest_checkpoint(session, n, root, last_hash)
        moved = full or start < n or doc is None
        if moved:
            new_marker = audit_marker.sign_marker(
                self.runner.key.sign_seed,
                deployment=deployment,
                tree_size=n,
                root=root,
                last_hash=last_hash,
                time=self.runner.clock(),
            )
            try:
                with self.runner.db.write() as session:
                    audit_log.put_marker(session, new_marker, replace=full)
            except Exception as exc:
                # What was verified stays verified; the next start-up re-reads a little
                # more. Not a reason to refuse to start.
                log.warning("could not move the verified-up-to marker: %s", type(exc).__name__)
                moved = False
        return StoredVerifyReport(n, start, root, last_hash, moved)

    def _resume(self, session: Session, doc: Any, n: int) -> tuple[int, str, merkle.MerkleAccumulator]:
        """Where a verified marker lets verification resume: entry N - 1 must still be
        the entry verified then, and the stored tree over the first N entries must still
        have the root verified then."""
        marker = audit_marker.verify_marker(doc, self.runner.key.sign_public)
        size = marker.tree_size
        if size > n:
            raise AuditVerificationError(
                f"entry {n}: missing; {size} entries were verified earlier and the audit head now counts {n}",
                index=n,
            )
        if size == 0:
            return 0, audit.GENESIS_PREV, merkle.MerkleAccumulator()
        last = size - 1
        stored = audit_log.row(session, last)
        if stored is None:
            raise AuditVerificationError(f"entry {last}: missing from the table", index=last)
        audit.StoredChainCheck(start_index=last, prev=None, tree=None).check(stored.line, stored.hash)
        if stored.hash != marker.last_hash:
            raise AuditVerificationError(
                f"entry {last}: hash differs from the one verified earlier (this entry or an "
                "earlier one was changed and the chain re-hashed)",
                index=last,
            )
        tree = audit_log.peaks_at(session, size)
        if tree.root().hex() != marker.root:
            raise AuditVerificationError(
                f"entry {last}: the stored Merkle tree over the first {size} entries differs "
                "from the one verified earlier",
                index=last,
            )
        return size, marker.last_hash, tree

    @staticmethod
    def _check_page(session: Session, check: audit.StoredChainCheck, lo: int, hi: int, n: int) -> None:
        expected: dict[merkle.SubtreeId, str] = {}
        for seq, digest, line in audit_log.rows_page(session, lo, hi):
            position = check.position
            if seq != position:
                raise AuditVerificationError(f"entry {position}: missing from the table", index=position)
            for height, idx, root in check.check(line, digest)[1:]:
                expected[(height, idx)] = root.hex()
        if check.position != hi:
            raise AuditVerificationError(
                f"entry {check.position}: missing; the audit head counts {n} entries",
                index=check.position,
            )
        stored = audit_log.subtrees_completed_in(session, lo, hi)
        for (height, idx), want in expected.items():
            if stored.get((height, idx)) != want:
                last = ((idx + 1) << height) - 1
                raise AuditVerificationError(
                    f"entry {last}: the stored subtree root (height {height}, index {idx}) "
                    "differs from the entries it covers",
                    index=last,
                )

    def _check_latest_checkpoint(self, session: Session, n: int, root: str, last_hash: str) -> str:
        doc = audit_log.latest_checkpoint(session)
        if doc is None:
            raise AuditVerificationError(f"{n} entries and no signed checkpoint", index=n - 1)
        body = audit.verify_checkpoint(doc, self.runner.key.sign_public)
        if body["tree_size"] != n or body["last_hash"] != last_hash or body["root"] != root:
            raise AuditVerificationError("latest checkpoint does not match the log", index=n - 1)
        deployment: str = body["deployment"]
        return deployment

    # --- export ------------------------------------------------------------------------

    def export_stream(self) -> tuple[int, Iterator[str]]:
        """The size of the log now and its lines up to there, read one page per short
        read transaction as the consumer asks: constant memory whatever the size.
        Rows below the size never change, so the pages add up to one consistent log."""
        with self.runner.db.read() as session:
            n = audit_log.size(session)
        if n == 0:
            raise NotFoundError("the audit log is empty")

        def pages() -> Iterator[str]:
            for lo in range(0, n, EXPORT_CHUNK):
                with self.runner.db.read() as session:
                    yield from audit_log.lines(session, start=lo, stop=min(n, lo + EXPORT_CHUNK))

        return n, pages()

    def export(self) -> tuple[list[str], dict[str, Any]]:
        """All lines and the checkpoint that covers exactly them, in memory: for tests
        and small logs; the API and the CLI stream instead."""
        with self.runner.db.read() as session:
            n = audit_log.size(session)
            if n == 0:
                raise NotFoundError("the audit log is empty")
            return audit_log.lines(session, stop=n), audit_log.checkpoint_at(session, n)

    # --- checkpoints and proofs --------------------------------------------------------

    def checkpoint(self, tree_size: int | None = None) -> dict[str, Any]:
        with self.runner.db.read() as session:
            if tree_size is None:
                doc = audit_log.latest_checkpoint(session)
                if doc is None:
                    raise NotFoundError("the audit log is empty")
                return doc
            if tree_size > audit_log.size(session):
                raise NotFoundError(f"no checkpoint for tree size {tree_size}")
            return audit_log.checkpoint_at(session, tree_size)

    def inclusion(self, index: int, tree_size: int | None = None) -> dict[str, Any]:
        with self.runner.db.read() as session:
            n = audit_log.size(session)
            size = n if tree_size is None else tree_size
            if not 0 <= index < size <= n:
                raise InputError(f"need 0 <= index < tree_size <= {n}")
            proof = audit_log.inclusion_proof(session, index, size)
            return {
                "index": index,
                "tree_size": size,
                "entry": audit_log.entry(session, index),
                "proof": [p.hex() for p in proof],
                "checkpoint": audit_log.checkpoint_at(session, size),
            }

    def consistency(self, old_size: int, new_size: int) -> dict[str, Any]:
        with self.runner.db.read() as session:
            n = audit_log.size(session)
            if not 0 < old_size <= new_size <= n:
                raise InputError(f"need 0 < old <= new <= {n}")
            proof = audit_log.consistency_proof(session, old_size, new_size)
            return {
                "old_size": old_size,
                "new_size": new_size,
                "proof": [p.hex() for p in proof],
                "old_checkpoint": audit_log.checkpoint_at(session, old_size),
                "new_checkpoint": audit_log.checkpoint_at(session, new_size),
            }
