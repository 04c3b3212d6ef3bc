"""The member's pin file and the server's claim gate, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.client.members import draft_genesis
from tandem.client.pin import PinnedDeployment, PinnedKeyset, pin_path
from tandem.core.identity import MemberSecrets
from tandem.core.membership import genesis_hash
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.errors import (
    ClaimTokenError,
    ClaimTokenRequiredError,
    KeysetNotPinnedError,
    KeysetPinError,
    NotPinnedError,
    PinError,
)
from tandem.services.claim import ClaimGate


def _genesis() -> tuple[dict[str, object], ServiceKey]:
    key = ServiceKey.generate()
    people = [MemberSecrets.generate(name="alice", role=Role.MANAGER),
              MemberSecrets.generate(name="bob", role=Role.CUSTODIAN)]
    doc = draft_genesis(
        deployment="dep_unit",
        entity="E",
        created_at=1,
        service=key.public_json(),
        cards=[p.card() for p in people],
    )
    return doc, key


def _keyset(generation: int, dek_check: str = "d" * 64) -> PinnedKeyset:
    return PinnedKeyset(
        keyset="ks_1",
        generation=generation,
        transcript_hash=str(generation) * 64,
        commitments={"manager": "a" * 64, "custodian": "b" * 64},
        dek_check=dek_check,
        keys={"ks_1-k0": "02" + "11" * 32},
    )


def test_pin_lives_beside_the_keystore() -> None:
    assert pin_path(Path("/x/alice.keystore")) == Path("/x/alice.pin.json")


def test_pin_round_trips_and_refuses_another_hash(tmp_path: Path) -> None:
    doc, key = _genesis()
    with pytest.raises(PinError, match="hashes to"):
        PinnedDeployment.from_genesis(doc, expect_hash="0" * 64)
    pin = PinnedDeployment.from_genesis(doc, expect_hash=genesis_hash(doc), path=tmp_path / "a.pin.json")
    pin.add_keyset(_keyset(1))
    loaded = PinnedDeployment.load(tmp_path / "a.pin.json")
    assert loaded.to_json() == pin.to_json()
    assert loaded.sign_public == key.sign_public
    assert json.loads((tmp_path / "a.pin.json").read_text())["format"] == "tandem-pin/1"
    with pytest.raises(NotPinnedError):
        PinnedDeployment.load(tmp_path / "missing.pin.json")


@pytest.mark.parametrize("field", ["deployment", "genesis_hash", "sign_public", "seal_public"])
def test_a_served_deployment_unlike_the_pin_is_refused(field: str) -> None:
    doc, key = _genesis()
    pin = PinnedDeployment.from_genesis(doc)
    info = {"deployment": "dep_unit", "genesis_hash": genesis_hash(doc), "service": key.public_json()}
    pin.check_served(info)
    if field in ("sign_public", "seal_public"):
        info["service"] = {**key.public_json(), field: ServiceKey.generate().public_json()[field]}
    else:
        info[field] = "other"
    with pytest.raises(PinError, match="not the deployment you pinned"):
        pin.check_served(info)


def test_key_set_pins_refuse_rollback_and_a_second_transcript() -> None:
    doc, _key = _genesis()
    pin = PinnedDeployment.from_genesis(doc)
    with pytest.raises(KeysetNotPinnedError):
        pin.keyset("ks_1")
    pin.add_keyset(_keyset(2))
    with pytest.raises(KeysetPinError, match="older"):
        pin.add_keyset(_keyset(1))
    with pytest.raises(KeysetPinError, match="different transcript"):
        pin.add_keyset(_keyset(2, dek_check="e" * 64))
    pin.add_keyset(_keyset(3))
    assert pin.keyset("ks_1").generation == 3


def test_claim_gate(tmp_path: Path) -> None:
    with pytest.raises(ClaimTokenError, match="tandem init"):
        ClaimGate().check("anything")
    gate, token = ClaimGate.issue(tmp_path / "claim.json")
    assert token not in (tmp_path / "claim.json").read_text()
    with pytest.raises(ClaimTokenRequiredError):
        gate.check(None)
    for wrong in (token[:-1], token + "x", "x" * 100_000):
        with pytest.raises(ClaimTokenError):
            gate.check(wrong)
    gate.check(token)
    gate.note_refusal("claim_token_invalid", 5)
    gate.note_refusal("something else", 6)
    assert ClaimGate.load(tmp_path / "claim.json").refusals() == {
        "count": 2, "codes": {"claim_token_invalid": 2}, "first_at": 5, "last_at": 6
    }
    gate.consume(7)
    again = ClaimGate.load(tmp_path / "claim.json")
    assert not again.issued
    with pytest.raises(ClaimTokenError):
        again.check(token)
