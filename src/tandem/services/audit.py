"""Audit reads: export, proofs, and the start-up self-check that seals signing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tandem.core import audit, merkle
from tandem.core.canonical import loads_strict
from tandem.errors import AuditVerificationError, Error, InputError, NotFoundError
from tandem.services import keynetworks
from tandem.services.base import ServiceBase
from tandem.store import audit_log

EXPORT_CHUNK = 5000


class AuditService(ServiceBase):
    def startup_check(self) -> None:
        """Verify the whole chain; on failure seal every signing endpoint (503)."""
        try:
            with self.db.read() as session:
                n = audit_log.size(session)
                entries = []
                for i, line in enumerate(audit_log.lines(session)):
                    try:
                        entries.append(loads_strict(line))
                    except Error:
                        raise AuditVerificationError(f"entry {i} is not valid JSON", index=i) from None
                if len(entries) != n:
                    raise AuditVerificationError(
                        f"audit head says {n} entries, table holds {len(entries)}",
                        index=min(n, len(entries)),
                    )
                audit.verify_chain(entries)
                checkpoint = audit_log.latest_checkpoint(session)
                if n and checkpoint is None:
                    raise AuditVerificationError(f"{n} entries and no signed checkpoint", index=n - 1)
                if n and checkpoint is not None:
                    body = audit.verify_checkpoint(checkpoint, self.key.sign_public)
                    if body["tree_size"] != n or body["last_hash"] != entries[-1]["hash"]:
                        raise AuditVerificationError("latest checkpoint does not match the log", index=n - 1)
        except Error as exc:
            self.sealed_reason = f"audit chain does not verify at start-up: {exc.message}"
            return
        try:
            with self.db.read() as session:
                keynetworks.require_one_network_per_key(session)
        except Error as exc:
            self.sealed_reason = f"start-up check [{exc.code}]: {exc.message}"
            return
        self.sealed_reason = None

    def export_lines(self) -> Iterator[str]:
        with self.db.read() as session:
            n = audit_log.size(session)
            for start in range(0, n, EXPORT_CHUNK):
                yield from audit_log.lines(session, start=start, stop=min(n, start + EXPORT_CHUNK))

    def export(self) -> tuple[list[str], dict[str, Any]]:
        """All lines and the checkpoint that covers exactly them (one read transaction)."""
        with self.db.read() as session:
            n = audit_log.size(session)
            if n == 0:
                raise NotFoundError("the audit log is empty")
            return audit_log.lines(session, stop=n), audit_log.checkpoint_at(session, n)

    def checkpoint(self, tree_size: int | None = None) -> dict[str, Any]:
        with self.db.read() as session:
            if tree_size is None:
                doc = audit_log.latest_checkpoint(session)
                if doc is None:
                    raise NotFoundError("the audit log is empty")
                return doc
            if tree_size > audit_log.size(session):
                raise NotFoundError(f"no checkpoint for tree size {tree_size}")
            return audit_log.checkpoint_at(session, tree_size)

    def inclusion(self, index: int, tree_size: int | None = None) -> dict[str, Any]:
        with self.db.read() as session:
            n = audit_log.size(session)
            size = n if tree_size is None else tree_size
            if not 0 <= index < size <= n:
                raise InputError(f"need 0 <= index < tree_size <= {n}")
            leaves = audit_log.leaf_hashes(session, size)
            proof = merkle.inclusion_proof(leaves, index, size)
            return {
                "index": index,
                "tree_size": size,
                "entry": audit_log.entry(session, index),
                "proof": [p.hex() for p in proof],
                "checkpoint": audit_log.checkpoint_at(session, size),
            }

    def consistency(self, old_size: int, new_size: int) -> dict[str, Any]:
        with self.db.read() as session:
            n = audit_log.size(session)
            if not 0 < old_size <= new_size <= n:
                raise InputError(f"need 0 < old <= new <= {n}")
            leaves = audit_log.leaf_hashes(session, new_size)
            proof = merkle.consistency_proof(leaves, old_size, new_size)
            return {
                "old_size": old_size,
                "new_size": new_size,
                "proof": [p.hex() for p in proof],
                "old_checkpoint": audit_log.checkpoint_at(session, old_size),
                "new_checkpoint": audit_log.checkpoint_at(session, new_size),
            }
