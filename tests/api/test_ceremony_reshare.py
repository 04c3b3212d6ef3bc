"""Reshare ceremonies after a membership change, and key-set export/import: both need a
manager's and a custodian's share, re-sealed to a one-time operation key."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import delete
from tests.conftest import World
from tests.helpers.audit import audit_entries

from tandem.client import ceremony as cc
from tandem.core import ceremony as core
from tandem.core import keyset_export, split
from tandem.core.identity import MemberSecrets
from tandem.core.keygen import public_key_for
from tandem.core.split import reseal_for_operation
from tandem.errors import InputError, RemoteError, ReshareRequiredError
from tandem.services.base import Call
from tandem.store.models import AddressRow, KeyRow, KeySet, Member

ROOT = Path(__file__).resolve().parents[2]


def definition(name: str) -> str:
    return (ROOT / "ceremonies" / f"{name}.toml").read_text(encoding="utf-8")


def make_keyset(world: World, name: str = "bitcoin-testnet-cold") -> dict[str, Any]:
    transcript = world.client.ceremonies.run(proposer=world["alice"], approvers=[world["bob"]],
                                 definition_text=definition(name), code=world.code)
    return world.client.keysets.get(world["olga"], transcript["keyset"]["id"])


def service_public(world: World) -> bytes:
    return bytes.fromhex(world.client.deployment()["service"]["sign_public"])


def open_first_key(world: World, keyset_id: str, manager: MemberSecrets,
                   custodian: MemberSecrets) -> bytes:
    """Use the key set the way a signer does: both sides re-seal to an operation key,
    the signer decrypts the key. Returns the public key of the decrypted private key."""
    svc = world.svc
    with svc.db.write() as session:
        call = Call(session, world.clock(), svc.runner.deployment(session))
        operation = svc.keys.new_operation(call, keyset_id=keyset_id, purpose="test-use")
    op_id = operation["statement"]["operation"]
    sealed = world.client.keysets.get(world["olga"], keyset_id)["sealed"]
    resealed = [(m, *reseal_for_operation(m, sealed, operation, service_public(world)))
                for m in (manager, custodian)]
    with svc.db.write() as session:
        dep = svc.runner.deployment(session)
        for member, side, box in resealed:
            actor = session.get(Member, member.member_id)
            # A stand-in for a flow's call; a custodian's share needs a checked TOTP code.
            call = Call(session, world.clock(), dep, actor=actor, totp_verified=True)
            svc.keys.store_share(call, operation=op_id, keyset_id=keyset_id, side=side, sealed_b64=box)
        key_id = split.SealedKeyset.from_dict(sealed).keys[0].key_id
        with svc.keys.private_keys(Call(session, world.clock(), dep), keyset_id=keyset_id,
                              operation=op_id, key_ids=[key_id]) as keys:
            OPENED[keyset_id] = bytes(keys[key_id])  # for the secret scan below
            return public_key_for("secp256k1", keys[key_id])


OPENED: dict[str, bytes] = {}


def remove_member(world: World, who: str, *, proposer: str, approver: str) -> None:
    prop = world.client.members.propose_remove(world[proposer], world[who].member_id)
    done = world.client.members.approve(world[approver], prop["id"], totp=world.code(approver))
    assert done["status"] == "applied"


# --- reshare ----------------------------------------------------------------------------


def test_reshare_after_custodian_removal_restores_use(world: World) -> None:
    keyset = make_keyset(world)
    ks = keyset["id"]
    before = split.SealedKeyset.from_dict(keyset["sealed"])
    first_public = keyset["keys"][0]["public_key"]
    assert open_first_key(world, ks, world["alice"], world["bob"]).hex() == first_public

    remove_member(world, "bob", proposer="alice", approver="cora")
    assert world.client.keysets.get(world["olga"], ks)["status"] == "reshare_required"
    with world.svc.db.write() as session:
        call = Call(session, world.clock(), world.svc.runner.deployment(session))
        keys = world.svc.keys.private_keys(call, keyset_id=ks, operation="op_unused",
                                      key_ids=[keyset["keys"][0]["key_id"]])
        with pytest.raises(ReshareRequiredError) as err:
            keys.__enter__()
    assert err.value.code == "reshare_required"

    transcript = world.client.ceremonies.run(proposer=world["alice"], approvers=[world["cora"]],
                                 definition_text=definition("reshare"), code=world.code,
                                 target_keyset=ks)
    report = core.verify_transcript(transcript)
    assert report.complete, report.problems
    assert transcript["keyset"]["previous"]["status"] == "reshare_required"
    assert world["bob"].member_id in transcript["keyset"]["previous"]["custodians"]

    after_view = world.client.keysets.get(world["olga"], ks)
    assert after_view["status"] == "active"
    assert after_view["generation"] == 2
    assert after_view["recipients"]["custodian"] == [world["cora"].member_id]
    assert after_view["addresses"] == keyset["addresses"]  # same keys, same addresses
    after = split.SealedKeyset.from_dict(after_view["sealed"])
    assert after.dek_check != before.dek_check

    # The removed member's old sealing key opens nothing in the new record...
    with pytest.raises(InputError, match="holds no share"):
        after.sealed_share_for(world["bob"].member_id)
    for box in [*after.manager_shares.values(), *after.custodian_shares.values()]:
        with pytest.raises(split.DecryptionError):
            split.unseal_share(box, bytes(world["bob"].seal_private_key))
    # ...and the share it kept from before, even with a manager's old share, rebuilds
    # only the retired DEK.
    old_c = split.unseal_share(before.custodian_shares[world["bob"].member_id],
                               bytes(world["bob"].seal_private_key))
    old_m = split.unseal_share(before.manager_shares[world["alice"].member_id],
                               bytes(world["alice"].seal_private_key))
    old_dek = split.combine_shares(old_m, old_c)
    assert split.share_commitment("custodian", ks, old_c) != after.custodian_commitment
    assert split.dek_check(old_dek, ks) != after.dek_check
    with pytest.raises(split.DecryptionError):
        split.reshare(after, dek=old_dek, new_manager_publics={"x": b"\x01" * 32},
                      new_custodian_publics={"y": b"\x02" * 32})

    # Usable again, by the current members.
    assert open_first_key(world, ks, world["mark"], world["cora"]).hex() == first_public
    kinds = [e["kind"] for e in audit_entries(world)]
    assert "keyset.reshare_required" in kinds
    assert "keyset.reshared" in kinds
    assert kinds.index("keyset.reshare_required") < kinds.index("keyset.reshared")


def test_reshare_needs_both_shares_and_current_members(world: World) -> None:
    ks = make_keyset(world)["id"]
    other = make_keyset(world)["id"]
    alice, cora = world["alice"], world["cora"]

    # an operation for another key set is refused at proposal
    wrong_op = world.client.keysets.request_operation(alice, other, "reshare")
    sealed = world.client.keysets.get(alice, other)["sealed"]
    _side, box = reseal_for_operation(alice, sealed, wrong_op, service_public(world))
    env = world.client.sign(alice, "ceremony.propose", {
        "ceremony": cc.new_ceremony_id(), "definition": definition("reshare"),
        "target_keyset": ks, "operation": wrong_op, "sealed_share": box})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", "/v1/ceremonies", json_body={"envelope": env})
    assert err.value.remote_code == "invalid_input"
    assert "not a reshare operation for key set" in err.value.message

    view = world.client.ceremonies.propose(alice, definition("reshare"), target_keyset=ks)
    ceremony_id = view["id"]
    digest = cc.local_digest(world.client.ceremonies.get(cora, ceremony_id))
    # a custodian approval without its share cannot rotate anything
    env = world.client.sign(cora, "ceremony.approve", {"ceremony": ceremony_id, "digest": digest})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/approve",
                             json_body={"envelope": env, "totp": world.code("cora")})
    assert err.value.remote_code == "invalid_input"
    # a share re-sealed to another operation is refused when the signer opens it
    env = world.client.sign(cora, "ceremony.approve", {
        "ceremony": ceremony_id, "digest": digest,
        "sealed_share": reseal_for_operation(cora, sealed, wrong_op, service_public(world))[1]})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/approve",
                             json_body={"envelope": env, "totp": world.code("cora")})
    assert err.value.remote_code == "decryption_failed"
    assert world.client.keysets.get(alice, ks)["generation"] == 1

    # the right share completes it
    done = world.client.ceremonies.approve(cora, ceremony_id, totp=world.code("cora"))
    assert done["status"] == "executed"
    assert world.client.keysets.get(alice, ks)["generation"] == 2
    codes = {e["code"] for e in audit_entries(world) if e["outcome"] == "refused"}
    assert {"invalid_input", "decryption_failed"} <= codes


def test_removed_member_cannot_take_part_in_reshare(world: World) -> None:
    ks = make_keyset(world)["id"]
    remove_member(world, "bob", proposer="alice", approver="cora")
    view = world.client.ceremonies.propose(world["alice"], definition("reshare"),
                               target_keyset=ks)
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.approve(world["bob"], view["id"], totp=world.code("bob"))
    assert err.value.remote_code in ("member_removed", "invalid_session")


# --- export and import -------------------------------------------------------------------


def forget_keyset(world: World, keyset_id: str) -> None:
    """Simulate losing the key set's rows (e.g. a restore from an older backup)."""
    with world.svc.db.write() as session:
        session.exec(delete(AddressRow).where(AddressRow.keyset == keyset_id))  # type: ignore[call-overload]
        session.exec(delete(KeyRow).where(KeyRow.keyset == keyset_id))  # type: ignore[call-overload]
        session.exec(delete(KeySet).where(KeySet.id == keyset_id))  # type: ignore[call-overload]


def test_export_import_needs_a_manager_and_a_custodian(world: World) -> None:
    keyset = make_keyset(world, "ethereum-cold")
    ks = keyset["id"]
    export = world.client.keysets.export(world["alice"], ks)
    assert export["format"] == keyset_export.EXPORT_FORMAT
    keyset_export.check_export(export)
    env = world.client.sign(world["olga"], "keyset.export", {"keyset": ks})
    with pytest.raises(RemoteError) as err:  # auditors read; they do not export
        world.client.request("POST", f"/v1/keysets/{ks}/export", json_body={"envelope": env})
    assert err.value.remote_code == "role_not_allowed"

    # nothing to import while the key set is present
    with pytest.raises(RemoteError) as err:
        world.client.keysets.propose_import(world["mark"], export)
    assert err.value.remote_code == "conflict"

    forget_keyset(world, ks)
    with pytest.raises(RemoteError) as err:
        world.client.keysets.get(world["olga"], ks)
    assert err.value.remote_code == "not_found"

    # a tampered export (an address swapped) is refused before anything is proposed
    tampered = copy.deepcopy(export)
    tampered["addresses"][0]["address"] = "0x" + "12" * 20
    with pytest.raises(Exception, match="does not verify"):
        world.client.keysets.propose_import(world["mark"], tampered)
    env = world.client.sign(world["mark"], "keyset.import", {
        "export_hash": keyset_export.export_hash(tampered), "operation": {}, "sealed_share": ""})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", "/v1/keysets/import",
                             json_body={"envelope": env, "export": tampered})
    assert err.value.remote_code == "verification_failed"

    # a custodian cannot start an import, a manager cannot finish one
    with pytest.raises(RemoteError) as err:
        world.client.keysets.propose_import(world["bob"], export)
    assert err.value.remote_code == "role_not_allowed"
    pending = world.client.keysets.propose_import(world["mark"], export)
    assert pending["status"] == "proposed"
    with pytest.raises(RemoteError) as err:
        world.client.keysets.approve_import(world["alice"], pending["id"], export=export,
                          totp=world.code("alice"))
    assert err.value.remote_code == "role_not_allowed"
    with pytest.raises(RemoteError) as err:
        world.client.keysets.get(world["olga"], ks)
    assert err.value.remote_code == "not_found"

    done = world.client.keysets.approve_import(world["cora"], pending["id"], export=export,
                             totp=world.code("cora"))
    assert done["status"] == "complete"
    restored = world.client.keysets.get(world["olga"], ks)
    assert restored["status"] == "active"
    assert restored["addresses"] == keyset["addresses"]
    assert restored["sealed"] == keyset["sealed"]
    assert open_first_key(world, ks, world["alice"], world["bob"]).hex() == (
        keyset["keys"][0]["public_key"])

    entries = audit_entries(world)
    kinds = [e["kind"] for e in entries]
    for kind in ("keyset.exported", "keyset.operation_created", "keyset.import_proposed",
                 "keyset.imported"):
        assert kind in kinds
    imported = next(e for e in entries if e["kind"] == "keyset.imported")
    assert imported["data"]["export_hash"] == keyset_export.export_hash(export)
    assert imported["actor"] == world["cora"].member_id


def test_import_refuses_a_share_that_does_not_open(world: World) -> None:
    keyset = make_keyset(world)
    ks = keyset["id"]
    export = world.client.keysets.export(world["bob"], ks)
    forget_keyset(world, ks)
    pending = world.client.keysets.propose_import(world["alice"], export)
    # cora re-seals her share to an operation other than the import's
    stray = world.client.keysets.request_operation(world["cora"], ks, "import")
    _side, box = reseal_for_operation(world["cora"], export["sealed"], stray,
                                      service_public(world))
    env = world.client.sign(world["cora"], "keyset.import_approve", {
        "import": pending["id"], "export_hash": keyset_export.export_hash(export), "sealed_share": box})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/keysets/import/{pending['id']}/approve",
                             json_body={"envelope": env, "totp": world.code("cora")})
    assert err.value.remote_code == "decryption_failed"
    with pytest.raises(RemoteError):
        world.client.keysets.get(world["olga"], ks)
    # the custodian's client refuses to finish an import of another export than its file
    other = copy.deepcopy(export)
    other["exported_at"] += 1
    with pytest.raises(Exception, match="different export"):
        world.client.keysets.approve_import(world["cora"], pending["id"], export=other,
                          totp=world.code("cora"))
    assert world.client.keysets.approve_import(world["cora"], pending["id"], export=export,
                             totp=world.code("cora"))["status"] == "complete"


def test_no_private_key_in_any_ceremony_output(world: World) -> None:
    """THREATS 16 for ceremonies: the keys a ceremony made appear nowhere it writes or
    answers: transcript, views, export, audit log, database tables."""
    from sqlalchemy import text
    from tests.adversarial.secret_scan import forms_of_bytes, scan

    keyset = make_keyset(world)
    ks = keyset["id"]
    open_first_key(world, ks, world["alice"], world["bob"])
    private = OPENED.pop(ks)
    transcript = world.client.ceremonies.transcript(world["olga"], keyset["ceremony"])
    export = world.client.keysets.export(world["alice"], ks)
    blobs: dict[str, str | bytes] = {
        "transcript": json.dumps(transcript),
        "keyset": json.dumps(world.client.keysets.get(world["olga"], ks)),
        "ceremony": json.dumps(world.client.ceremonies.get(world["olga"], keyset["ceremony"])),
        "export": json.dumps(export),
        "audit": "\n".join(json.dumps(e) for e in audit_entries(world)),
    }
    with world.svc.db.read() as session:
        for table in ("ceremony", "keyset", "keyrow", "addressrow", "operationshare", "approval"):
            rows = session.execute(text(f"SELECT * FROM {table}")).all()
            blobs[f"table {table}"] = repr(rows)
    assert scan(blobs, forms_of_bytes("private key", private)) == []
