"""A member's key rotation: the id is fixed at admission, the key follows the log.

A member rotates its keys (a ``member.rekey`` proposal the other side approves, applied
after the membership delay). From the moment it takes effect the member acts with its
new keystore under its unchanged member id: it opens sessions, approves withdrawals and
is counted in quorum; its old key is refused with ``key_rotated`` by the server, by the
members' own replay of the log (``LogState``) and by the offline signer. A rotation the
other side never approved, written into the log with the service key alone, is refused
by the replay.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import World
from tests.helpers.audit import audit_entries, membership_state, post
from tests.helpers.membership import apply_change, approve, rekey_member, wait_out_delay
from tests.helpers.refusals import refused
from tests.helpers.withdrawals import approve_proposal, btc_intent, setup
from typer.testing import CliRunner

from tandem.client import log as client_log
from tandem.client.members import proposal_digest
from tandem.core import withdrawal as wcore
from tandem.core.actions import sign_action
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets, member_id_from_keystore
from tandem.core.policy import default_policy
from tandem.core.roles import Role
from tandem.errors import AuditVerificationError, KeystoreError
from tandem.store import audit_log
from tandem.store.models import Member, Withdrawal

PASSPHRASE = "rotation passphrase"


def genesis_pin(world: World) -> str:
    return str(world.client.deployment(refresh=True)["genesis_hash"])


def session_open(world: World, signer: MemberSecrets) -> dict[str, Any]:
    return sign_action(
        signer, type="session.open", deployment=world.deployment, body={}, issued_at=world.clock()
    ).to_json()


def rotate(world: World, who: str, *, approver: str) -> tuple[MemberSecrets, MemberSecrets]:
    """``who`` proposes its own rotation with its old key; ``approver`` (the other side)
    approves; the delay passes; it is applied. Returns (old, new) secrets."""
    old = world[who]
    # Through the keystore, as a member's machine holds it.
    new = MemberSecrets.from_keystore(old.rotated().to_keystore(PASSPHRASE, log2_n=14), PASSPHRASE)
    prop = world.client.members.propose_rekey(old, old.member_id, new.card())
    if approve(world, approver, prop["id"])["status"] != "applied":  # else no delay in force
        wait_out_delay(world)
        assert apply_change(world, approver, prop["id"])["status"] == "applied"
    world.client._sessions.clear()
    return old, new


def test_rotated_keystore_keeps_the_member_id() -> None:
    old = MemberSecrets.generate(name="cora", role=Role.CUSTODIAN)
    new = old.rotated()
    assert new.sign_public != old.sign_public
    assert new.seal_public != old.seal_public
    assert new.member_id == old.member_id
    assert new.card().member_id != old.member_id  # the card alone names the key, not the member
    data = new.to_keystore(PASSPHRASE, log2_n=14)
    assert member_id_from_keystore(data) == old.member_id
    assert MemberSecrets.from_keystore(data, PASSPHRASE).member_id == old.member_id
    # A keystore never rotated is written as before: no member field.
    assert "member" not in json.loads(old.to_keystore(PASSPHRASE, log2_n=14))
    # The id is bound into the encryption: another id in the header does not open.
    doc = json.loads(data)
    doc["member"] = "mem_" + "0" * 20
    with pytest.raises(KeystoreError, match="altered"):
        MemberSecrets.from_keystore(canonical(doc), PASSPHRASE)


def test_rotated_member_acts_with_the_new_key(world: World) -> None:
    """End to end: rotate cora; the new key opens a session, approves a withdrawal and is
    counted in the release's quorum; the old key is refused from that moment."""
    old, new = rotate(world, "cora", approver="alice")
    cora_id = old.member_id
    assert new.member_id == cora_id
    world.members["cora"] = new  # the new keystore; the TOTP seed is unchanged

    # Old key: refused with a stable code, audited, nothing changed.
    before = membership_state(world)
    response = post(world, "/v1/sessions", {"envelope": session_open(world, old)})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "key_rotated"
    assert membership_state(world) == before
    refusals = [e for e in audit_entries(world) if e["code"] == "key_rotated"]
    assert len(refusals) == 1
    assert refusals[0]["kind"] == "session.open.refused"

    # New key: a session, then a withdrawal approved and released with cora in quorum.
    s = setup(world)  # the key set seals cora's share to the new sealing key
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    refused(
        "key_rotated",
        world.client.withdrawals.approve,
        old,
        w["id"],
        totp=world.client.members.totp_code(new),
    )
    world.client._sessions.pop(cora_id, None)
    approved = world.client.withdrawals.approve(new, w["id"], totp=world.code("cora"))
    assert approved["status"] == wcore.APPROVED
    bundle = world.client.get(world["alice"], f"/v1/withdrawals/{w['id']}/bundle")
    verified = wcore.verify_bundle(bundle, now=world.clock(), genesis_hash_pin=genesis_pin(world))
    assert verified.withdrawal["id"] == w["id"]
    released = world.client.withdrawals.release(new, w["id"])
    assert released["status"] == "released"
    entry = next(e for e in audit_entries(world) if e["kind"] == "withdrawal.released")
    assert cora_id in entry["data"]["approved_by"]

    # The members' own replay of the whole log accepts the rotation and every action since.
    lines, checkpoint = world.client.audit.export(world["olga"])
    state = client_log.verify_log(lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert state.members[cora_id].sign_public == new.sign_public
    assert [k for k, _ in state.retired_keys[cora_id]] == [old.sign_public]


def test_approval_given_before_the_rotation_still_counts(world: World) -> None:
    """An approval signed with the key in force at the time stays valid after the
    rotation (the release's integrity check reads the key from the log)."""
    doc = default_policy().to_json() | {
        "version": 2,
        "membership": {"approvals": {"custodian": 1, "manager": 1}, "delay_seconds": 0},
    }
    s = setup(world, policy=doc)  # rotations take effect at approval: the request stays live
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    world.client.withdrawals.approve(world["bob"], w["id"], totp=world.code("bob"))
    # The requester rotates after signing the request, and bob after approving it.
    old_alice, new_alice = rotate(world, "alice", approver="cora")
    world.members["alice"] = new_alice
    _old_bob, new_bob = rotate(world, "bob", approver="mark")
    world.members["bob"] = new_bob
    with world.svc.db.read() as sess:
        row = sess.get(Member, old_alice.member_id)
        assert row is not None
        assert row.sign_public == new_alice.sign_public.hex()
    # A rotated share holder makes the key set need a reshare; the stored request and
    # its approval, signed by keys then in force, still verify: refused for the reshare,
    # never marked tampered.
    with world.svc.db.read() as sess:
        stored = sess.get(Withdrawal, w["id"])
        assert stored is not None
        assert world.svc.withdrawals._tamper_reason(sess, stored) is None
    err = refused("reshare_required", world.client.withdrawals.release, world["cora"], w["id"])
    assert "tamper" not in err.message
    assert world.client.withdrawals.get(world["olga"], w["id"])["status"] == wcore.APPROVED


def forge_entry(
    world: World, *, kind: str, actor: str, envelope: dict[str, Any], data: dict[str, Any]
) -> int:
    """An "ok" entry written with the service key alone (chain, tree and checkpoint in order)."""
    with world.svc.db.write() as s:
        written = audit_log.append(
            s,
            world.svc.key,
            deployment=world.deployment,
            kind=kind,
            actor=actor,
            outcome="ok",
            code=None,
            envelope=envelope,
            data=data,
            time=world.clock(),
        )
    return int(written["index"])


def test_old_key_in_the_log_refused_by_log_state_and_offline_signer(world: World) -> None:
    """A server holding the retired key logs an approval signed with it after the
    rotation: the members' replay and the offline signer both refuse it, naming the
    entry and ``key_rotated``'s reason."""
    old, new = rotate(world, "cora", approver="alice")
    world.members["cora"] = new
    s = setup(world)
    w = world.client.withdrawals.create(world["alice"], btc_intent(s))
    world.client.withdrawals.approve(new, w["id"], totp=world.code("cora"))
    book = world.client.policy.propose_address(
        world["alice"],
        chain="bitcoin",
        network="testnet",
        address=s.btc_from,
        label="own change",
    )
    digest = proposal_digest(world.client.get(world["olga"], f"/v1/proposals/{book['id']}"))
    forged = sign_action(
        old,
        type="proposal.approve",
        deployment=world.deployment,
        body={"proposal": book["id"], "digest": digest},
        issued_at=world.clock(),
    ).to_json()
    index = forge_entry(
        world, kind="proposal.approved", actor=old.member_id, envelope=forged, data={"proposal": book["id"]}
    )

    lines, checkpoint = world.client.audit.export(world["olga"])
    with pytest.raises(AuditVerificationError) as err:
        client_log.verify_log(lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert err.value.index == index
    assert "retired" in err.value.message
    bundle = world.client.get(world["alice"], f"/v1/withdrawals/{w['id']}/bundle")
    assert index in bundle["audit"]["index"]["index"]["indices"]
    with pytest.raises(AuditVerificationError) as offline:
        wcore.verify_bundle(bundle, now=world.clock(), genesis_hash_pin=genesis_pin(world))
    assert offline.value.index == index
    assert "retired" in offline.value.message


def test_forged_rotation_refused_by_log_state(world: World) -> None:
    """Cora proposes her rotation; nobody of the other side approves. The server writes
    ``member.rekeyed`` with the service key alone and switches its table to the new key,
    which it then accepts. The members' replay refuses the rotation at its entry."""
    old = world["cora"]
    thief = old.rotated()
    prop = world.client.members.propose_rekey(old, old.member_id, thief.card())
    # The same side cannot approve it (the other side decides membership changes).
    refused("role_not_allowed", approve, world, "bob", prop["id"])
    with world.svc.db.write() as s:
        row = s.get(Member, old.member_id)
        assert row is not None
        row.sign_public = thief.sign_public.hex()
        row.seal_public = thief.seal_public.hex()
        row.card = canonical(thief.card().to_json()).decode()
        s.add(row)
        index = audit_log.append(
            s,
            world.svc.key,
            deployment=world.deployment,
            kind="member.rekeyed",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data={"proposal": prop["id"], "member": old.member_id, "card": thief.card().to_json()},
            time=world.clock(),
        )["index"]
    # The server now takes the thief's key...
    assert post(world, "/v1/sessions", {"envelope": session_open(world, thief)}).status_code == 201
    # ...the members' replay does not.
    lines, checkpoint = world.client.audit.export(world["olga"])
    with pytest.raises(AuditVerificationError) as err:
        client_log.verify_log(lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert err.value.index == index
    assert "pending" in err.value.message


def test_cli_rotate_key(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tandem member rotate-key`` writes the new keystore (same id, same pin) and
    proposes the rotation; once applied the new keystore reads and the old is refused."""
    from tandem.cli import main as cli_main
    from tandem.client.pin import pin_path

    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(cli_main, "Client", lambda server: world.client)
    old_ks, new_ks = tmp_path / "cora.ks", tmp_path / "cora-2.ks"
    old_ks.write_bytes(world["cora"].to_keystore(PASSPHRASE, log2_n=14))
    world.client.pinned(world["cora"]).copy().save(pin_path(old_ks))
    runner = CliRunner()
    result = runner.invoke(cli_main.app, ["member", "rotate-key", "-k", str(old_ks), "--out", str(new_ks)])
    assert result.exit_code == 0, result.output
    assert member_id_from_keystore(new_ks.read_bytes()) == world["cora"].member_id
    assert pin_path(new_ks).read_bytes() == pin_path(old_ks).read_bytes()
    proposal = next(
        p for p in world.client.get(world["olga"], "/v1/proposals") if p["kind"] == "member.rekey"
    )
    again = runner.invoke(cli_main.app, ["member", "rotate-key", "-k", str(old_ks), "--out", str(new_ks)])
    assert again.exit_code != 0
    assert "exists" in again.output
    approve_proposal(world, proposal["id"], who="alice")
    wait_out_delay(world)
    apply_change(world, "alice", proposal["id"])
    world.client._sessions.clear()
    shown = runner.invoke(cli_main.app, ["id", "show", str(new_ks)])
    assert world["cora"].member_id in shown.output
    listed = runner.invoke(cli_main.app, ["member", "list", "-k", str(new_ks)])
    assert listed.exit_code == 0, listed.output
    assert "cora" in listed.output
    world.client._sessions.clear()
    stale = runner.invoke(cli_main.app, ["member", "list", "-k", str(old_ks)])
    assert stale.exit_code != 0
    assert "key_rotated" in stale.output or "key rotation" in stale.output


def test_rekey_member_helper_still_rekeys_by_card(world: World) -> None:
    """A rotation proposed for someone else (an auditor cannot propose) works the same."""
    olga = world["olga"]
    new = olga.rotated()
    rekey_member(world, olga.member_id, new.card(), proposer="alice", approvers=("bob",))
    world.client._sessions.clear()
    assert world.client.get(new, "/v1/members")
