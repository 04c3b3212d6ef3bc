"""THREATS 26: a log written with the service key alone adds or rekeys a member, changes
policy or the address book. ``tandem audit verify``, the offline signer and members'
clients refuse it: every effect must follow from a member-signed proposal and approval.

The attack is mounted as the holder of the server and its service key would: the forged
entry is appended to the real database with the real service key (``audit_log.append``,
so the hash chain, the Merkle tree and the signed checkpoint are all in order), and the
server's tables are changed to match, so the server itself acts on the forgery. Then
the log is exported over the API as an auditor would, and every verifier is tried.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import World, new_member
from tests.helpers.membership import add_member, approve, rekey_member
from tests.helpers.withdrawals import (
    STRANGER_BTC,
    btc_intent,
    create_approved,
    policy_doc,
    rule,
    setup,
)
from typer.testing import CliRunner

from tandem.cli import audit_cmds
from tandem.cli.main import app as cli_app
from tandem.client import log as client_log
from tandem.client import withdrawal as cw
from tandem.core import audit
from tandem.core import withdrawal as wcore
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets
from tandem.core.membership import LogState
from tandem.core.policy import parse_policy
from tandem.core.roles import Role
from tandem.errors import AuditVerificationError, VerificationError
from tandem.services.membership import _member_row
from tandem.services.policies import latest_policy_version
from tandem.store import audit_log
from tandem.store.models import AddressBookRow, Member, PolicyRow

FORGERIES = ["member.added", "member.rekeyed", "policy.change_approved", "addressbook.change_approved"]
PASSPHRASE = "t26 passphrase"


def genesis_pin(world: World) -> str:
    return str(world.client.deployment(refresh=True)["genesis_hash"])


def export(world: World) -> tuple[list[str], dict[str, Any]]:
    return world.client.audit.export(world["olga"])


def forge(world: World, kind: str, *, proposal: str = "prop_forged000001") -> int:
    """Write one effect entry with the service key alone, and make the server's tables
    agree with it. Returns the forged entry's index."""
    now = world.clock()
    with world.svc.db.write() as s:
        dep = world.deployment
        if kind == "member.added":
            puppet = new_member("sock puppet", Role.CUSTODIAN)
            s.add(_member_row(puppet.card(), dep, now))
            data: dict[str, Any] = {
                "proposal": proposal,
                "member": puppet.member_id,
                "card": puppet.card().to_json(),
            }
        elif kind == "member.rekeyed":
            thief = new_member("bob", Role.CUSTODIAN)
            bob = s.get(Member, world["bob"].member_id)
            assert bob is not None
            bob.sign_public = thief.card().sign_public.hex()
            bob.seal_public = thief.card().seal_public.hex()
            bob.card = canonical(thief.card().to_json()).decode()
            s.add(bob)
            data = {"proposal": proposal, "member": bob.id, "card": thief.card().to_json()}
        elif kind == "policy.change_approved":
            version = latest_policy_version(s) + 1
            lax = parse_policy(policy_doc(version, [rule("lax", allowlist_only=False)]))
            s.add(
                PolicyRow(
                    version=version,
                    doc=canonical(lax.to_json()).decode(),
                    hash=lax.hash(),
                    effective_at=now,
                    proposal=proposal,
                )
            )
            data = {"proposal": proposal, "policy": lax.to_json(), "hash": lax.hash(), "effective_at": now}
        else:
            entry = {
                "chain": "bitcoin",
                "network": "testnet",
                "address": STRANGER_BTC,
                "label": "attacker",
                "id": "ab_forged00000001",
            }
            s.add(
                AddressBookRow(
                    id=entry["id"],
                    chain="bitcoin",
                    network="testnet",
                    address=STRANGER_BTC,
                    asset=None,
                    label="attacker",
                    effective_at=now,
                    proposal=proposal,
                    status="active",
                )
            )
            data = {"proposal": proposal, "change": "add", "entry": entry, "effective_at": now}
        written = audit_log.append(
            s,
            world.svc.key,
            deployment=dep,
            kind=kind,
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data=data,
            time=now,
        )
    return int(written["index"])


def refused_at(index: int, fn: Any, *args: Any, **kwargs: Any) -> AuditVerificationError:
    with pytest.raises(AuditVerificationError) as err:
        fn(*args, **kwargs)
    assert err.value.code == "audit_verification_failed"
    assert err.value.index == index
    assert err.value.details["first_bad_entry"] == index
    assert f"entry {index}" in err.value.message
    return err.value


def genuine_history(world: World) -> None:
    """Every kind of effect, done properly: an addition, a rekey, a policy change and an
    address-book entry, each proposed, approved and (for members) carried out."""
    add_member(world, new_member("nina", Role.CUSTODIAN).card())
    new_cora = new_member("cora", Role.CUSTODIAN)
    rekey_member(world, world["cora"].member_id, new_cora.card())
    prop = world.client.policy.propose(world["alice"], policy_doc(2, [rule("two", custodians=2)]))
    approve(world, "bob", prop["id"])
    book = world.client.policy.propose_address(
        world["alice"], chain="bitcoin", network="testnet", address=STRANGER_BTC, label="broker"
    )
    approve(world, "bob", book["id"])


@pytest.fixture
def cli(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    from tandem.cli import main as cli_main

    monkeypatch.setenv("TANDEM_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(audit_cmds, "Client", lambda server: world.client)
    monkeypatch.setattr(cli_main, "Client", lambda server: world.client)
    (tmp_path / "olga.ks").write_bytes(world["olga"].to_keystore(PASSPHRASE, log2_n=14))
    return CliRunner()


def cli_verify(world: World, cli: CliRunner, tmp_path: Path, *, ok: bool) -> str:
    lines, checkpoint = export(world)
    out = tmp_path / "export"
    out.mkdir(exist_ok=True)
    (out / "audit.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "checkpoint.json").write_text(json.dumps(checkpoint), encoding="utf-8")
    (out / "service-key.json").write_text(json.dumps(world.svc.key.public_json()), encoding="utf-8")
    result = cli.invoke(
        cli_app, ["audit", "verify", str(out / "audit.jsonl"), "--genesis-hash", genesis_pin(world)]
    )
    assert (result.exit_code == 0) is ok, result.output
    return result.output


# --- the genuine log ------------------------------------------------------------------------


def test_genuine_log_verifies_everywhere(world: World, cli: CliRunner, tmp_path: Path) -> None:
    genuine_history(world)
    lines, checkpoint = export(world)
    state = LogState(genesis_hash_pin=genesis_pin(world))
    audit.verify_export(lines, checkpoint, world.svc.key.sign_public, replay=state.observe_entry)
    names = {m.name for m in state.members.values() if m.active}
    assert {"alice", "mark", "bob", "cora", "olga", "nina"} == names
    assert state.members[world["cora"].member_id].sign_public != world["cora"].card().sign_public
    assert state.latest_policy_version() == 2
    assert state.effects_justified >= 4
    out = cli_verify(world, cli, tmp_path, ok=True)
    assert "OK" in out
    members = world.client.audit.trusted_members(world["olga"], genesis_hash_pin=genesis_pin(world))
    assert {m.name for m in members} == names
    out = cli.invoke(
        cli_app, ["audit", "members", "--genesis-hash", genesis_pin(world), "-k", str(tmp_path / "olga.ks")]
    )
    assert out.exit_code == 0, out.output
    assert "nina" in out.output
    listed = cli.invoke(
        cli_app,
        ["member", "list", "--genesis-hash", genesis_pin(world), "-k", str(tmp_path / "olga.ks")],
    )
    assert listed.exit_code == 0, listed.output
    assert "nina" in listed.output


# --- forged effects -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_effect_refused_by_audit_verify(
    world: World, cli: CliRunner, tmp_path: Path, kind: str
) -> None:
    genuine_history(world)
    index = forge(world, kind)
    lines, checkpoint = export(world)
    key = world.svc.key.sign_public
    # The forgery is perfect at the level of hashes: chain, Merkle root, checkpoint.
    report = audit.verify_export(lines, checkpoint, key)
    assert report.entries > index
    # The justified replay refuses it, naming the entry and what it claims.
    replay = LogState(genesis_hash_pin=genesis_pin(world))
    err = refused_at(index, audit.verify_export, lines, checkpoint, key, replay=replay.observe_entry)
    assert kind in err.message
    assert "not justified" in err.message or "no member-signed proposal" in err.message
    out = cli_verify(world, cli, tmp_path, ok=False)
    assert f"entry {index}" in out
    # Verifying offline changes nothing on the server: the forged entry is still there.
    assert export(world)[0][index] == lines[index]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_effect_refused_by_members_client(
    world: World, cli: CliRunner, tmp_path: Path, kind: str
) -> None:
    index = forge(world, kind)
    lines, checkpoint = export(world)
    refused_at(index, client_log.verify_log, lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    refused_at(index, world.client.audit.trusted_members, world["olga"], genesis_hash_pin=genesis_pin(world))
    out = cli.invoke(
        cli_app, ["audit", "members", "--genesis-hash", genesis_pin(world), "-k", str(tmp_path / "olga.ks")]
    )
    assert out.exit_code == 1
    assert f"entry {index}" in out.output
    listed = cli.invoke(
        cli_app,
        ["member", "list", "--genesis-hash", genesis_pin(world), "-k", str(tmp_path / "olga.ks")],
    )
    assert listed.exit_code == 1
    assert f"entry {index}" in listed.output


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_effect_refused_by_offline_signer(world: World, kind: str) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    genuine = world.client.get(world["alice"], f"/v1/withdrawals/{w['id']}/bundle")
    wcore.verify_bundle(genuine, now=world.clock(), genesis_hash_pin=genesis_pin(world))
    index = forge(world, kind)
    bundle = world.client.get(world["alice"], f"/v1/withdrawals/{w['id']}/bundle")
    # The forged entry is of a replayed kind, so the bundle's selection must carry it.
    assert index in bundle["audit"]["index"]["index"]["indices"]
    refused_at(index, wcore.verify_bundle, bundle, now=world.clock(), genesis_hash_pin=genesis_pin(world))
    # The member adding its share to the bundle refuses too, before resealing anything.
    bundle["signer"] = MemberSecrets.generate(name="cold signer", role=Role.CUSTODIAN).card().to_json()
    refused_at(index, cw.add_share, bundle, world["alice"], now=world.clock())


def test_forgery_citing_a_real_but_unapproved_proposal_refused(world: World) -> None:
    """The proposer really signed the addition; no custodian approved it. Citing it is
    not enough."""
    card = new_member("nina", Role.CUSTODIAN).card()
    prop = world.client.members.propose_add(world["alice"], card)
    now = world.clock()
    with world.svc.db.write() as s:
        s.add(_member_row(card, world.deployment, now))
        index = audit_log.append(
            s,
            world.svc.key,
            deployment=world.deployment,
            kind="member.added",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data={"proposal": prop["id"], "member": card.member_id, "card": card.to_json()},
            time=now,
        )["index"]
    lines, checkpoint = export(world)
    err = refused_at(index, client_log.verify_log, lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert "pending" in err.message


def test_forgery_after_approval_but_before_the_delay_refused(world: World) -> None:
    """Approved, but the veto window is still open: carrying it out early is refused."""
    card = new_member("nina", Role.CUSTODIAN).card()
    prop = world.client.members.propose_add(world["alice"], card)
    approve(world, "bob", prop["id"])
    now = world.clock()
    with world.svc.db.write() as s:
        index = audit_log.append(
            s,
            world.svc.key,
            deployment=world.deployment,
            kind="member.added",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data={"proposal": prop["id"], "member": card.member_id, "card": card.to_json()},
            time=now,
        )["index"]
    lines, checkpoint = export(world)
    err = refused_at(index, client_log.verify_log, lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert "takes effect at" in err.message


def test_another_genesis_is_refused_by_the_pin(world: World) -> None:
    lines, checkpoint = export(world)
    with pytest.raises(VerificationError, match="pinned"):
        client_log.verify_log(lines, checkpoint, genesis_hash_pin="0" * 64)


def test_server_member_list_that_the_log_does_not_justify_refused(
    world: World, cli: CliRunner, tmp_path: Path
) -> None:
    """The server adds a member to its table without writing anything to the log: the
    member's client compares and refuses, naming the member."""
    puppet = new_member("sock puppet", Role.CUSTODIAN)
    with world.svc.db.write() as s:
        s.add(_member_row(puppet.card(), world.deployment, world.clock()))
    with pytest.raises(VerificationError, match=puppet.member_id):
        world.client.audit.trusted_members(world["olga"], genesis_hash_pin=genesis_pin(world))
    listed = cli.invoke(
        cli_app,
        ["member", "list", "--genesis-hash", genesis_pin(world), "-k", str(tmp_path / "olga.ks")],
    )
    assert listed.exit_code == 1
    assert puppet.member_id in listed.output
    state = world.client.audit.log_state(world["olga"], genesis_hash_pin=genesis_pin(world))
    assert puppet.member_id not in client_log.seal_recipients(state, Role.CUSTODIAN)


# --- key sets -----------------------------------------------------------------------------


def test_key_sets_follow_from_signed_ceremonies(world: World) -> None:
    """A real keygen ceremony and a reshare after a removal are justified by the replay;
    a ``ceremony.executed`` the service key wrote for a ceremony no manager proposed is
    refused, naming the entry."""
    from tests.api.test_ceremony_reshare import definition

    transcript = world.client.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["bob"]],
        definition_text=definition("bitcoin-testnet-cold"),
        code=world.code,
    )
    ks = transcript["keyset"]["id"]
    removal = world.client.members.propose_remove(world["alice"], world["bob"].member_id)
    approve(world, "cora", removal["id"])
    world.client.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["cora"]],
        definition_text=definition("reshare"),
        code=world.code,
        target_keyset=ks,
    )
    lines, checkpoint = export(world)
    state = client_log.verify_log(lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert ks in state.keysets

    with world.svc.db.write() as s:
        index = audit_log.append(
            s,
            world.svc.key,
            deployment=world.deployment,
            kind="ceremony.executed",
            actor=None,
            outcome="ok",
            code=None,
            envelope=None,
            data={"ceremony": "cer_" + "0" * 24, "keyset": "ks_forged", "transcript_hash": "0" * 64},
            time=world.clock(),
        )["index"]
    lines, checkpoint = export(world)
    err = refused_at(index, client_log.verify_log, lines, checkpoint, genesis_hash_pin=genesis_pin(world))
    assert "no manager-signed proposal" in err.message
