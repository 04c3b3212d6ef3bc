"""The member's side of key ceremonies, reshares and key-set export/import.

The client makes its own entropy contribution, commits to it in its signed
propose/approve action and keeps the contribution to itself (in memory, or in a small
state file beside the keystore) until every participant has committed; only then is it
revealed. Before approving, the client parses the definition and recomputes the
ceremony digest itself; before countersigning, it verifies the whole transcript offline
and signs the hash it computed, never one the server sent; the key set of that
transcript is then pinned beside the keystore, and every later reseal of a share of it
is checked against that pin (THREATS 41).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tandem.client.pin import PinnedKeyset
from tandem.client.transport import Transport
from tandem.core import ceremony as core
from tandem.core import keygen, keyset_export, split
from tandem.core.ceremony_def import parse_definition
from tandem.core.identity import MemberSecrets
from tandem.errors import ConflictError, InputError, KeystoreError, VerificationError

__all__ = ["Ceremonies", "ContributionStore", "Keysets", "local_digest", "new_ceremony_id"]


def new_ceremony_id() -> str:
    """Chosen by the proposer, so its commitment can bind the ceremony before it exists."""
    return "cer_" + secrets.token_hex(12)


# --- contributions kept between commit and reveal ----------------------------------------


class ContributionStore:
    """A member's contribution between its commitment and its reveal, in a file readable
    only by the member (``contrib-<ceremony>-<member>.json``). It is deleted after the
    reveal; it never goes to the server before then."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, ceremony_id: str, member_id: str) -> Path:
        if not core.CEREMONY_ID.fullmatch(ceremony_id):
            raise InputError(f"{ceremony_id!r} is not a ceremony id")
        return self.directory / f"contrib-{ceremony_id}-{member_id}.json"

    def save(self, ceremony_id: str, member_id: str, contribution: bytes) -> Path:
        path = self.path(ceremony_id, member_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeystoreError(
                f"{path} exists: you already committed to {ceremony_id} from here; reveal it "
                "with `tandem ceremony reveal`"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(
                {"ceremony": ceremony_id, "member": member_id, "contribution": contribution.hex()},
                f,
            )
        return path

    def load(self, ceremony_id: str, member_id: str) -> bytes:
        path = self.path(ceremony_id, member_id)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except OSError:
            raise KeystoreError(
                f"no saved contribution for {ceremony_id} at {path}: reveal from the machine "
                "(and --state-dir) you committed from"
            ) from None
        if doc.get("ceremony") != ceremony_id or doc.get("member") != member_id:
            raise KeystoreError(f"{path} is for another ceremony or member")
        return bytes.fromhex(doc["contribution"])

    def forget(self, ceremony_id: str, member_id: str) -> None:
        self.path(ceremony_id, member_id).unlink(missing_ok=True)


# --- what the member checks itself -------------------------------------------------------


def local_digest(view: Mapping[str, Any]) -> str:
    """The ceremony digest recomputed from the definition text and header fields shown,
    refusing a view whose definition hash is not the definition's."""
    definition = parse_definition(view["definition"], source=f"ceremony {view['id']}")
    if definition.definition_hash() != view["definition_hash"]:
        raise VerificationError("the server's definition hash is not the definition's")
    return core.ceremony_digest(
        ceremony_id=view["id"],
        kind=definition.kind,
        definition_hash=definition.definition_hash(),
        proposer=view["proposer"],
        target_keyset=view["target_keyset"],
        expires_at=view["expires_at"],
        commitment=view["commitments"].get(view["proposer"]),
    )


def _custodian_share_held(view: Mapping[str, Any]) -> bool:
    """Whether an accepted approval already carried the custodian share of this reshare
    (a stored share is never replaced, so a further approval goes without one)."""
    return any(
        a["action"]["type"] == core.APPROVE and "sealed_share" in a["action"]["body"]
        for a in view.get("actions", ())
    )


# --- key sets: reads, operation keys, export and import --------------------------------


class Keysets:
    """``client.keysets``: key sets, their operation keys, export and import."""

    def __init__(self, client: Transport) -> None:
        self._client = client

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._client.request("POST", path, json_body=dict(body))
        return result

    def _get_doc(self, member: MemberSecrets, path: str) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, path)
        return result

    def get(self, member: MemberSecrets, keyset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, f"/v1/keysets/{keyset_id}")
        return result

    def request_operation(self, member: MemberSecrets, keyset_id: str, purpose: str) -> dict[str, Any]:
        """A service-signed one-time operation key for a reshare or an import."""
        env = self._client.sign(member, "keyset.operation", {"keyset": keyset_id, "purpose": purpose})
        doc = self._post(f"/v1/keysets/{keyset_id}/operations", {"envelope": env})
        self.check_operation(member, doc, keyset_id=keyset_id, purpose=purpose)
        return doc

    def check_operation(self, member: MemberSecrets, doc: Any, *, keyset_id: str, purpose: str) -> None:
        statement = self._client.pinned(member).verify_operation(doc)
        if statement["keyset"] != keyset_id or statement["purpose"] != purpose:
            raise VerificationError(f"the operation key is not a {purpose} key for {keyset_id}")

    def export(self, member: MemberSecrets, keyset_id: str) -> dict[str, Any]:
        """The key set for offline media, checked here before it is written anywhere."""
        env = self._client.sign(member, "keyset.export", {"keyset": keyset_id})
        doc = self._post(f"/v1/keysets/{keyset_id}/export", {"envelope": env})
        keyset_export.check_export(doc)
        self._client.pinned(member).check_keyset(doc["sealed"])
        return doc

    def propose_import(self, member: MemberSecrets, export: dict[str, Any]) -> dict[str, Any]:
        """A manager proposes restoring ``export``, re-sealing its own share to an import
        operation (which proves the share it holds opens)."""
        sealed = keyset_export.check_export(export)
        operation = self.request_operation(member, sealed.keyset_id, "import")
        _side, share = self._client.reseal_for_operation(
            member, export["sealed"], operation, keyset_id=sealed.keyset_id, purpose="import", local_copy=True
        )
        self._pin_export(member, export, sealed)
        env = self._client.sign(
            member,
            "keyset.import",
            {"export_hash": keyset_export.export_hash(export), "operation": operation, "sealed_share": share},
        )
        return self._post("/v1/keysets/import", {"envelope": env, "export": export})

    def approve_import(
        self, member: MemberSecrets, import_id: str, *, export: dict[str, Any], totp: str
    ) -> dict[str, Any]:
        """A custodian finishes an import of the export it holds itself: the pending import
        must be of exactly that export, and its share is re-sealed to the checked operation."""
        view = self._get_doc(member, f"/v1/ceremonies/{import_id}")
        export_hash = keyset_export.export_hash(export)
        if view.get("export_hash") != export_hash:
            raise ConflictError("the pending import is of a different export than your file")
        sealed = keyset_export.check_export(export)
        self.check_operation(member, view["operation"], keyset_id=sealed.keyset_id, purpose="import")
        _side, share = self._client.reseal_for_operation(
            member,
            export["sealed"],
            view["operation"],
            keyset_id=sealed.keyset_id,
            purpose="import",
            local_copy=True,
        )
        self._pin_export(member, export, sealed)
        env = self._client.sign(
            member,
            "keyset.import_approve",
            {"import": import_id, "export_hash": export_hash, "sealed_share": share},
        )
        return self._post(f"/v1/keysets/import/{import_id}/approve", {"envelope": env, "totp": totp})

    def _pin_export(
        self, member: MemberSecrets, export: Mapping[str, Any], sealed: split.SealedKeyset
    ) -> None:
        """A member restoring a key set from an export it holds itself (offline media it
        checked) pins that export's key set, unless it already pins one of that id (then the
        export had to match it)."""
        pin = self._client.pinned(member)
        if sealed.keyset_id not in pin.keysets:
            pin.add_keyset(
                PinnedKeyset.from_sealed(
                    sealed,
                    generation=int(export["keyset"]["generation"]),
                    transcript_hash=str(export["transcript_hash"]),
                )
            )

    def list(self, member: MemberSecrets, *, first: int | None = None) -> list[dict[str, Any]]:
        """Every key set (with ``first``, only that many), oldest first."""
        result: list[dict[str, Any]] = self._client.get_all(member, "/v1/keysets", first=first)
        return result


# --- ceremonies ---------------------------------------------------------------------------


class Ceremonies:
    """``client.ceremonies``: propose, approve, reveal, countersign, reject and abort."""

    def __init__(self, client: Transport, keysets: Keysets) -> None:
        self._client = client
        self._keysets = keysets

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._client.request("POST", path, json_body=dict(body))
        return result

    def get(self, member: MemberSecrets, ceremony_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, f"/v1/ceremonies/{ceremony_id}")
        return result

    def transcript(self, member: MemberSecrets, ceremony_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._client.get(member, f"/v1/ceremonies/{ceremony_id}/transcript")
        return result

    def propose(
        self,
        member: MemberSecrets,
        definition_text: str,
        *,
        contribution: bytes | None = None,
        ceremony_id: str | None = None,
        target_keyset: str | None = None,
    ) -> dict[str, Any]:
        """Propose a keygen (with a commitment to ``contribution``) or a reshare of
        ``target_keyset`` (requesting a reshare operation and re-sealing this manager's share
        to it). The definition is validated locally first."""
        definition = parse_definition(definition_text)
        ceremony_id = ceremony_id or new_ceremony_id()
        body: dict[str, Any] = {"ceremony": ceremony_id, "definition": definition_text}
        if definition.kind == "keygen":
            if contribution is None:
                raise InputError("a keygen proposal needs a contribution to commit to")
            body["commitment"] = keygen.commit_contribution(
                ceremony_id=ceremony_id, member_id=member.member_id, contribution=contribution
            )
        else:
            if target_keyset is None:
                raise InputError("a reshare names the key set it rotates (--target-keyset)")
            operation = self._keysets.request_operation(member, target_keyset, "reshare")
            keyset = self._keysets.get(member, target_keyset)
            _side, sealed = self._client.reseal_for_operation(
                member, keyset["sealed"], operation, keyset_id=target_keyset, purpose="reshare"
            )
            body.update({"target_keyset": target_keyset, "operation": operation, "sealed_share": sealed})
        env = self._client.sign(member, core.PROPOSE, body)
        return self._post("/v1/ceremonies", {"envelope": env})

    def approve(
        self,
        member: MemberSecrets,
        ceremony_id: str,
        *,
        totp: str,
        contribution: bytes | None = None,
        view: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Approve after recomputing the digest locally; commit to ``contribution`` (keygen)
        or re-seal this member's share to the ceremony's checked operation key (reshare).

        ``view`` is the ceremony as the member was shown it; the digest signed is computed
        from that very object, never from a second fetch. Without it, one fetch here."""
        if view is None:
            view = self.get(member, ceremony_id)
        if view.get("id") != ceremony_id:
            raise VerificationError(f"the ceremony reviewed is {view.get('id')!r}, not {ceremony_id}")
        body: dict[str, Any] = {"ceremony": ceremony_id, "digest": local_digest(view)}
        if view["kind"] == "keygen":
            if contribution is None:
                raise InputError("a keygen approval needs a contribution to commit to")
            body["commitment"] = keygen.commit_contribution(
                ceremony_id=ceremony_id, member_id=member.member_id, contribution=contribution
            )
        elif member.role.value == "custodian" and not _custodian_share_held(view):
            operation = view["operation"]
            self._keysets.check_operation(
                member, operation, keyset_id=view["target_keyset"], purpose="reshare"
            )
            keyset = self._keysets.get(member, view["target_keyset"])
            _side, sealed = self._client.reseal_for_operation(
                member, keyset["sealed"], operation, keyset_id=view["target_keyset"], purpose="reshare"
            )
            body["sealed_share"] = sealed
        env = self._client.sign(member, core.APPROVE, body)
        return self._post(f"/v1/ceremonies/{ceremony_id}/approve", {"envelope": env, "totp": totp})

    def reveal(self, member: MemberSecrets, ceremony_id: str, contribution: bytes) -> dict[str, Any]:
        """Reveal this member's contribution (only once every commitment is in)."""
        env = self._client.sign(
            member, core.REVEAL, {"ceremony": ceremony_id, "contribution": contribution.hex()}
        )
        return self._post(f"/v1/ceremonies/{ceremony_id}/reveal", {"envelope": env})

    def countersign(self, member: MemberSecrets, ceremony_id: str) -> dict[str, Any]:
        """Verify the transcript offline, then countersign the hash computed here."""
        transcript = self.transcript(member, ceremony_id)
        report = core.verify_transcript(transcript)
        report.require(complete=False)
        if member.member_id not in {p["id"] for p in transcript["participants"]}:
            raise InputError("you are not a participant of this ceremony")
        # What this member countersigns is what its machine will hold the key set to.
        self._client.pinned(member).add_transcript(transcript)
        env = self._client.sign(
            member,
            core.COUNTERSIGN,
            {"ceremony": ceremony_id, "transcript_hash": report.transcript_hash},
        )
        return self._post(f"/v1/ceremonies/{ceremony_id}/countersign", {"envelope": env})

    def reject(self, member: MemberSecrets, ceremony_id: str, *, reason: str) -> dict[str, Any]:
        env = self._client.sign(member, core.REJECT, {"ceremony": ceremony_id, "reason": reason})
        return self._post(f"/v1/ceremonies/{ceremony_id}/reject", {"envelope": env})

    def abort(self, member: MemberSecrets, ceremony_id: str, *, reason: str = "") -> dict[str, Any]:
        env = self._client.sign(member, core.ABORT, {"ceremony": ceremony_id, "reason": reason})
        return self._post(f"/v1/ceremonies/{ceremony_id}/abort", {"envelope": env})

    def run(
        self,
        *,
        proposer: MemberSecrets,
        approvers: Sequence[MemberSecrets],
        definition_text: str,
        code: Callable[[str], str],
        target_keyset: str | None = None,
    ) -> dict[str, Any]:
        """Propose, approve, reveal (keygen), execute and countersign; return the verified
        transcript. ``code(name)`` gives a member's current TOTP code."""
        definition = parse_definition(definition_text)
        contributions: dict[str, bytes] = {}
        keygen_kind = definition.kind == "keygen"
        ceremony_id = new_ceremony_id()
        if keygen_kind:
            contributions[proposer.member_id] = keygen.make_contribution()
        self.propose(
            proposer,
            definition_text,
            ceremony_id=ceremony_id,
            contribution=contributions.get(proposer.member_id),
            target_keyset=target_keyset,
        )
        for approver in approvers:
            if keygen_kind:
                contributions[approver.member_id] = keygen.make_contribution()
            self.approve(
                approver,
                ceremony_id,
                totp=code(approver.name),
                contribution=contributions.get(approver.member_id),
            )
        if keygen_kind:
            for member in (proposer, *approvers):
                self.reveal(member, ceremony_id, contributions[member.member_id])
        for member in (proposer, *approvers):
            self.countersign(member, ceremony_id)
        transcript = self.transcript(proposer, ceremony_id)
        core.verify_transcript(transcript).require()
        return transcript

    def list(
        self, member: MemberSecrets, status: str | None = None, *, first: int | None = None
    ) -> list[dict[str, Any]]:
        """Every ceremony (with ``status``, only those; with ``first``, only that many), oldest first."""
        params = {"status": status} if status else {}
        result: list[dict[str, Any]] = self._client.get_all(member, "/v1/ceremonies", first=first, **params)
        return result
