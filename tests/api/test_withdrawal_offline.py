"""The offline signer: export a bundle, both sides add shares, sign with no server and no
database, import. And the signer refusing bundles that do not verify."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from tests.conftest import World
from tests.helpers.withdrawals import (
    btc_intent,
    create_approved,
    eth_intent,
    setup,
    verify_bitcoin,
    verify_ethereum,
)

from tandem.client import withdrawal as cw
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import (
    AuditVerificationError,
    BadSignatureError,
    DecryptionError,
    InputError,
    QuorumNotMetError,
    RemoteError,
    VerificationError,
)

SIGNER = MemberSecrets.generate(name="cold signer", role=Role.CUSTODIAN)


def _edit_line(bundle: dict[str, Any], index: int) -> None:
    entry = json.loads(bundle["audit"]["lines"][index])
    entry["time"] += 1
    bundle["audit"]["lines"][index] = canonical(entry).decode()


def full_bundle(world: World, wid: str, signer: MemberSecrets = SIGNER) -> dict[str, Any]:
    bundle = world.client.withdrawals.export_bundle(world["alice"], wid, signer.card())
    return cw.add_share(bundle, world["cora"], now=world.clock())


def test_offline_signed_bitcoin_release_imports_once(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    bundle = full_bundle(world, w["id"])
    assert set(bundle["shares"]) == {"manager", "custodian"}
    # The bundle travels as a file: nothing in it may depend on Python objects.
    bundle = json.loads(json.dumps(bundle))
    genesis = world.client.deployment()["genesis_hash"]
    result = cw.offline_sign(bundle, SIGNER, now=world.clock(), genesis_hash=genesis)
    verify_bitcoin(result["signed_tx"], w["prevouts"], s.keyset.keys[0][1])

    released = world.client.withdrawals.import_result(world["bob"], result)
    assert released["status"] == "released"
    assert released["txid"] == result["txid"]
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.import_result(world["bob"], result)
    assert err.value.remote_code == "already_released"
    lines, _ = world.client.audit.export(world["olga"])
    done = [json.loads(x) for x in lines if '"withdrawal.released"' in x]
    assert len(done) == 1
    assert done[0]["data"]["offline"] is True


def test_offline_signed_ethereum_release(world: World) -> None:
    s = setup(world)
    w = create_approved(world, eth_intent(s))
    result = cw.offline_sign(full_bundle(world, w["id"]), SIGNER, now=world.clock())
    verify_ethereum(result["signed_tx"], s.eth_from)
    assert world.client.withdrawals.import_result(world["mark"], result)["status"] == "released"


def test_import_of_a_transaction_signed_by_another_key_refused(world: World) -> None:
    s = setup(world)
    w = create_approved(world, eth_intent(s))
    from tandem.core.chains import ethereum as eth

    forged = eth.sign_eip1559(bytes.fromhex(w["unsigned_tx"]), b"\x01" * 32)[0]
    result = {"format": "tandem-offline-result/1", "withdrawal": w["id"], "signed_tx": forged.hex()}
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.import_result(world["bob"], result)
    assert err.value.remote_code == "verification_failed"
    assert world.client.withdrawals.get(world["olga"], w["id"])["status"] == "approved"


def test_pinned_genesis_hash_must_match(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    with pytest.raises(VerificationError, match="pinned"):
        cw.offline_sign(full_bundle(world, w["id"]), SIGNER, now=world.clock(), genesis_hash="00" * 32)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(
            lambda b: b["withdrawal"]["intent"].update(amount="49999"), VerificationError, id="intent"
        ),
        pytest.param(
            lambda b: b["withdrawal"].update(unsigned_tx=b["withdrawal"]["unsigned_tx"][:-2] + "01"),
            VerificationError,
            id="unsigned-tx",
        ),
        pytest.param(lambda b: b["actions"].update(approvals=[]), QuorumNotMetError, id="no-approvals"),
        pytest.param(lambda b: _edit_line(b, 3), AuditVerificationError, id="audit-line"),
        pytest.param(lambda b: b["genesis"].update(entity="Other Fund"), BadSignatureError, id="genesis"),
        pytest.param(
            lambda b: b["policy"]["rules"][0].update(allowlist_only=False), VerificationError, id="policy"
        ),
        pytest.param(lambda b: b["shares"].pop("custodian"), InputError, id="missing-share"),
    ],
)
def test_offline_signer_refuses_a_bundle_that_does_not_verify(world: World, mutate: Any, error: type) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    bundle = copy.deepcopy(full_bundle(world, w["id"]))
    mutate(bundle)
    with pytest.raises(error):
        cw.offline_sign(bundle, SIGNER, now=world.clock())


def test_offline_signer_needs_its_own_key_and_fresh_approvals(world: World) -> None:
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    bundle = full_bundle(world, w["id"])
    other = MemberSecrets.generate(name="someone else", role=Role.CUSTODIAN)
    with pytest.raises(VerificationError, match="not the one"):
        cw.offline_sign(bundle, other, now=world.clock())
    with pytest.raises(QuorumNotMetError):
        cw.offline_sign(bundle, SIGNER, now=world.clock() + 3600)
    # A share resealed for another withdrawal does not open for this one.
    w2 = create_approved(world, btc_intent(s))
    bundle2 = full_bundle(world, w2["id"])
    bundle2["shares"]["custodian"] = bundle["shares"]["custodian"]
    with pytest.raises(DecryptionError, match="different operation"):
        cw.offline_sign(bundle2, SIGNER, now=world.clock())
