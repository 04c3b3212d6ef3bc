"""Key sets at rest: lifecycle marks that membership changes impose, public views,
export to offline media and restoring an export. Helpers run inside a caller's
transaction (a :class:`Call` or a read session); none opens one itself."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, func, select

from tandem.core.canonical import canonical, loads_strict
from tandem.core.keyset_export import EXPORT_FORMAT, EXPORT_KEYSET_FIELDS
from tandem.core.lifecycles import KEYSETS, KeySetState, MemberState
from tandem.core.roles import Role
from tandem.core.split import SealedKeyset
from tandem.errors import ConflictError, NotFoundError
from tandem.services.base import Call, Runner
from tandem.store import pages
from tandem.store.models import AddressRow, Ceremony, KeyRow, KeySet, Member


def mark_reshare_required(service: Runner, call: Call, member_id: str, *, reason: str) -> list[str]:
    """Every active key set with a share sealed to ``member_id`` stops signing until a
    reshare ceremony rotates its DEK."""
    marked = []
    for ks in call.session.exec(select(KeySet).where(KeySet.status == KeySetState.ACTIVE)).all():
        sealed = SealedKeyset.from_json(ks.sealed)
        recipients = sealed.members("manager") | sealed.members("custodian")
        if member_id in recipients:
            ks.status = KEYSETS.transition(ks.status, "require_reshare")
            call.session.add(ks)
            marked.append(ks.id)
    if marked:
        service.audit(
            call,
            "keyset.reshare_required",
            {"keysets": marked, "member": member_id, "reason": reason},
            with_envelope=False,
        )
    return marked


def current_recipients(session: Session) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """X25519 public keys of every active manager and custodian: who new shares go to."""
    managers: dict[str, bytes] = {}
    custodians: dict[str, bytes] = {}
    for m in session.exec(select(Member).where(Member.status == MemberState.ACTIVE)).all():
        if m.role == Role.MANAGER.value:
            managers[m.id] = bytes.fromhex(m.seal_public)
        elif m.role == Role.CUSTODIAN.value:
            custodians[m.id] = bytes.fromhex(m.seal_public)
    return managers, custodians


def status_for_recipients(session: Session, sealed: SealedKeyset) -> str:
    """``active`` when every share holder is an active member with the same sealing key,
    else ``reshare_required`` (a removed or rekeyed member still holds a share)."""
    managers, custodians = current_recipients(session)
    current = {**managers, **custodians}
    holders = sealed.members("manager") | sealed.members("custodian")
    same_side = sealed.members("manager") <= set(managers) and sealed.members("custodian") <= set(custodians)
    return KeySetState.ACTIVE if holders <= set(current) and same_side else KeySetState.RESHARE_REQUIRED


def get_keyset_row(session: Session, keyset_id: str) -> KeySet:
    ks = session.get(KeySet, keyset_id)
    if ks is None:
        raise NotFoundError(f"no key set {keyset_id}")
    return ks


def keyset_public(session: Session, ks: KeySet, *, with_sealed: bool = False) -> dict[str, Any]:
    """Public facts about a key set; with ``with_sealed`` also its sealed record (only
    ciphertexts and sealed boxes: nothing in it opens without both sides)."""
    sealed = SealedKeyset.from_json(ks.sealed)
    keys = session.exec(select(KeyRow).where(KeyRow.keyset == ks.id).order_by(col(KeyRow.position))).all()
    addresses = session.exec(
        select(AddressRow).where(AddressRow.keyset == ks.id).order_by(col(AddressRow.id))
    ).all()
    key_public = {k.id: k.public_key for k in keys}
    out: dict[str, Any] = {
        **_keyset_facts(ks),
        "keys": [
            {"key_id": k.id, "position": k.position, "curve": k.curve, "public_key": k.public_key}
            for k in keys
        ],
        "addresses": [
            {
                "key_id": a.key_id,
                "chain": a.chain,
                "network": a.network,
                "address": a.address,
                "public_key": key_public.get(a.key_id, ""),
                "segregation": a.segregation,
                "birth_proof": loads_strict(a.birth_proof),
            }
            for a in addresses
        ],
        "recipients": {
            "manager": sorted(sealed.members("manager")),
            "custodian": sorted(sealed.members("custodian")),
        },
    }
    if with_sealed:
        out["sealed"] = sealed.to_dict()
    return out


def list_keysets(session: Session, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
    """One page of key sets, oldest first, with how many keys each has and its addresses:
    the page's keys and addresses are read in one query each."""
    page = pages.read_page(
        session,
        select(KeySet),
        kind="keysets",
        order=(col(KeySet.created_at), col(KeySet.id)),
        limit=limit,
        cursor=cursor,
    )
    ids = [ks.id for ks in page.rows]
    key_counts: dict[str, int] = dict.fromkeys(ids, 0)
    addresses: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    if ids:
        counted = session.exec(
            select(KeyRow.keyset, func.count())
            .where(col(KeyRow.keyset).in_(ids))
            .group_by(col(KeyRow.keyset))
        ).all()
        key_counts.update({keyset: int(n) for keyset, n in counted})
        for a in session.exec(
            select(AddressRow).where(col(AddressRow.keyset).in_(ids)).order_by(col(AddressRow.id))
        ).all():
            addresses[a.keyset].append({"chain": a.chain, "network": a.network, "address": a.address})
    items = []
    for ks in page.rows:
        sealed = SealedKeyset.from_json(ks.sealed)
        items.append(
            {
                **_keyset_facts(ks),
                "keys": key_counts[ks.id],
                "addresses": addresses[ks.id],
                "recipients": {
                    "manager": sorted(sealed.members("manager")),
                    "custodian": sorted(sealed.members("custodian")),
                },
            }
        )
    return {"items": items, "next_cursor": page.next_cursor}


def _keyset_facts(ks: KeySet) -> dict[str, Any]:
    return {
        "id": ks.id,
        "ceremony": ks.ceremony,
        "curve": ks.curve,
        "segregation": ks.segregation,
        "status": ks.status,
        "generation": ks.generation,
        "created_at": ks.created_at,
    }


def build_export(session: Session, ks: KeySet, *, deployment: str, entity: str, now: int) -> dict[str, Any]:
    """The key set for offline media: its sealed record plus the public data needed to
    check it (keys, addresses, birth proofs, the transcript hash of its ceremony)."""
    view = keyset_public(session, ks, with_sealed=True)
    transcript_hash = None
    ceremony = session.get(Ceremony, ks.ceremony)
    if ceremony is not None:
        transcript_hash = loads_strict(ceremony.state).get("transcript_hash")
    return {
        "format": EXPORT_FORMAT,
        "deployment": deployment,
        "entity": entity,
        "keyset": {k: view[k] for k in EXPORT_KEYSET_FIELDS},
        "sealed": view["sealed"],
        "keys": view["keys"],
        "addresses": view["addresses"],
        "transcript_hash": transcript_hash,
        "exported_at": now,
    }


def restore_keyset(session: Session, export: dict[str, Any], sealed: SealedKeyset, *, status: str) -> None:
    """Write the rows of an export that :func:`tandem.core.keyset_export.check_export` accepted
    and whose DEK both sides have proven."""
    ks = export["keyset"]
    if session.get(KeySet, ks["id"]) is not None:
        raise ConflictError(f"key set {ks['id']} is already present; nothing to import")
    session.add(
        KeySet(
            id=ks["id"],
            ceremony=ks["ceremony"],
            curve=ks["curve"],
            segregation=ks["segregation"],
            status=status,
            sealed=sealed.to_json(),
            generation=ks["generation"],
            created_at=ks["created_at"],
        )
    )
    for k in export["keys"]:
        session.add(
            KeyRow(
                id=k["key_id"],
                keyset=ks["id"],
                position=k["position"],
                curve=k["curve"],
                public_key=k["public_key"],
                segregation=ks["segregation"],
            )
        )
    for a in export["addresses"]:
        session.add(
            AddressRow(
                key_id=a["key_id"],
                keyset=ks["id"],
                chain=a["chain"],
                network=a["network"],
                address=a["address"],
                segregation=a["segregation"],
                birth_proof=canonical(a["birth_proof"]).decode(),
            )
        )
    session.flush()
