"""Use cases for key ceremonies, reshares and key-set export/import.

Every step is a signed action run by :meth:`Runner.run` in one write transaction;
a refusal rolls back and is audited. Execution (key derivation, sealing, key-set rows,
transcript) happens inside the transaction of the step that completes the inputs (the
last reveal of a keygen, the quorum approval of a reshare), so a crash leaves either no
key set or a complete one.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from sqlmodel import col, select

from tandem.core import approvals as engine
from tandem.core import ceremony as core
from tandem.core import keyset_export, split
from tandem.core.approvals import QuorumResult
from tandem.core.canonical import canonical, check_fields, loads_strict, require_str
from tandem.core.ceremony_def import (
    MAX_DEFINITION_BYTES,
    CeremonyDefinition,
    parse_definition,
    validate_against,
)
from tandem.core.lifecycles import KEYSETS, KeySetState, MemberState
from tandem.core.roles import Role
from tandem.core.split import verify_operation
from tandem.errors import (
    ConflictError,
    ExpiredError,
    ForbiddenError,
    InputError,
    NotFoundError,
)
from tandem.services.approvals import current_membership
from tandem.services.base import Call, Runner, fault_point
from tandem.services.keysets import (
    build_export,
    current_recipients,
    get_keyset_row,
    keyset_public,
    list_keysets,
    restore_keyset,
    status_for_recipients,
)
from tandem.services.keyuse import KeyUseService
from tandem.store import pages
from tandem.store.models import (
    AddressRow,
    Approval,
    Ceremony,
    KeyRow,
    KeySet,
    Member,
)

SIDES = (Role.MANAGER, Role.CUSTODIAN)
IMPORT_KIND = "import"
ANY_KIND = "*"
# A key-set import is restored by one custodian's share, over the proposer's export.
IMPORT_APPROVALS = {Role.CUSTODIAN: 1}
IMPORT_SECONDS = 24 * 3600
MAX_REASON = 500


class CeremonyService:
    """Key ceremonies and key sets, on the runner and the operation keys they open."""

    def __init__(self, runner: Runner, keys: KeyUseService) -> None:
        self.runner = runner
        self.keys = keys

    # --- keygen and reshare ceremonies ---------------------------------------------------

    def propose_ceremony(self, envelope: Any) -> dict[str, Any]:
        """A manager proposes a ceremony from a definition (TOML text) with its commitment
        (keygen) or its re-sealed share of the target key set (reshare)."""

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(
                _body(call),
                required=("ceremony", "definition"),
                optional=("commitment", "target_keyset", "operation", "sealed_share"),
                where="body",
            )
            ceremony_id = body["ceremony"]
            if not isinstance(ceremony_id, str) or not core.CEREMONY_ID.fullmatch(ceremony_id):
                raise InputError("body.ceremony must be 'cer_' and 16 to 32 lowercase hex digits")
            text = require_str(body, "definition", where="body", max_len=MAX_DEFINITION_BYTES)
            definition = parse_definition(text, source="body.definition")
            validate_against(definition, _member_counts(call))
            if call.session.get(Ceremony, ceremony_id) is not None:
                raise ConflictError(f"ceremony {ceremony_id} already exists; choose a new id")
            state = core.CeremonyState()
            target: str | None = None
            commitment: str | None = None
            if definition.kind == "keygen":
                commitment = _keygen_commitment(body)
            else:
                target = self._ceremony_reshare_target(call, state, body)
            state.add_participant(actor.id, commitment=commitment, envelope=_envelope(call))
            row = Ceremony(
                id=ceremony_id,
                kind=definition.kind,
                definition=text,
                definition_hash=definition.definition_hash(),
                proposer=actor.id,
                status=core.PROPOSED,
                created_at=call.now,
                expires_at=call.now + definition.expiry_seconds,
                target_keyset=target,
                state=state.to_json(),
            )
            call.session.add(row)
            call.session.flush()
            self.runner.audit(
                call,
                "ceremony.proposed",
                {
                    "ceremony": ceremony_id,
                    "kind": definition.kind,
                    "name": definition.name,
                    "definition_hash": row.definition_hash,
                    "digest": _digest(row, state, definition),
                    "expires_at": row.expires_at,
                    "target_keyset": target,
                },
            )
            return ceremony_view(row, call.now)

        return self.runner.run(
            "ceremony.propose", envelope, use_case, types=core.PROPOSE, roles=(Role.MANAGER,)
        )

    def _ceremony_reshare_target(self, call: Call, state: core.CeremonyState, body: dict[str, Any]) -> str:
        """A reshare proposal names a key set that is not retired, the signed operation
        over it, and the proposing manager's re-sealed share; it takes no commitment."""
        if "commitment" in body:
            raise InputError("a reshare makes no keys, so it takes no commitment")
        target = _str_field(body, "target_keyset")
        keyset = get_keyset_row(call.session, target)
        if keyset.status == KeySetState.RETIRED:
            raise ConflictError(f"key set {target} is retired")
        state.operation = self._ceremony_check_operation(
            call, body.get("operation"), keyset_id=target, purpose="reshare"
        )
        self.keys.store_share(
            call,
            operation=state.operation_id,
            keyset_id=target,
            side=Role.MANAGER.value,
            sealed_b64=body.get("sealed_share"),
        )
        return target

    def approve_ceremony(self, envelope: Any, *, totp: str | None) -> dict[str, Any]:
        """An approver (custodian, or a further manager where the definition asks for one)
        signs the ceremony digest with its own commitment, plus a TOTP code."""
        self._ceremony_expire_due(envelope)

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(
                _body(call),
                required=("ceremony", "digest"),
                optional=("commitment", "sealed_share"),
                where="body",
            )
            row, state = self._ceremony_open(call, body["ceremony"], "approve")
            definition = parse_definition(row.definition)
            role = Role(actor.role)
            engine.admit(
                _request(row, state, definition),
                member=actor.id,
                role=role,
                required=definition.approvals.by_role(),
                what="this ceremony",
            )
            if body["digest"] != _digest(row, state, definition):
                raise ConflictError("the approval is for different ceremony content (digest mismatch)")
            commitment = body.get("commitment")
            if definition.kind == "keygen" and commitment is None:
                raise InputError("body.commitment is required: commit to your contribution")
            if definition.kind == "reshare":
                self._ceremony_reshare_share(call, row, state, role, body)
            state.add_approval(actor.id, commitment=commitment, envelope=_envelope(call))
            call.session.add(
                Approval(
                    subject=row.id,
                    member=actor.id,
                    role=actor.role,
                    envelope=canonical(_envelope(call)).decode(),
                    created_at=call.now,
                )
            )
            self._ceremony_approved(call, row, state, definition, digest=body["digest"])
            _save(call, row, state)
            return ceremony_view(row, call.now)

        return self.runner.run(
            "ceremony.approve",
            envelope,
            use_case,
            types=core.APPROVE,
            roles=SIDES,
            require_totp=True,
            totp=totp,
        )

    def _ceremony_reshare_share(
        self, call: Call, row: Ceremony, state: core.CeremonyState, role: Role, body: dict[str, Any]
    ) -> None:
        """A reshare approval takes no commitment; it may carry the approver's re-sealed
        share, and the first custodian approval must carry the custodian's."""
        if body.get("commitment") is not None:
            raise InputError("a reshare makes no keys, so it takes no commitment")
        assert state.operation is not None
        assert row.target_keyset
        operation = state.operation_id
        if "sealed_share" in body:
            self.keys.store_share(
                call,
                operation=operation,
                keyset_id=row.target_keyset,
                side=role.value,
                sealed_b64=body["sealed_share"],
            )
        elif role is Role.CUSTODIAN and not self.keys.has_share(call, operation=operation, side=role.value):
            raise InputError("the first custodian approval of a reshare carries the custodian share")

    def _ceremony_approved(
        self,
        call: Call,
        row: Ceremony,
        state: core.CeremonyState,
        definition: CeremonyDefinition,
        *,
        digest: str,
    ) -> None:
        """Audit the approval; at quorum a keygen opens its reveals and a reshare executes."""
        result = self._ceremony_quorum(call, row, state, definition)
        self.runner.audit(
            call,
            "ceremony.approved",
            {
                "ceremony": row.id,
                "digest": digest,
                "quorum_met": result.met,
                "approved_by": sorted(state.approvals),
            },
        )
        if not result.met:
            return
        if definition.kind == "keygen":
            row.status = core.REVEALING
            self.runner.audit(
                call,
                "ceremony.reveals_open",
                {"ceremony": row.id, "commitments": len(state.commitments)},
                with_envelope=False,
            )
        else:
            self._ceremony_execute_reshare(call, row, state, definition)

    def reveal_contribution(self, envelope: Any) -> dict[str, Any]:
        """A committed participant reveals its contribution; the last reveal executes the
        ceremony in the same transaction."""
        self._ceremony_expire_due(envelope)

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(_body(call), required=("ceremony", "contribution"), where="body")
            row, state = self._ceremony_open(call, body["ceremony"], "reveal")
            state.add_reveal(row.id, actor.id, body["contribution"], _envelope(call))
            self.runner.audit(
                call,
                "ceremony.revealed",
                {
                    "ceremony": row.id,
                    "member": actor.id,
                    "revealed": len(state.reveals),
                    "of": len(state.commitments),
                },
            )
            if state.all_revealed:
                definition = parse_definition(row.definition)
                self._ceremony_quorum(call, row, state, definition).require()
                self._ceremony_execute_keygen(call, row, state, definition)
            _save(call, row, state)
            return ceremony_view(row, call.now)

        return self.runner.run("ceremony.reveal", envelope, use_case, types=core.REVEAL, roles=SIDES)

    def countersign_transcript(self, envelope: Any) -> dict[str, Any]:
        """A participant countersigns the transcript hash its own client recomputed."""

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(_body(call), required=("ceremony", "transcript_hash"), where="body")
            row, state = self._ceremony_open(call, body["ceremony"], "countersign")
            if body["transcript_hash"] != state.transcript_hash:
                raise ConflictError("the countersignature is over a different transcript hash")
            state.add_countersignature(actor.id)
            assert row.transcript is not None
            transcript = loads_strict(row.transcript)
            transcript["countersignatures"].append(_envelope(call))
            row.transcript = canonical(transcript).decode()
            self.runner.audit(
                call,
                "ceremony.countersigned",
                {
                    "ceremony": row.id,
                    "transcript_hash": state.transcript_hash,
                    "countersigned": len(state.countersigned),
                    "of": len(state.participants),
                },
            )
            if state.all_countersigned:
                row.status = core.COMPLETE
                self.runner.audit(
                    call,
                    "ceremony.completed",
                    {
                        "ceremony": row.id,
                        "keyset": row.keyset,
                        "transcript_hash": state.transcript_hash,
                    },
                    with_envelope=False,
                )
            _save(call, row, state)
            return ceremony_view(row, call.now)

        return self.runner.run(
            "ceremony.countersign", envelope, use_case, types=core.COUNTERSIGN, roles=SIDES
        )

    def reject_ceremony(self, envelope: Any) -> dict[str, Any]:
        """A custodian stops a ceremony before execution, giving a reason."""
        self._ceremony_expire_due(envelope)

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(_body(call), required=("ceremony", "reason"), where="body")
            reason = require_str(body, "reason", where="body", max_len=MAX_REASON)
            if not reason.strip():
                raise InputError("body.reason must say why")
            row, state = self._ceremony_open(call, body["ceremony"], "reject", kind=ANY_KIND)
            self._ceremony_end(call, row, state, core.REJECTED, by=actor.id, reason=reason)
            self.runner.audit(call, "ceremony.rejected", {"ceremony": row.id, "reason": reason})
            return ceremony_view(row, call.now)

        return self.runner.run(
            "ceremony.reject", envelope, use_case, types=core.REJECT, roles=(Role.CUSTODIAN,)
        )

    def abort_ceremony(self, envelope: Any) -> dict[str, Any]:
        """The proposer withdraws its ceremony before execution."""
        self._ceremony_expire_due(envelope)

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(_body(call), required=("ceremony",), optional=("reason",), where="body")
            reason = require_str(body, "reason", where="body", max_len=MAX_REASON) if "reason" in body else ""
            row, state = self._ceremony_open(call, body["ceremony"], "abort", kind=ANY_KIND)
            if actor.id != row.proposer:
                raise ForbiddenError("only the proposer may abort a ceremony")
            self._ceremony_end(call, row, state, core.ABORTED, by=actor.id, reason=reason)
            self.runner.audit(call, "ceremony.aborted", {"ceremony": row.id, "reason": reason})
            return ceremony_view(row, call.now)

        return self.runner.run("ceremony.abort", envelope, use_case, types=core.ABORT, roles=(Role.MANAGER,))

    # --- key-set operations, export and import -------------------------------------------

    def keyset_operation(self, envelope: Any) -> dict[str, Any]:
        """A one-time operation key for a reshare (existing key set) or an import (a key
        set not present here), signed by the service key so clients can check it."""

        def use_case(call: Call) -> dict[str, Any]:
            body = check_fields(_body(call), required=("keyset", "purpose"), where="body")
            keyset_id = _str_field(body, "keyset")
            purpose = body["purpose"]
            if purpose == "reshare":
                get_keyset_row(call.session, keyset_id)
                doc = self.keys.new_operation(call, keyset_id=keyset_id, purpose="reshare")
            elif purpose == "import":
                if call.session.get(KeySet, keyset_id) is not None:
                    raise ConflictError(f"key set {keyset_id} is already present; nothing to import")
                doc = self._ceremony_detached_operation(call, keyset_id=keyset_id, purpose="import")
            else:
                raise InputError("body.purpose must be 'reshare' or 'import'")
            self.runner.audit(
                call,
                "keyset.operation_created",
                {
                    "keyset": keyset_id,
                    "purpose": purpose,
                    "operation": split.operation_id(doc),
                    "public_key": doc["statement"]["public_key"],
                },
            )
            return doc

        return self.runner.run("keyset.operation", envelope, use_case, types="keyset.operation", roles=SIDES)

    def export_keyset(self, envelope: Any) -> dict[str, Any]:
        """The sealed record and public data of a key set, for offline media (recorded)."""

        def use_case(call: Call) -> dict[str, Any]:
            body = check_fields(_body(call), required=("keyset",), where="body")
            ks = get_keyset_row(call.session, _str_field(body, "keyset"))
            doc = build_export(
                call.session,
                ks,
                deployment=call.deployment.id,
                entity=call.deployment.entity,
                now=call.now,
            )
            self.runner.audit(
                call,
                "keyset.exported",
                {
                    "keyset": ks.id,
                    "export_hash": keyset_export.export_hash(doc),
                    "generation": ks.generation,
                },
            )
            return doc

        return self.runner.run("keyset.export", envelope, use_case, types="keyset.export", roles=SIDES)

    def propose_import(self, envelope: Any, export: Any) -> dict[str, Any]:
        """A manager proposes restoring an exported key set, proving its share opens by
        re-sealing it to an import operation; a custodian must do the same to finish."""

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(
                _body(call), required=("export_hash", "operation", "sealed_share"), where="body"
            )
            export_hash = keyset_export.export_hash(export)
            if body["export_hash"] != export_hash:
                raise ConflictError("the signed export hash does not match the export sent")
            sealed = keyset_export.check_export(export)
            if export["deployment"] != call.deployment.id:
                raise InputError("the export is from another deployment")
            keyset_id = sealed.keyset_id
            if call.session.get(KeySet, keyset_id) is not None:
                raise ConflictError(f"key set {keyset_id} is already present; nothing to import")
            state = core.CeremonyState()
            state.operation = self._ceremony_check_operation(
                call, body["operation"], keyset_id=keyset_id, purpose="import"
            )
            self.keys.store_share(
                call,
                operation=state.operation_id,
                keyset_id=keyset_id,
                side=Role.MANAGER.value,
                sealed_b64=body["sealed_share"],
            )
            state.add_participant(actor.id, commitment=None, envelope=_envelope(call))
            expires_at = min(call.now + IMPORT_SECONDS, state.operation["statement"]["expires_at"])
            row = Ceremony(
                id="imp_" + secrets.token_hex(8),
                kind=IMPORT_KIND,
                definition=canonical(export).decode(),
                definition_hash=export_hash,
                proposer=actor.id,
                status=core.PROPOSED,
                created_at=call.now,
                expires_at=expires_at,
                target_keyset=keyset_id,
                state=state.to_json(),
            )
            call.session.add(row)
            call.session.flush()
            self.runner.audit(
                call,
                "keyset.import_proposed",
                {"import": row.id, "keyset": keyset_id, "export_hash": export_hash},
            )
            return ceremony_view(row, call.now)

        return self.runner.run(
            "keyset.import", envelope, use_case, types="keyset.import", roles=(Role.MANAGER,)
        )

    def approve_import(self, envelope: Any, *, totp: str | None) -> dict[str, Any]:
        """A custodian re-seals its share to the import operation; the signer rebuilds the
        DEK from both shares and checks it against the export (no key is decrypted), then
        restores the key set."""
        self._ceremony_expire_due(envelope, field="import")

        def use_case(call: Call) -> dict[str, Any]:
            actor = _actor(call)
            body = check_fields(_body(call), required=("import", "export_hash", "sealed_share"), where="body")
            row, state = self._ceremony_open(call, body["import"], "approve", kind=IMPORT_KIND)
            engine.admit(
                engine.Request(requester=row.proposer, kind=IMPORT_KIND, digest=row.definition_hash),
                member=actor.id,
                role=Role(actor.role),
                required=IMPORT_APPROVALS,
                what="this import",
            )
            if body["export_hash"] != row.definition_hash:
                raise ConflictError("the approval is for a different export (hash mismatch)")
            assert state.operation is not None
            assert row.target_keyset
            operation = state.operation_id
            self.keys.store_share(
                call,
                operation=operation,
                keyset_id=row.target_keyset,
                side=Role.CUSTODIAN.value,
                sealed_b64=body["sealed_share"],
            )
            export = loads_strict(row.definition)
            sealed = split.SealedKeyset.from_dict(export["sealed"])
            with self.keys.open_dek(call, sealed=sealed, operation=operation):
                pass  # both shares opened and the DEK matched the key set's check value
            fault_point("keyset.import_after_dek")
            status = status_for_recipients(call.session, sealed)
            restore_keyset(call.session, export, sealed, status=status)
            state.add_approval(actor.id, commitment=None, envelope=_envelope(call))
            engine.evaluate(
                engine.Request(requester=row.proposer, kind=IMPORT_KIND, digest=row.definition_hash),
                [
                    engine.Given(
                        member=actor.id, role=Role(actor.role), at=call.now, digest=body["export_hash"]
                    )
                ],
                membership=current_membership(call.session),
                required=IMPORT_APPROVALS,
                now=call.now,
            ).require()
            row.status = core.COMPLETE
            row.keyset = row.target_keyset
            _save(call, row, state)
            self.runner.audit(
                call,
                "keyset.imported",
                {
                    "import": row.id,
                    "keyset": row.target_keyset,
                    "export_hash": row.definition_hash,
                    "status": status,
                },
            )
            return ceremony_view(row, call.now)

        return self.runner.run(
            "keyset.import_approve",
            envelope,
            use_case,
            types="keyset.import_approve",
            roles=(Role.CUSTODIAN,),
            require_totp=True,
            totp=totp,
        )

    # --- reads ---------------------------------------------------------------------------

    def get_ceremony(self, ceremony_id: str) -> dict[str, Any]:
        with self.runner.db.read() as session:
            row = session.get(Ceremony, ceremony_id)
            if row is None:
                raise NotFoundError(f"no ceremony {ceremony_id}")
            return ceremony_view(row, self.runner.clock())

    def list_ceremonies(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        """One page of ceremonies and imports, oldest first; the status filter (as it reads
        now, expiry included) runs in SQL. Each row carries its own approvals."""
        now = self.runner.clock()
        query = select(Ceremony)
        if status:
            query = query.where(
                pages.expiring_status(
                    col(Ceremony.status),
                    col(Ceremony.expires_at),
                    status,
                    expiring=core.OPEN_STATUSES,
                    expired=core.EXPIRED,
                    now=now,
                )
            )
        with self.runner.db.read() as session:
            page = pages.read_page(
                session,
                query,
                kind="ceremonies",
                order=(col(Ceremony.created_at), col(Ceremony.id)),
                limit=limit,
                cursor=cursor,
            )
            items = [ceremony_view(r, now, brief=True) for r in page.rows]
        return {"items": items, "next_cursor": page.next_cursor}

    def get_transcript(self, ceremony_id: str) -> dict[str, Any]:
        with self.runner.db.read() as session:
            row = session.get(Ceremony, ceremony_id)
            if row is None:
                raise NotFoundError(f"no ceremony {ceremony_id}")
            if row.transcript is None:
                raise NotFoundError(f"ceremony {ceremony_id} is {row.status}: it has no transcript")
            result: dict[str, Any] = loads_strict(row.transcript)
            return result

    def list_keysets(self, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        with self.runner.db.read() as session:
            return list_keysets(session, limit=limit, cursor=cursor)

    def get_keyset(self, keyset_id: str) -> dict[str, Any]:
        with self.runner.db.read() as session:
            return keyset_public(session, get_keyset_row(session, keyset_id), with_sealed=True)

    # --- internals -----------------------------------------------------------------------

    def _ceremony_expire_due(self, envelope: Any, *, field: str = "ceremony") -> None:
        """Mark a ceremony expired in its own transaction, so the refusal that follows
        (which rolls back) does not undo the mark. Expiry is a fact of the clock, so it
        does not matter who asked."""
        action = envelope.get("action") if isinstance(envelope, dict) else None
        body = action.get("body") if isinstance(action, dict) else None
        ceremony_id = body.get(field) if isinstance(body, dict) else None
        if not isinstance(ceremony_id, str) or len(ceremony_id) > 64:
            return

        def use_case(call: Call) -> None:
            row = call.session.get(Ceremony, ceremony_id)
            if row is None or not core.is_expired(row.status, row.expires_at, call.now):
                return
            state = core.CeremonyState.from_json(row.state)
            self._ceremony_end(call, row, state, core.EXPIRED, by=None, reason="expired")
            kind = "keyset.import_expired" if row.kind == IMPORT_KIND else "ceremony.expired"
            self.runner.audit(call, kind, {"ceremony": row.id, "expires_at": row.expires_at})

        self.runner.run_plain("ceremony.expire", use_case)

    def _ceremony_end(
        self,
        call: Call,
        row: Ceremony,
        state: core.CeremonyState,
        status: str,
        *,
        by: str | None,
        reason: str,
    ) -> None:
        """Close a ceremony for good (rejected, aborted, expired): its operation key is
        dropped and the outcome recorded in its state."""
        self._ceremony_forget_operation(state)
        row.status = status
        state.outcome = {"status": status, "by": by, "reason": reason, "at": call.now}
        _save(call, row, state)

    def _ceremony_open(
        self, call: Call, ceremony_id: Any, step: str, *, kind: str | None = None
    ) -> tuple[Ceremony, core.CeremonyState]:
        if not isinstance(ceremony_id, str):
            raise InputError("the ceremony id must be a string")
        row = call.session.get(Ceremony, ceremony_id)
        if row is None or (kind != ANY_KIND and (kind == IMPORT_KIND) != (row.kind == IMPORT_KIND)):
            raise NotFoundError(f"no {'import' if kind == IMPORT_KIND else 'ceremony'} {ceremony_id}")
        if row.status == core.EXPIRED or core.is_expired(row.status, row.expires_at, call.now):
            raise ExpiredError(
                f"{row.id} expired at {row.expires_at}; propose it again",
                details={"expires_at": row.expires_at},
            )
        state = core.CeremonyState.from_json(row.state)
        if step == "reveal" and row.status == core.PROPOSED and row.kind == "keygen":
            # Say which approvals are missing: nobody reveals before every commitment is in.
            definition = parse_definition(row.definition)
            self._ceremony_quorum(call, row, state, definition).require()
        core.require_status(row.status, step)
        return row, state

    def _ceremony_forget_operation(self, state: core.CeremonyState) -> None:
        if state.operation is not None:
            self.keys.operations.discard(state.operation_id)

    def _ceremony_quorum(
        self, call: Call, row: Ceremony, state: core.CeremonyState, definition: CeremonyDefinition
    ) -> QuorumResult:
        """Counted from the stored approval records (one per member, each holding the
        signed approval), by the same engine as every other flow."""
        records = call.session.exec(select(Approval).where(Approval.subject == row.id)).all()
        return engine.evaluate(
            _request(row, state, definition),
            [
                engine.Given(
                    member=a.member,
                    role=Role(a.role),
                    at=a.created_at,
                    digest=loads_strict(a.envelope)["action"]["body"]["digest"],
                )
                for a in records
            ],
            membership=current_membership(call.session),
            required=definition.approvals.by_role(),
            now=call.now,
        )

    def _ceremony_check_operation(
        self, call: Call, doc: Any, *, keyset_id: str, purpose: str
    ) -> dict[str, Any]:
        statement = verify_operation(doc, self.runner.key.sign_public)
        if statement["keyset"] != keyset_id or statement["purpose"] != purpose:
            raise InputError(f"the operation is not a {purpose} operation for key set {keyset_id}")
        if call.now >= statement["expires_at"]:
            raise ExpiredError("the operation key has expired; request a new one")
        self.keys.operations.get(statement["operation"])  # still held by this signer
        result: dict[str, Any] = doc
        return result

    def _ceremony_detached_operation(self, call: Call, *, keyset_id: str, purpose: str) -> dict[str, Any]:
        """Like :meth:`new_operation`, for a key set this database does not hold (import)."""
        if not 0 < len(keyset_id) <= 64:
            raise InputError("body.keyset must be a key set id")
        return self.keys.new_operation(call, keyset_id=keyset_id, purpose=purpose, held=False)

    def _ceremony_participants(self, call: Call, state: core.CeremonyState) -> list[dict[str, Any]]:
        out = []
        for member_id in state.participants:
            m = call.session.get(Member, member_id)
            assert m is not None
            out.append({"id": m.id, "name": m.name, "role": m.role, "sign_public": m.sign_public})
        return out

    def _ceremony_pre_execution(
        self, call: Call, row: Ceremony, state: core.CeremonyState, definition: CeremonyDefinition
    ) -> dict[str, Any]:
        return core.build_pre_execution(
            deployment=call.deployment.id,
            entity=call.deployment.entity,
            ceremony={
                "id": row.id,
                "kind": row.kind,
                "proposer": row.proposer,
                "created_at": row.created_at,
                "expires_at": row.expires_at,
                "target_keyset": row.target_keyset,
            },
            definition=definition,
            participants=self._ceremony_participants(call, state),
            state=state,
        )

    def _ceremony_execute_keygen(
        self, call: Call, row: Ceremony, state: core.CeremonyState, definition: CeremonyDefinition
    ) -> None:
        assert definition.curve is not None
        assert definition.segregation is not None
        self.runner.require_unsealed()
        pre = self._ceremony_pre_execution(call, row, state, definition)
        pre_hash = core.pre_execution_hash(pre)
        keyset_id = "ks_" + secrets.token_hex(8)
        managers, custodians = current_recipients(call.session)
        generated = core.generate_keyset(
            definition=definition,
            ceremony_id=row.id,
            keyset_id=keyset_id,
            entity=call.deployment.entity,
            pre_execution_hash=pre_hash,
            os_entropy=bytearray(os.urandom(32)),
            contributions={m: bytes.fromhex(h) for m, h in state.reveals.items()},
            manager_publics=managers,
            custodian_publics=custodians,
            after_keys=lambda: fault_point("ceremony.after_keys"),
        )
        _add_keyset_rows(call, row, definition, keyset_id, generated)
        call.session.flush()
        fault_point("ceremony.after_keyset_row")
        keyset_doc = _keyset_doc(keyset_id, generated.sealed, generation=1)
        keyset_doc.update({"curve": definition.curve, "segregation": definition.segregation})
        transcript = core.finish_transcript(
            pre,
            executed_at=call.now,
            keyset=keyset_doc,
            keys=generated.keys,
            addresses=generated.addresses,
        )
        self._ceremony_record_execution(call, row, state, transcript, keyset_id)
        self.runner.audit(
            call,
            "ceremony.executed",
            {
                "ceremony": row.id,
                "keyset": keyset_id,
                "transcript_hash": state.transcript_hash,
                "pre_execution_hash": pre_hash,
                "addresses": [
                    {
                        "chain": a["chain"],
                        "network": a["network"],
                        "address": a["address"],
                        "segregation": a["segregation"],
                    }
                    for a in generated.addresses
                ],
            },
            with_envelope=False,
        )
        fault_point("ceremony.before_commit")

    def _ceremony_execute_reshare(
        self, call: Call, row: Ceremony, state: core.CeremonyState, definition: CeremonyDefinition
    ) -> None:
        assert row.target_keyset is not None
        assert state.operation is not None
        self.runner.require_unsealed()
        keyset = get_keyset_row(call.session, row.target_keyset)
        if keyset.status == KeySetState.RETIRED:
            raise ConflictError(f"key set {keyset.id} is retired")
        before = split.SealedKeyset.from_json(keyset.sealed)
        managers, custodians = current_recipients(call.session)
        pre = self._ceremony_pre_execution(call, row, state, definition)
        with self.keys.open_dek(call, sealed=before, operation=state.operation_id) as dek:
            fault_point("ceremony.reshare_after_dek")
            after = split.reshare(
                before, dek=dek, new_manager_publics=managers, new_custodian_publics=custodians
            )
        previous = {
            "status": keyset.status,
            **_keyset_doc(keyset.id, before, generation=keyset.generation),
        }
        keyset.sealed = after.to_json()
        keyset.generation += 1
        keyset.status = KEYSETS.transition(keyset.status, "reshare")
        call.session.add(keyset)
        call.session.flush()
        fault_point("ceremony.reshare_after_keyset")
        keys = [
            {
                "key_id": k.key_id,
                "position": i,
                "curve": keyset.curve,
                "public_key": k.public_key.hex(),
            }
            for i, k in enumerate(after.keys)
        ]
        keyset_doc = {
            **_keyset_doc(keyset.id, after, generation=keyset.generation),
            "previous": previous,
        }
        transcript = core.finish_transcript(
            pre, executed_at=call.now, keyset=keyset_doc, keys=keys, addresses=[]
        )
        self._ceremony_record_execution(call, row, state, transcript, keyset.id)
        self.runner.audit(
            call,
            "keyset.reshared",
            {
                "ceremony": row.id,
                "keyset": keyset.id,
                "generation": keyset.generation,
                "previous_status": previous["status"],
                "transcript_hash": state.transcript_hash,
                "managers": sorted(managers),
                "custodians": sorted(custodians),
            },
            with_envelope=False,
        )
        fault_point("ceremony.before_commit")

    @staticmethod
    def _ceremony_record_execution(
        call: Call,
        row: Ceremony,
        state: core.CeremonyState,
        transcript: dict[str, Any],
        keyset_id: str,
    ) -> None:
        state.pre_execution_hash = transcript["pre_execution_hash"]
        state.transcript_hash = core.transcript_hash(transcript)
        row.transcript = canonical(transcript).decode()
        row.keyset = keyset_id
        row.status = core.EXECUTED


# --- helpers -----------------------------------------------------------------------------


def ceremony_view(row: Ceremony, now: int, *, brief: bool = False) -> dict[str, Any]:
    """The public view of a ceremony or import. Approving clients recompute the digest
    from ``definition`` and the header fields instead of trusting ``digest``."""
    state = core.CeremonyState.from_json(row.state)
    status = core.EXPIRED if core.is_expired(row.status, row.expires_at, now) else row.status
    view: dict[str, Any] = {
        "id": row.id,
        "kind": row.kind,
        "status": status,
        "proposer": row.proposer,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "definition_hash": row.definition_hash,
        "target_keyset": row.target_keyset,
        "keyset": row.keyset,
        "participants": list(state.participants),
        "approvals": list(state.approvals),
        "transcript_hash": state.transcript_hash,
        "countersigned": list(state.countersigned),
        "outcome": state.outcome,
    }
    if brief:
        return view
    view.update(
        {
            "commitments": dict(state.commitments),
            "revealed": sorted(state.reveals),
            "operation": state.operation,
            "pre_execution_hash": state.pre_execution_hash,
            "actions": list(state.actions),
        }
    )
    if row.kind == IMPORT_KIND:
        view["export_hash"] = row.definition_hash
        view["export"] = loads_strict(row.definition)
    else:
        view["definition"] = row.definition
        view["digest"] = _digest(row, state, parse_definition(row.definition))
    return view


def _request(row: Ceremony, state: core.CeremonyState, definition: CeremonyDefinition) -> engine.Request:
    return engine.Request(
        requester=row.proposer,
        kind=f"ceremony.{definition.kind}",
        digest=_digest(row, state, definition),
        created_at=row.created_at,
    )


def _digest(row: Ceremony, state: core.CeremonyState, definition: CeremonyDefinition) -> str:
    return core.ceremony_digest(
        ceremony_id=row.id,
        kind=definition.kind,
        definition_hash=definition.definition_hash(),
        proposer=row.proposer,
        target_keyset=row.target_keyset,
        expires_at=row.expires_at,
        commitment=state.commitments.get(row.proposer),
    )


def _keygen_commitment(body: dict[str, Any]) -> Any:
    """A keygen proposal carries the proposer's commitment and nothing of a reshare."""
    for key in ("target_keyset", "operation", "sealed_share"):
        if key in body:
            raise InputError(f"body.{key} is only for a reshare ceremony")
    commitment = body.get("commitment")
    if commitment is None:
        raise InputError("body.commitment is required: commit to your contribution")
    return commitment


def _add_keyset_rows(
    call: Call,
    row: Ceremony,
    definition: CeremonyDefinition,
    keyset_id: str,
    generated: core.GeneratedKeyset,
) -> None:
    """The new key set, active at generation 1, with its keys and their addresses."""
    assert definition.curve is not None
    assert definition.segregation is not None
    session = call.session
    session.add(
        KeySet(
            id=keyset_id,
            ceremony=row.id,
            curve=definition.curve,
            segregation=definition.segregation,
            status=KeySetState.ACTIVE,
            sealed=generated.sealed.to_json(),
            generation=1,
            created_at=call.now,
        )
    )
    for k in generated.keys:
        session.add(
            KeyRow(
                id=k["key_id"],
                keyset=keyset_id,
                position=k["position"],
                curve=k["curve"],
                public_key=k["public_key"],
                segregation=definition.segregation,
            )
        )
    for a in generated.addresses:
        session.add(
            AddressRow(
                key_id=a["key_id"],
                keyset=keyset_id,
                chain=a["chain"],
                network=a["network"],
                address=a["address"],
                segregation=a["segregation"],
                birth_proof=canonical(a["birth_proof"]).decode(),
            )
        )


def _keyset_doc(keyset_id: str, sealed: split.SealedKeyset, *, generation: int) -> dict[str, Any]:
    return {
        "id": keyset_id,
        "generation": generation,
        "commitments": dict(sealed.commitments),
        "dek_check": sealed.dek_check,
        "managers": sorted(sealed.members("manager")),
        "custodians": sorted(sealed.members("custodian")),
    }


def _save(call: Call, row: Ceremony, state: core.CeremonyState) -> None:
    row.state = state.to_json()
    call.session.add(row)
    call.session.flush()


def _actor(call: Call) -> Member:
    assert call.actor is not None
    return call.actor


def _body(call: Call) -> dict[str, Any]:
    assert call.action is not None
    return dict(call.action.body)


def _envelope(call: Call) -> dict[str, Any]:
    assert call.envelope is not None
    return call.envelope


def _str_field(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise InputError(f"body.{key} must be an id string")
    return value


def _member_counts(call: Call) -> dict[Role, int]:
    counts = dict.fromkeys(Role, 0)
    for m in call.session.exec(select(Member).where(Member.status == MemberState.ACTIVE)).all():
        counts[Role(m.role)] += 1
    return counts
