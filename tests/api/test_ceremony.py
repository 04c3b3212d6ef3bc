"""Key ceremonies through the HTTP API: happy paths per chain, the transcript, and every
refusal (each audited)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import bip322
import nacl.signing
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from tests.conftest import World
from tests.helpers.audit import audit_entries, refusals

from tandem.client import ceremony as cc
from tandem.core import ceremony as core
from tandem.core import keygen
from tandem.core.actions import sign_action
from tandem.core.chains import MessageProof, get_chain
from tandem.core.chains.base58 import b58decode
from tandem.core.chains.solana import public_key_from_address
from tandem.core.identity import MemberSecrets
from tandem.errors import InputError, RemoteError
from tandem.store.models import AddressRow, Ceremony, KeySet

ROOT = Path(__file__).resolve().parents[2]


def definition(name: str) -> str:
    return (ROOT / "ceremonies" / f"{name}.toml").read_text(encoding="utf-8")


def custom_definition(*, custodians: int = 1, managers: int = 0, expiry: int = 3600,
                      extra: str = "") -> str:
    return f"""
[ceremony]
name = "test-keygen"
description = "Test ceremony"
kind = "keygen"
curve = "secp256k1"
count = 1
segregation = "client:acme-pension-fund"
expiry_seconds = {expiry}
{extra}
[[ceremony.chains]]
chain = "bitcoin"
network = "testnet"

[ceremony.approvals]
custodian = {custodians}
manager = {managers}
"""


def propose(world: World, who: str = "alice", text: str | None = None) -> tuple[str, bytes]:
    contribution = keygen.make_contribution()
    view = world.client.ceremonies.propose(world[who], text or custom_definition(),
                               contribution=contribution)
    return view["id"], contribution


def approve(world: World, ceremony_id: str, who: str) -> tuple[dict[str, Any], bytes]:
    contribution = keygen.make_contribution()
    view = world.client.ceremonies.approve(world[who], ceremony_id, totp=world.code(who),
                               contribution=contribution)
    return view, contribution


def run(world: World, text: str, approvers: tuple[str, ...] = ("bob",)) -> dict[str, Any]:
    return world.client.ceremonies.run(proposer=world["alice"],
                           approvers=[world[a] for a in approvers], definition_text=text,
                           code=world.code)


def check_addresses(transcript: dict[str, Any], chain_name: str, network: str) -> None:
    chain = get_chain(chain_name)
    assert transcript["addresses"], "the ceremony made addresses"
    for a in transcript["addresses"]:
        assert a["chain"] == chain_name
        assert a["network"] == network
        public = bytes.fromhex(a["public_key"])
        assert chain.address(public, network) == a["address"]
        proof = a["birth_proof"]
        assert f"Address: {a['address']}" in proof["message"]
        assert f"Segregation: {a['segregation']}" in proof["message"]
        assert f"Transcript: sha256:{transcript['pre_execution_hash']}" in proof["message"]
        chain.verify_message(a["address"], proof["message"],
                             MessageProof(proof["format"], proof["signature"],
                                          proof.get("payload_hex")), network, public_key=public)


# --- happy paths -----------------------------------------------------------------------


def test_bitcoin_ceremony_makes_verifiable_keys_and_is_audited(world: World) -> None:
    transcript = run(world, definition("bitcoin-testnet-cold"))
    report = core.verify_transcript(transcript)
    assert report.complete, report.problems
    assert len(transcript["keys"]) == 2
    for k in transcript["keys"]:
        assert len(bytes.fromhex(k["public_key"])) == 33
        assert k["public_key"][:2] in ("02", "03")
    check_addresses(transcript, "bitcoin", "testnet")
    for a in transcript["addresses"]:
        # An independent BIP-322 implementation accepts the birth proof.
        bip322.verify_simple_encoded(a["address"], a["birth_proof"]["message"],
                                     a["birth_proof"]["signature"])
        assert a["birth_proof"]["format"] == "bip322-simple"

    ceremony_id = transcript["ceremony"]["id"]
    view = world.client.ceremonies.get(world["olga"], ceremony_id)
    assert view["status"] == "complete"
    keyset = world.client.keysets.get(world["olga"], view["keyset"])
    assert keyset["status"] == "active"
    assert {a["address"] for a in keyset["addresses"]} == {
        a["address"] for a in transcript["addresses"]}
    assert set(keyset["recipients"]["manager"]) == {world["alice"].member_id,
                                                     world["mark"].member_id}
    assert set(keyset["recipients"]["custodian"]) == {world["bob"].member_id,
                                                       world["cora"].member_id}

    thash = core.transcript_hash(transcript)
    entries = [e for e in audit_entries(world) if e["data"].get("ceremony") == ceremony_id]
    kinds = [e["kind"] for e in entries]
    assert kinds == ["ceremony.proposed", "ceremony.approved", "ceremony.reveals_open",
                     "ceremony.revealed", "ceremony.revealed", "ceremony.executed",
                     "ceremony.countersigned", "ceremony.countersigned", "ceremony.completed"]
    assert all(e["outcome"] == "ok" for e in entries)
    for e in entries:
        if e["kind"] in ("ceremony.executed", "ceremony.countersigned", "ceremony.completed"):
            assert e["data"]["transcript_hash"] == thash
    executed = next(e for e in entries if e["kind"] == "ceremony.executed")
    assert executed["data"]["pre_execution_hash"] == transcript["pre_execution_hash"]
    # The audit log holds every signed step, so each can be re-verified later.
    signed = [e["envelope"]["action"]["type"] for e in entries if e["envelope"]]
    assert signed == ["ceremony.propose", "ceremony.approve", "ceremony.reveal",
                      "ceremony.reveal", "ceremony.countersign", "ceremony.countersign"]


def test_ethereum_ceremony_addresses_and_eip191_birth_proofs(world: World) -> None:
    transcript = run(world, definition("ethereum-cold"))
    assert core.verify_transcript(transcript).complete
    check_addresses(transcript, "ethereum", "mainnet")
    for a in transcript["addresses"]:
        assert a["birth_proof"]["format"] == "eip191"
        # eth-account recovers the EIP-55 address from the personal_sign signature.
        recovered = Account.recover_message(encode_defunct(text=a["birth_proof"]["message"]),
                                            signature=a["birth_proof"]["signature"])
        assert recovered == a["address"]


def test_solana_ceremony_addresses_and_offchain_birth_proofs(world: World) -> None:
    transcript = run(world, definition("solana-cold"))
    assert core.verify_transcript(transcript).complete
    check_addresses(transcript, "solana", "mainnet")
    for a in transcript["addresses"]:
        assert len(bytes.fromhex(a["public_key"])) == 32
        assert public_key_from_address(a["address"]).hex() == a["public_key"]
        proof = a["birth_proof"]
        assert proof["format"] == "solana-offchain-v0"
        payload = bytes.fromhex(proof["payload_hex"])
        assert proof["message"].encode() in payload
        nacl.signing.VerifyKey(bytes.fromhex(a["public_key"])).verify(
            payload, b58decode(proof["signature"]))


def test_two_custodian_ceremony_counts_distinct_members(world: World) -> None:
    ceremony_id, mine = propose(world, text=custom_definition(custodians=2))
    view, bob_c = approve(world, ceremony_id, "bob")
    assert view["status"] == "proposed"
    # bob again (a fresh envelope and code) does not count twice
    with pytest.raises(RemoteError) as err:
        approve(world, ceremony_id, "bob")
    assert err.value.remote_code == "conflict"
    view, cora_c = approve(world, ceremony_id, "cora")
    assert view["status"] == "revealing"
    for who, c in (("alice", mine), ("bob", bob_c), ("cora", cora_c)):
        view = world.client.ceremonies.reveal(world[who], ceremony_id, c)
    assert view["status"] == "executed"
    for who in ("cora", "alice", "bob"):
        view = world.client.ceremonies.countersign(world[who], ceremony_id)
    assert view["status"] == "complete"
    transcript = world.client.ceremonies.transcript(world["olga"], ceremony_id)
    assert core.verify_transcript(transcript).complete
    assert transcript["addresses"][0]["segregation"] == "client:acme-pension-fund"


# --- the transcript ---------------------------------------------------------------------


def _tampered(transcript: dict[str, Any], edit: Any) -> core.TranscriptReport:
    doc = copy.deepcopy(transcript)
    edit(doc)
    return core.verify_transcript(doc)


def _flip_signature(envelope: dict[str, Any]) -> None:
    sig = bytearray(base64.b64decode(envelope["signature"]))
    sig[5] ^= 1
    envelope["signature"] = base64.b64encode(bytes(sig)).decode()


def test_verify_transcript_detects_tampering(world: World) -> None:
    transcript = run(world, definition("bitcoin-testnet-cold"))
    assert core.verify_transcript(transcript).complete
    other = get_chain("bitcoin").address(bytes.fromhex(transcript["keys"][1]["public_key"]),
                                         "testnet")

    def swap_address(d: dict[str, Any]) -> None:
        d["addresses"][0]["address"] = other

    def edit_public_key(d: dict[str, Any]) -> None:
        d["keys"][0]["public_key"] = d["keys"][1]["public_key"]

    def flip_action_signature(d: dict[str, Any]) -> None:
        _flip_signature(d["actions"][1])

    def flip_countersignature(d: dict[str, Any]) -> None:
        _flip_signature(d["countersignatures"][0])

    def edit_segregation(d: dict[str, Any]) -> None:
        d["addresses"][0]["segregation"] = "client-omnibus"

    def edit_reveal(d: dict[str, Any]) -> None:
        member = next(iter(d["reveals"]))
        d["reveals"][member] = "00" * 32

    def edit_definition(d: dict[str, Any]) -> None:
        d["definition"]["ceremony"]["count"] = 1

    def edit_birth_proof(d: dict[str, Any]) -> None:
        d["addresses"][0]["birth_proof"] = d["addresses"][1]["birth_proof"]

    def drop_approval(d: dict[str, Any]) -> None:
        d["actions"] = [a for a in d["actions"] if a["action"]["type"] != "ceremony.approve"]

    def edit_entity(d: dict[str, Any]) -> None:
        d["entity"] = "Someone Else Ltd"

    def drop_countersignature(d: dict[str, Any]) -> None:
        d["countersignatures"].pop()

    for edit, expected in (
        (swap_address, "address"),
        (edit_public_key, "public key"),
        (flip_action_signature, "signature"),
        (flip_countersignature, "signature"),
        (edit_segregation, "segregation"),
        (edit_reveal, "reveal"),
        (edit_definition, "definition"),
        (edit_birth_proof, "birth proof"),
        (drop_approval, "quorum"),
        (edit_entity, "countersignature"),
    ):
        report = _tampered(transcript, edit)
        assert not report.ok, edit.__name__
        assert any(expected in p for p in report.problems), (edit.__name__, report.problems)
        with pytest.raises(Exception, match="does not verify"):
            report.require()
    incomplete = _tampered(transcript, drop_countersignature)
    assert incomplete.ok
    assert not incomplete.complete
    assert incomplete.missing_countersignatures


def test_countersign_over_wrong_hash_is_refused(world: World) -> None:
    ceremony_id, mine = propose(world)
    _, theirs = approve(world, ceremony_id, "bob")
    world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)
    world.client.ceremonies.reveal(world["bob"], ceremony_id, theirs)
    env = world.client.sign(world["bob"], "ceremony.countersign",
                            {"ceremony": ceremony_id, "transcript_hash": "ab" * 32})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/countersign",
                             json_body={"envelope": env})
    assert err.value.remote_code == "conflict"
    # an auditor is no participant and never countersigns; the client refuses first
    with pytest.raises(InputError, match="not a participant"):
        world.client.ceremonies.countersign(world["olga"], ceremony_id)
    right_hash = world.client.ceremonies.get(world["olga"], ceremony_id)["transcript_hash"]
    for who, code in (("olga", "role_not_allowed"), ("cora", "invalid_input")):
        env = world.client.sign(world[who], "ceremony.countersign",
                                {"ceremony": ceremony_id, "transcript_hash": right_hash})
        with pytest.raises(RemoteError) as err:
            world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/countersign",
                                 json_body={"envelope": env})
        assert err.value.remote_code == code
    assert refusals(world, "conflict")


# --- refusals ---------------------------------------------------------------------------


def test_self_approval_refused_and_audited(world: World) -> None:
    ceremony_id, _ = propose(world)
    with pytest.raises(RemoteError) as err:
        approve(world, ceremony_id, "alice")
    assert err.value.remote_code == "self_approval"
    assert any(e["kind"] == "ceremony.approve.refused" for e in refusals(world, "self_approval"))
    assert world.client.ceremonies.get(world["olga"], ceremony_id)["approvals"] == []


def test_manager_approving_refused(world: World) -> None:
    ceremony_id, _ = propose(world)
    with pytest.raises(RemoteError) as err:
        approve(world, ceremony_id, "mark")
    assert err.value.remote_code == "role_not_allowed"
    assert "custodian" in err.value.message
    assert refusals(world, "role_not_allowed")


def test_auditor_proposing_and_approving_refused(world: World) -> None:
    with pytest.raises(RemoteError) as err:
        propose(world, "olga")
    assert err.value.remote_code == "role_not_allowed"
    ceremony_id, _ = propose(world)
    with pytest.raises(RemoteError) as err:
        approve(world, ceremony_id, "olga")
    assert err.value.remote_code == "role_not_allowed"
    kinds = {e["kind"] for e in refusals(world, "role_not_allowed")}
    assert {"ceremony.propose.refused", "ceremony.approve.refused"} <= kinds


def test_custodian_proposing_refused(world: World) -> None:
    with pytest.raises(RemoteError) as err:
        propose(world, "bob")
    assert err.value.remote_code == "role_not_allowed"


def test_reveal_before_approvals_refused(world: World) -> None:
    ceremony_id, mine = propose(world, text=custom_definition(custodians=2))
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)
    assert err.value.remote_code == "quorum_not_met"
    assert "custodian 0/2" in err.value.message
    approve(world, ceremony_id, "bob")
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)
    assert "custodian 1/2" in err.value.message
    assert len(refusals(world, "quorum_not_met")) == 2
    assert world.client.ceremonies.get(world["olga"], ceremony_id)["revealed"] == []


def test_wrong_reveal_refused_and_audited(world: World) -> None:
    ceremony_id, mine = propose(world)
    _, theirs = approve(world, ceremony_id, "bob")
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reveal(world["alice"], ceremony_id, keygen.make_contribution())
    assert err.value.remote_code == "commitment_mismatch"
    # bob cannot reveal alice's contribution as his own either
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reveal(world["bob"], ceremony_id, mine)
    assert err.value.remote_code == "commitment_mismatch"
    entries = refusals(world, "commitment_mismatch")
    assert [e["kind"] for e in entries] == ["ceremony.reveal.refused"] * 2
    assert world.client.ceremonies.get(world["olga"], ceremony_id)["revealed"] == []
    world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)
    assert world.client.ceremonies.reveal(world["bob"], ceremony_id, theirs)["status"] == "executed"


def test_replayed_envelope_refused(world: World) -> None:
    ceremony_id, _ = propose(world, text=custom_definition(custodians=2))
    view = world.client.ceremonies.get(world["bob"], ceremony_id)
    contribution = keygen.make_contribution()
    env = world.client.sign(world["bob"], "ceremony.approve", {
        "ceremony": ceremony_id, "digest": cc.local_digest(view),
        "commitment": keygen.commit_contribution(ceremony_id=ceremony_id,
                                                 member_id=world["bob"].member_id,
                                                 contribution=contribution)})
    path = f"/v1/ceremonies/{ceremony_id}/approve"
    world.client.request("POST", path, json_body={"envelope": env, "totp": world.code("bob")})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", path, json_body={"envelope": env, "totp": world.code("bob")})
    assert err.value.remote_code == "replayed_action"
    assert refusals(world, "replayed_action")
    assert world.client.ceremonies.get(world["olga"], ceremony_id)["approvals"] == [
        world["bob"].member_id]


def test_approval_for_other_content_refused(world: World) -> None:
    ceremony_id, _ = propose(world)
    env = world.client.sign(world["bob"], "ceremony.approve", {
        "ceremony": ceremony_id, "digest": "00" * 32, "commitment": "11" * 32})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/approve",
                             json_body={"envelope": env, "totp": world.code("bob")})
    assert err.value.remote_code == "conflict"
    # a proposal signed for one ceremony cannot be sent to another's URL
    env = world.client.sign(world["bob"], "ceremony.reject",
                            {"ceremony": ceremony_id, "reason": "x"})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", "/v1/ceremonies/cer_0000000000000000/reject",
                             json_body={"envelope": env})
    assert err.value.remote_code == "invalid_input"


def test_expired_ceremony_refused_and_marked(world: World) -> None:
    ceremony_id, _ = propose(world, text=custom_definition(expiry=600))
    world.clock.advance(601)
    with pytest.raises(RemoteError) as err:
        approve(world, ceremony_id, "bob")
    assert err.value.remote_code == "expired"
    view = world.client.ceremonies.get(world["olga"], ceremony_id)
    assert view["status"] == "expired"
    with world.svc.db.read() as session:
        row = session.get(Ceremony, ceremony_id)
        assert row is not None
        assert row.status == "expired"  # stored, not only shown
    entries = audit_entries(world)
    assert any(e["kind"] == "ceremony.expired" and e["data"]["ceremony"] == ceremony_id
               for e in entries)
    assert any(e["kind"] == "ceremony.approve.refused" and e["code"] == "expired"
               for e in entries)
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reject(world["cora"], ceremony_id, reason="too late")
    assert err.value.remote_code == "expired"


def test_impossible_quorum_definition_refused(world: World) -> None:
    with pytest.raises(RemoteError) as err:
        propose(world, text=custom_definition(custodians=3))
    assert err.value.remote_code == "invalid_definition"
    assert "ceremony.approvals.custodian" in err.value.message
    assert "the deployment has 2" in err.value.message
    with pytest.raises(RemoteError) as err:
        propose(world, text=custom_definition(managers=2))
    assert "ceremony.approvals.manager" in err.value.message
    assert len(refusals(world, "invalid_definition")) == 2
    assert world.client.ceremonies.list(world["olga"]) == []


def test_invalid_definition_names_the_field(world: World) -> None:
    bad = definition("bitcoin-cold").replace('curve = "secp256k1"', 'cuve = "secp256k1"')
    contribution = keygen.make_contribution()
    ceremony_id = cc.new_ceremony_id()
    env = world.client.sign(world["alice"], "ceremony.propose", {
        "ceremony": ceremony_id, "definition": bad,
        "commitment": keygen.commit_contribution(ceremony_id=ceremony_id,
                                                 member_id=world["alice"].member_id,
                                                 contribution=contribution)})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", "/v1/ceremonies", json_body={"envelope": env})
    assert err.value.remote_code == "invalid_definition"
    assert "ceremony.cuve" in err.value.message
    assert "did you mean 'ceremony.curve'" in err.value.message


def test_unknown_fields_refused(world: World) -> None:
    ceremony_id, _ = propose(world)
    env = world.client.sign(world["bob"], "ceremony.reject",
                            {"ceremony": ceremony_id, "reason": "no"})
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/reject",
                             json_body={"envelope": env, "extra": 1})
    assert err.value.remote_code == "unknown_field"


def test_reject_and_abort_are_recorded(world: World) -> None:
    ceremony_id, _ = propose(world)
    view = world.client.ceremonies.reject(world["bob"], ceremony_id, reason="wrong chain")
    assert view["status"] == "rejected"
    assert view["outcome"]["reason"] == "wrong chain"
    with pytest.raises(RemoteError) as err:
        approve(world, ceremony_id, "cora")
    assert err.value.remote_code == "invalid_state"

    other, _ = propose(world)
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.abort(world["mark"], other, reason="not mine")
    assert err.value.remote_code == "forbidden"
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reject(world["mark"], other, reason="managers do not reject")
    assert err.value.remote_code == "role_not_allowed"
    assert world.client.ceremonies.abort(world["alice"], other, reason="typo")["status"] == (
        "aborted")
    entries = audit_entries(world)
    rejected = [e for e in entries if e["kind"] == "ceremony.rejected"]
    assert rejected[0]["data"] == {"ceremony": ceremony_id, "reason": "wrong chain"}
    assert any(e["kind"] == "ceremony.aborted" and e["data"]["ceremony"] == other
               for e in entries)
    assert {c["status"] for c in world.client.ceremonies.list(world["olga"])} == {
        "rejected", "aborted"}


def test_executed_ceremony_cannot_be_stopped(world: World) -> None:
    ceremony_id, mine = propose(world)
    _, theirs = approve(world, ceremony_id, "bob")
    world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)
    world.client.ceremonies.reveal(world["bob"], ceremony_id, theirs)
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.abort(world["alice"], ceremony_id)
    assert err.value.remote_code == "invalid_state"
    with pytest.raises(RemoteError) as err:
        world.client.ceremonies.reveal(world["bob"], ceremony_id, theirs)
    assert err.value.remote_code == "invalid_state"


def test_failure_during_execution_leaves_no_keyset(world: World,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything execution writes is in the last reveal's transaction: a failure after the
    key-set rows were written rolls all of it back (SIGKILL at the same fault points is
    covered by tests/api/test_ceremony_crash.py)."""
    from tandem.errors import AuditWriteError
    from tandem.services import ceremonies

    ceremony_id, mine = propose(world)
    _, theirs = approve(world, ceremony_id, "bob")
    world.client.ceremonies.reveal(world["alice"], ceremony_id, mine)

    def fail(name: str) -> None:
        if name == "ceremony.after_keyset_row":
            raise AuditWriteError("simulated failure")

    monkeypatch.setattr(ceremonies, "fault_point", fail)
    with pytest.raises(RemoteError):
        world.client.ceremonies.reveal(world["bob"], ceremony_id, theirs)
    with world.svc.db.read() as session:
        from sqlmodel import select

        assert session.exec(select(KeySet)).all() == []
        assert session.exec(select(AddressRow)).all() == []
        row = session.get(Ceremony, ceremony_id)
        assert row is not None
        assert row.status == "revealing"
        assert row.transcript is None
    monkeypatch.undo()
    assert world.client.ceremonies.reveal(world["bob"], ceremony_id, theirs)["status"] == "executed"


def test_signed_action_for_another_ceremony_type_refused(world: World) -> None:
    """Cross-context replay: a membership approval is not a ceremony approval."""
    ceremony_id, _ = propose(world)
    member: MemberSecrets = world["bob"]
    env = sign_action(member, type="proposal.approve", deployment=world.deployment,
                      body={"ceremony": ceremony_id, "digest": "00" * 32},
                      issued_at=world.clock()).to_json()
    with pytest.raises(RemoteError) as err:
        world.client.request("POST", f"/v1/ceremonies/{ceremony_id}/approve",
                             json_body={"envelope": env, "totp": world.code("bob")})
    assert err.value.remote_code == "wrong_action_type"
