"""THREATS 41: a key set served by the server that differs from the one the member
countersigned is refused by the member's client.

A real ceremony runs; each participant's client verifies the transcript, countersigns
it and pins the key set (key ids and public keys, share commitments, DEK check,
generation, transcript hash). Then the server (a row edited in its database) or a proxy
on the path serves a different key set under the same id: one of its own making, fully
consistent, with shares sealed to the real members, so the old share-commitment check
alone would let it through. The client refuses before resealing anything.

A member who did not countersign (joined later, or uses a fresh machine) has no pin of
the key set and is refused too, until it imports the transcript it verified offline
with ``tandem pin keyset TRANSCRIPT --expect HASH``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from tests.adversarial.proxy import InterceptingProxy
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.withdrawals import BTC_DEST, setup, utxos
from typer.testing import CliRunner

from tandem.cli.main import app as cli_app
from tandem.client import Client
from tandem.client.members import sign_genesis
from tandem.client.pin import PinnedDeployment, pin_path
from tandem.core import ceremony as ceremony_core
from tandem.core import split
from tandem.core.chains.secp256k1 import is_valid_private_key
from tandem.core.keygen import public_key_for
from tandem.errors import KeysetNotPinnedError, KeysetPinError
from tandem.store.models import Deployment, KeySet, Member

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "t41 passphrase"


def _ceremony(world: World) -> dict[str, Any]:
    setup(world)  # the destination is allow-listed and the policy delay has passed
    return world.client.ceremonies.run(
        proposer=world["alice"],
        approvers=[world["bob"]],
        definition_text=(ROOT / "ceremonies" / "bitcoin-testnet-cold.toml").read_text(),
        code=world.code,
    )


def _intent(transcript: dict[str, Any]) -> dict[str, Any]:
    (address, *_rest) = [a for a in transcript["addresses"] if a["chain"] == "bitcoin"]
    return {
        "wallet": transcript["keyset"]["id"],
        "chain": "bitcoin",
        "network": "testnet",
        "asset": "BTC",
        "amount": "50000",
        "from": address["address"],
        "destination": BTC_DEST,
        "bitcoin": {"utxos": utxos(address["address"]), "fee_rate": 5},
    }


def _impostor(
    world: World, keyset_id: str, count: int, *, real_keys: list[dict[str, Any]] | None = None
) -> split.SealedKeyset:
    """The server's own key set under the same id: keys it made, a DEK it knows, shares
    sealed to the real members (so every member's box opens and every commitment holds).
    ``real_keys``: show the real key ids and public keys over the server's ciphertexts
    (what passes the approver's review of the signing key)."""
    keys = []
    for i in range(count):
        priv = os.urandom(32)
        while not is_valid_private_key(priv):
            priv = os.urandom(32)
        keys.append((f"{keyset_id}-k{i}", public_key_for("secp256k1", priv), priv))
    with world.svc.db.read() as s:
        members = s.exec(select(Member).where(Member.status == "active")).all()
    sealed = split.seal_keyset(
        keyset_id=keyset_id,
        private_keys=keys,
        manager_x25519_publics={m.id: bytes.fromhex(m.seal_public) for m in members if m.role == "manager"},
        custodian_x25519_publics={
            m.id: bytes.fromhex(m.seal_public) for m in members if m.role == "custodian"
        },
    )
    if real_keys is None:
        return sealed
    shown = tuple(
        dataclasses.replace(k, key_id=r["key_id"], public_key=bytes.fromhex(r["public_key"]))
        for k, r in zip(sealed.keys, real_keys, strict=True)
    )
    return dataclasses.replace(sealed, keys=shown)


def _swap_row(world: World, keyset_id: str, sealed: split.SealedKeyset) -> None:
    with world.svc.db.write() as s:
        row = s.get(KeySet, keyset_id)
        assert row is not None
        row.sealed = sealed.to_json()
        s.add(row)


def _kinds(world: World) -> list[str]:
    return [e["kind"] for e in audit_entries(world)]


def test_countersigning_pins_the_key_set(world: World) -> None:
    transcript = _ceremony(world)
    pinned = world.client.pin.keysets[transcript["keyset"]["id"]]  # type: ignore[union-attr]
    assert pinned.transcript_hash == ceremony_core.transcript_hash(transcript)
    assert pinned.commitments == transcript["keyset"]["commitments"]
    assert pinned.keys == {k["key_id"]: k["public_key"] for k in transcript["keys"]}


def test_server_serving_another_key_set_refused_at_create(world: World) -> None:
    transcript = _ceremony(world)
    keyset_id = transcript["keyset"]["id"]
    _swap_row(world, keyset_id, _impostor(world, keyset_id, len(transcript["keys"])))
    proxy = InterceptingProxy(world.client.http)  # records only: the server itself lies
    before, log_before = world.client.withdrawals.list(world["olga"]), _kinds(world)
    with pytest.raises(KeysetPinError) as refused:
        proxy.client(world).withdrawals.create(world["alice"], _intent(transcript))
    assert refused.value.code == "keyset_mismatch"
    assert "nothing was sealed" in refused.value.message
    assert proxy.posted("/v1/withdrawals") == []
    assert proxy.sealed_boxes_sent() == 0
    assert world.client.withdrawals.list(world["olga"]) == before
    assert not [k for k in _kinds(world)[len(log_before):] if k.startswith("withdrawal.created")]


def test_server_serving_another_key_set_refused_at_approve(world: World) -> None:
    transcript = _ceremony(world)
    keyset_id = transcript["keyset"]["id"]
    created = world.client.withdrawals.create(world["alice"], _intent(transcript))
    real = transcript["keys"]
    _swap_row(world, keyset_id, _impostor(world, keyset_id, len(real), real_keys=real))
    proxy = InterceptingProxy(world.client.http)
    with pytest.raises(KeysetPinError) as refused:
        proxy.client(world).withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    assert refused.value.code == "keyset_mismatch"
    assert proxy.posted("/approve") == []
    assert proxy.sealed_boxes_sent() == 0
    after = world.client.withdrawals.get(world["olga"], created["id"])
    assert after["status"] == created["status"]
    assert not [e for e in audit_entries(world) if e["kind"].startswith("withdrawal.approv")]


def test_proxy_serving_another_key_set_refused_for_proofs(world: World) -> None:
    transcript = _ceremony(world)
    keyset_id = transcript["keyset"]["id"]
    impostor = _impostor(world, keyset_id, len(transcript["keys"]))

    def rewrite(doc: dict[str, Any]) -> dict[str, Any]:
        return impostor.to_dict() if doc.get("keyset") == keyset_id else doc

    proxy = InterceptingProxy(world.client.http, rewrite_keyset=rewrite)
    view = world.client.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    with pytest.raises(KeysetPinError):
        proxy.client(world).proofs.contribute(world["alice"], view["id"])
    assert proxy.posted("/contributions") == []
    assert proxy.sealed_boxes_sent() == 0


def test_a_second_transcript_of_the_same_generation_is_refused(world: World) -> None:
    transcript = _ceremony(world)
    forged = json.loads(json.dumps(transcript))
    forged["keyset"]["dek_check"] = "0" * 64
    pin = world.client.pin
    assert pin is not None
    with pytest.raises(KeysetPinError):
        pin.add_transcript(forged)
    assert pin.keysets[transcript["keyset"]["id"]].dek_check == transcript["keyset"]["dek_check"]


def test_member_who_did_not_countersign_imports_the_verified_transcript(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transcript = _ceremony(world)
    keystore = tmp_path / "mark.keystore"
    keystore.write_bytes(world["mark"].to_keystore(PASSPHRASE, log2_n=14))
    with world.svc.db.read() as s:
        dep = s.exec(select(Deployment)).one()
    genesis = json.loads(dep.genesis_doc)
    genesis_file = tmp_path / "genesis.json"
    signatures = dict(sign_genesis(m, genesis) for m in world.members.values())
    genesis_file.write_text(json.dumps({"genesis": genesis, "signatures": signatures}))
    runner = CliRunner()

    def pin_cli(*args: str) -> Any:
        return runner.invoke(cli_app, ["pin", *args, "-k", str(keystore)])

    wrong = pin_cli("genesis", str(genesis_file), "--expect", "0" * 64)
    assert wrong.exit_code == 1
    assert "refused" in wrong.output
    assert "hashes to" in wrong.output
    assert not pin_path(keystore).exists()
    ok = pin_cli("genesis", str(genesis_file), "--expect", dep.genesis_hash)
    assert ok.exit_code == 0, ok.output

    # mark's own machine: its pin names the deployment but no key set yet.
    mark = Client(http=world.client.http, clock=world.clock, pin=PinnedDeployment.load(pin_path(keystore)))
    with pytest.raises(KeysetNotPinnedError) as refused:
        mark.withdrawals.create(world["mark"], _intent(transcript))
    assert refused.value.code == "keyset_not_pinned"

    transcript_file = tmp_path / "transcript.json"
    transcript_file.write_text(json.dumps(transcript))
    report = ceremony_core.verify_transcript(transcript)
    bad = pin_cli("keyset", str(transcript_file), "--expect", "1" * 64)
    assert bad.exit_code == 1
    good = pin_cli("keyset", str(transcript_file), "--expect", str(report.transcript_hash))
    assert good.exit_code == 0, good.output
    mark.pin = PinnedDeployment.load(pin_path(keystore))
    created = mark.withdrawals.create(world["mark"], _intent(transcript))
    assert created["status"] == "pending"
