"""The pure ceremony core: state machine, key-set generation and offline transcript
verification, without a server or database."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tandem.core import ceremony as core
from tandem.core import keygen, keyset_export, split
from tandem.core.actions import sign_action
from tandem.core.ceremony_def import parse_definition
from tandem.core.chains import get_chain
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import (
    CommitmentMismatchError,
    ConflictError,
    InputError,
    InvalidStateError,
    VerificationError,
)

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000
DEP = "dep_unit"
ENTITY = "Example Fund SICAV"
CID = "cer_00112233445566778899aabb"


def definition(name: str) -> str:
    return (ROOT / "ceremonies" / f"{name}.toml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def people() -> dict[str, MemberSecrets]:
    return {
        "alice": MemberSecrets.generate(name="alice", role=Role.MANAGER),
        "bob": MemberSecrets.generate(name="bob", role=Role.CUSTODIAN),
        "cora": MemberSecrets.generate(name="cora", role=Role.CUSTODIAN),
    }


def _signed(member: MemberSecrets, type_: str, body: dict[str, Any], at: int) -> dict[str, Any]:
    return sign_action(member, type=type_, deployment=DEP, body=body, issued_at=at).to_json()


def build_transcript(people: dict[str, MemberSecrets], text: str,
                     approvers: tuple[str, ...] = ("bob",)) -> dict[str, Any]:
    """A ceremony run entirely in memory, as the service would run it."""
    defn = parse_definition(text)
    alice = people["alice"]
    header = {"id": CID, "kind": defn.kind, "proposer": alice.member_id, "created_at": T0,
              "expires_at": T0 + defn.expiry_seconds, "target_keyset": None}
    contributions = {m: keygen.make_contribution() for m in ("alice", *approvers)}
    commitments = {m: keygen.commit_contribution(ceremony_id=CID, member_id=people[m].member_id,
                                                 contribution=c)
                   for m, c in contributions.items()}
    state = core.CeremonyState()
    state.add_participant(alice.member_id, commitment=commitments["alice"], envelope=_signed(
        alice, core.PROPOSE, {"ceremony": CID, "definition": text,
                              "commitment": commitments["alice"]}, T0))
    digest = core.ceremony_digest(ceremony_id=CID, kind=defn.kind,
                                  definition_hash=defn.definition_hash(),
                                  proposer=alice.member_id, target_keyset=None,
                                  expires_at=header["expires_at"],
                                  commitment=commitments["alice"])
    for i, name in enumerate(approvers):
        state.add_approval(people[name].member_id, commitment=commitments[name],
                           envelope=_signed(people[name], core.APPROVE,
                                            {"ceremony": CID, "digest": digest,
                                             "commitment": commitments[name]}, T0 + 10 + i))
    for name, contribution in contributions.items():
        member = people[name]
        state.add_reveal(CID, member.member_id, contribution.hex(), _signed(
            member, core.REVEAL, {"ceremony": CID, "contribution": contribution.hex()}, T0 + 60))
    assert state.all_revealed
    participants = [{"id": people[n].member_id, "name": n, "role": people[n].role.value,
                     "sign_public": people[n].sign_public.hex()} for n in ("alice", *approvers)]
    pre = core.build_pre_execution(deployment=DEP, entity=ENTITY, ceremony=header,
                                   definition=defn, participants=participants, state=state)
    generated = core.generate_keyset(
        definition=defn, ceremony_id=CID, keyset_id="ks_unit", entity=ENTITY,
        pre_execution_hash=core.pre_execution_hash(pre), os_entropy=bytearray(b"\x07" * 32),
        contributions={people[n].member_id: c for n, c in contributions.items()},
        manager_publics={alice.member_id: alice.seal_public},
        custodian_publics={people[n].member_id: people[n].seal_public for n in approvers},
    )
    doc = core.finish_transcript(pre, executed_at=T0 + 61, keyset={"id": "ks_unit"},
                                 keys=generated.keys, addresses=generated.addresses)
    thash = core.transcript_hash(doc)
    for name in ("alice", *approvers):
        doc["countersignatures"].append(_signed(people[name], core.COUNTERSIGN,
                                                {"ceremony": CID, "transcript_hash": thash},
                                                T0 + 120))
    return doc


# --- state machine -----------------------------------------------------------------------


@pytest.mark.parametrize(("status", "step", "allowed"), [
    ("proposed", "approve", True), ("revealing", "approve", False),
    ("proposed", "reveal", False), ("revealing", "reveal", True),
    ("revealing", "countersign", False), ("executed", "countersign", True),
    ("complete", "countersign", False), ("proposed", "reject", True),
    ("revealing", "abort", True), ("executed", "abort", False), ("executed", "reject", False),
    ("rejected", "approve", False), ("expired", "reveal", False),
])
def test_transitions(status: str, step: str, allowed: bool) -> None:
    if allowed:
        core.require_status(status, step)
    else:
        with pytest.raises(InvalidStateError, match=f"cannot {step}: the ceremony is {status}"):
            core.require_status(status, step)


def test_only_open_ceremonies_expire() -> None:
    assert core.is_expired("proposed", 100, 100)
    assert core.is_expired("revealing", 100, 101)
    assert not core.is_expired("proposed", 100, 99)
    assert not core.is_expired("executed", 100, 1000)
    assert not core.is_expired("complete", 100, 1000)


def test_state_refuses_duplicates_and_wrong_reveals(people: dict[str, MemberSecrets]) -> None:
    state = core.CeremonyState()
    alice, bob = people["alice"].member_id, people["bob"].member_id
    c = keygen.make_contribution()
    commitment = keygen.commit_contribution(ceremony_id=CID, member_id=alice, contribution=c)
    state.add_participant(alice, commitment=commitment, envelope={})
    with pytest.raises(ConflictError, match="once per member"):
        state.add_approval(alice, commitment=None, envelope={})
    with pytest.raises(ConflictError, match="already used"):
        state.add_approval(bob, commitment=commitment, envelope={})
    with pytest.raises(InputError, match="64 lowercase hex"):
        state.add_approval(bob, commitment="XYZ", envelope={})
    with pytest.raises(CommitmentMismatchError, match="does not match its commitment"):
        state.add_reveal(CID, alice, keygen.make_contribution().hex(), {})
    with pytest.raises(InputError, match="committed"):
        state.add_reveal(CID, bob, c.hex(), {})
    with pytest.raises(InputError, match="lowercase hex"):
        state.add_reveal(CID, alice, "zz", {})
    state.add_reveal(CID, alice, c.hex(), {})
    with pytest.raises(ConflictError, match="already revealed"):
        state.add_reveal(CID, alice, c.hex(), {})
    assert core.CeremonyState.from_json(state.to_json()) == state


def test_birth_message_names_entity_address_segregation_and_transcript() -> None:
    message = core.birth_message(entity=ENTITY, chain="bitcoin", network="mainnet",
                                 address="bc1qexample", segregation="client:acme",
                                 ceremony_id=CID, transcript_hash="ab" * 32)
    assert message == (
        "Tandem key ceremony: proof of control at key generation\n"
        "Entity: Example Fund SICAV\n"
        "Address: bc1qexample\n"
        "Chain: bitcoin mainnet\n"
        "Segregation: client:acme\n"
        f"Ceremony: {CID}\n"
        f"Transcript: sha256:{'ab' * 32}"
    )


def test_generate_keyset_wipes_entropy_and_seals(people: dict[str, MemberSecrets]) -> None:
    defn = parse_definition(definition("client-segregated"))
    entropy = bytearray(b"\x09" * 32)
    generated = core.generate_keyset(
        definition=defn, ceremony_id=CID, keyset_id="ks_wipe", entity=ENTITY,
        pre_execution_hash="cd" * 32, os_entropy=entropy,
        contributions={"m1": b"\x01" * 32, "m2": b"\x02" * 32},
        manager_publics={"m1": people["alice"].seal_public},
        custodian_publics={"m2": people["bob"].seal_public},
    )
    assert entropy == bytearray(32)
    assert [(a["chain"], a["network"]) for a in generated.addresses] == [
        ("bitcoin", "mainnet"), ("ethereum", "mainnet")]
    assert generated.sealed.members("custodian") == {"m2"}
    assert generated.keys[0]["public_key"] == generated.sealed.keys[0].public_key.hex()


# --- transcript verification -------------------------------------------------------------


@pytest.mark.parametrize("name", ["client-segregated", "solana-cold", "bitcoin-cold"])
def test_offline_transcript_verifies(people: dict[str, MemberSecrets], name: str) -> None:
    doc = build_transcript(people, definition(name))
    report = core.verify_transcript(doc)
    assert report.complete, report.problems
    report.require()
    assert report.transcript_hash == core.transcript_hash(doc)
    assert set(report.countersigned_by) == {people["alice"].member_id, people["bob"].member_id}


def test_two_approvers_and_quorum(people: dict[str, MemberSecrets]) -> None:
    text = definition("bitcoin-cold").replace("custodian = 1", "custodian = 2")
    doc = build_transcript(people, text, approvers=("bob", "cora"))
    assert core.verify_transcript(doc).complete
    short = build_transcript(people, text, approvers=("bob",))
    report = core.verify_transcript(short)
    assert any("custodian 1/2" in p for p in report.problems)


def _problems(doc: dict[str, Any], edit: Any) -> tuple[str, ...]:
    copy_ = copy.deepcopy(doc)
    edit(copy_)
    return core.verify_transcript(copy_).problems


def test_tampering_is_named(people: dict[str, MemberSecrets]) -> None:
    doc = build_transcript(people, definition("bitcoin-cold"))
    bob = people["bob"]

    def proposer_as_custodian(d: dict[str, Any]) -> None:
        d["participants"][0]["role"] = "custodian"

    def other_key_for_bob(d: dict[str, Any]) -> None:
        d["participants"][1]["sign_public"] = people["cora"].sign_public.hex()

    def approval_for_other_content(d: dict[str, Any]) -> None:
        d["actions"][1] = _signed(bob, core.APPROVE, {"ceremony": CID, "digest": "00" * 32,
                                                      "commitment": d["commitments"][bob.member_id]},
                                  T0 + 10)

    def pre_hash(d: dict[str, Any]) -> None:
        d["pre_execution_hash"] = "00" * 32

    def action_after_expiry(d: dict[str, Any]) -> None:
        late = d["ceremony"]["expires_at"] + 1
        d["actions"][1] = _signed(bob, core.APPROVE, d["actions"][1]["action"]["body"], late)

    def other_deployment(d: dict[str, Any]) -> None:
        d["deployment"] = "dep_other"

    def birth_message_swapped(d: dict[str, Any]) -> None:
        d["addresses"][0]["birth_proof"]["message"] += " "

    def key_dropped(d: dict[str, Any]) -> None:
        d["keys"].pop()

    def wrong_network(d: dict[str, Any]) -> None:
        d["addresses"][0]["network"] = "testnet"

    def countersigned_other_hash(d: dict[str, Any]) -> None:
        d["countersignatures"][1] = _signed(bob, core.COUNTERSIGN,
                                            {"ceremony": CID, "transcript_hash": "11" * 32},
                                            T0 + 120)

    for edit, expected in (
        (proposer_as_custodian, "proposed by its proposer, a manager"),
        (other_key_for_bob, "does not verify"),
        (approval_for_other_content, "different ceremony content"),
        (pre_hash, "pre_execution_hash"),
        (action_after_expiry, "after the ceremony expired"),
        (other_deployment, "another deployment"),
        (birth_message_swapped, "birth proof message"),
        (key_dropped, "keys: the definition makes 2"),
        (wrong_network, "addresses"),
        (countersigned_other_hash, "different transcript hash"),
    ):
        problems = _problems(doc, edit)
        assert any(expected in p for p in problems), (edit.__name__, problems)


def test_garbage_is_reported_not_raised() -> None:
    for value in (None, [], {}, {"format": "x"}, "text"):
        report = core.verify_transcript(value)
        assert not report.ok
        with pytest.raises(VerificationError):
            report.require()


# --- export ------------------------------------------------------------------------------


def test_check_export(people: dict[str, MemberSecrets]) -> None:
    doc = build_transcript(people, definition("ethereum-cold"))
    defn = parse_definition(definition("ethereum-cold"))
    generated = core.generate_keyset(
        definition=defn, ceremony_id=CID, keyset_id="ks_exp", entity=ENTITY,
        pre_execution_hash=doc["pre_execution_hash"], os_entropy=bytearray(b"\x05" * 32),
        contributions={"m1": b"\x01" * 32},
        manager_publics={"m1": people["alice"].seal_public},
        custodian_publics={"m2": people["bob"].seal_public},
    )
    export = {
        "format": keyset_export.EXPORT_FORMAT, "deployment": DEP, "entity": ENTITY,
        "keyset": {"id": "ks_exp", "ceremony": CID, "curve": "secp256k1", "segregation": "own",
                   "status": "active", "generation": 1, "created_at": T0},
        "sealed": generated.sealed.to_dict(), "keys": generated.keys,
        "addresses": generated.addresses, "transcript_hash": None, "exported_at": T0,
    }
    assert isinstance(keyset_export.check_export(export), split.SealedKeyset)
    bad = copy.deepcopy(export)
    bad["keys"][0]["public_key"] = people["alice"].sign_public.hex() + "02"
    with pytest.raises(VerificationError, match="keys differ"):
        keyset_export.check_export(bad)
    bad = copy.deepcopy(export)
    other_key = keygen.public_key_for("secp256k1", b"\x11" * 32)
    other = get_chain("ethereum").address(other_key, "mainnet")
    bad["addresses"][0]["address"] = other
    with pytest.raises(VerificationError, match="not the ethereum address"):
        keyset_export.check_export(bad)
