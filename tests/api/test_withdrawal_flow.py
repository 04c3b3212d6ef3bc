"""Approved withdrawals end to end, checked by libraries that are not ours."""

from __future__ import annotations

import pytest
from bitcoin.core import b2lx
from scripts.harness import funding_tx, utxo
from tests.conftest import World
from tests.helpers.withdrawals import (
    BTC_DEST,
    ETH_DEST,
    TOKEN,
    approve,
    btc_intent,
    create_approved,
    eth_intent,
    setup,
    verify_bitcoin,
    verify_ethereum,
)

from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth


def audit_kinds(world: World) -> list[str]:
    lines, _ = world.client.audit.export(world["olga"])
    import json

    return [json.loads(line)["kind"] for line in lines]


def test_bitcoin_release_verifies_with_python_bitcoinlib(world: World) -> None:
    s = setup(world)
    first = funding_tx(s.btc_from, [60_000], witness=True)
    second = funding_tx(s.btc_from, [5_000, 1_000, 2_000, 70_000])
    # The first as a node serves it, witness included: the client normalises it away.
    spend = [{"txid": first.txid, "vout": 0, "prev_tx": first.serialize().hex()}, utxo(second, 3)]
    created = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000, spend=spend))
    assert created["status"] == "pending"
    assert created["intent"]["bitcoin"]["utxos"][0]["prev_tx"] == first.serialize(include_witness=False).hex()
    assert [p["amount"] for p in created["prevouts"]] == ["60000", "70000"]
    assert created["decoded"]["to"] == BTC_DEST
    assert created["decoded"]["amount"] == "50000"
    assert len(created["fingerprint"]) == 19
    assert created["fingerprint"] == "-".join(created["intent_hash"][i : i + 4] for i in range(0, 16, 4))

    approved = approve(world, created["id"])
    assert approved["status"] == "approved"
    out = world.client.withdrawals.release(world["cora"], created["id"])
    assert out["status"] == "released"

    pub = s.keyset.keys[0][1]
    tx = verify_bitcoin(out["signed_tx"], created["prevouts"], pub)
    assert b2lx(tx.GetTxid()) == out["txid"]
    # Payment to the destination, change back to the very address the coins came from.
    paid = {btc.script_to_address(bytes(o.scriptPubKey), "testnet"): o.nValue for o in tx.vout}
    assert paid[BTC_DEST] == 50_000
    assert paid[s.btc_from] == int(created["change"])
    assert sum(paid.values()) + int(created["fee"]) == 130_000
    kinds = audit_kinds(world)
    assert kinds.count("withdrawal.released") == 1


def test_ethereum_release_recovers_to_the_wallet_with_eth_account(world: World) -> None:
    s = setup(world)
    w = create_approved(world, eth_intent(s, amount=12345678901234567))
    out = world.client.withdrawals.release(world["bob"], w["id"])
    fields = verify_ethereum(out["signed_tx"], s.eth_from)
    assert fields == {
        "to": ETH_DEST,
        "value": 12345678901234567,
        "data": b"",
        "chain_id": 11155111,
        "nonce": 7,
    }
    assert out["txid"] == eth.transaction_hash(bytes.fromhex(out["signed_tx"]))


def test_erc20_release_is_a_transfer_call_on_the_allowed_token(world: World) -> None:
    s = setup(world)
    w = create_approved(world, eth_intent(s, amount=2_500_000_000, asset=TOKEN))
    assert w["decoded"]["token"] == TOKEN
    assert w["decoded"]["to"] == ETH_DEST
    out = world.client.withdrawals.release(world["bob"], w["id"])
    fields = verify_ethereum(out["signed_tx"], s.eth_from)
    assert fields["to"] == TOKEN
    assert fields["value"] == 0
    data = fields["data"]
    assert data[:4] == bytes.fromhex("a9059cbb")
    assert data[16:36] == bytes.fromhex(ETH_DEST[2:])
    assert int.from_bytes(data[36:68], "big") == 2_500_000_000


def test_demo_helper_runs_the_whole_story(world: World) -> None:
    s = setup(world)
    intent = btc_intent(s)
    intent.pop("wallet")
    result = world.client.withdrawals.run(
        manager=world["alice"],
        custodians=[world["bob"]],
        keyset_id=s.keyset.id,
        intent=intent,
        code=lambda m: world.code(m.name),
    )
    assert result["from_address"] == s.btc_from
    assert {p["script_pubkey"] for p in result["prevouts"]} == {
        btc.address_to_script(s.btc_from, "testnet").hex()
    }
    verify_bitcoin(result["raw_tx"], result["prevouts"], s.keyset.keys[0][1])


def test_two_custodians_above_an_amount_counted_per_member(world: World) -> None:
    from tests.helpers.withdrawals import policy_doc, rule

    doc = policy_doc(2, [rule("large", custodians=2, match={"min_amount": "40000"}), rule("default")])
    s = setup(world, policy=doc)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000))
    assert created["decision"]["rule"] == "large"
    assert approve(world, created["id"], "bob")["status"] == "pending"
    from tandem.errors import RemoteError

    with pytest.raises(RemoteError) as err:
        approve(world, created["id"], "bob")
    assert err.value.remote_code == "conflict"
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.release(world["bob"], created["id"])
    assert err.value.remote_code == "invalid_state"
    assert approve(world, created["id"], "cora")["status"] == "approved"
    out = world.client.withdrawals.release(world["bob"], created["id"])
    verify_bitcoin(out["signed_tx"], created["prevouts"], s.keyset.keys[0][1])


def test_manager_approval_counts_only_when_the_rule_asks_for_one(world: World) -> None:
    from tests.helpers.withdrawals import policy_doc, rule

    s = setup(world, policy=policy_doc(2, [rule("dual", custodians=1, managers=1)]))
    created = world.client.withdrawals.create(world["alice"], eth_intent(s))
    assert approve(world, created["id"], "bob")["status"] == "pending"
    assert approve(world, created["id"], "mark")["status"] == "approved"
    out = world.client.withdrawals.release(world["mark"], created["id"])
    verify_ethereum(out["signed_tx"], s.eth_from)


def test_reject_and_cancel_close_a_request(world: World) -> None:
    s = setup(world)
    a = world.client.withdrawals.create(world["alice"], btc_intent(s))
    b = world.client.withdrawals.create(world["alice"], eth_intent(s))
    assert (
        world.client.withdrawals.reject(world["bob"], a["id"], reason="unknown purpose")["status"]
        == "rejected"
    )
    assert world.client.withdrawals.cancel(world["mark"], b["id"])["status"] == "cancelled"
    from tandem.errors import RemoteError

    with pytest.raises(RemoteError) as err:
        approve(world, a["id"])
    assert err.value.remote_code == "invalid_state"
    kinds = audit_kinds(world)
    assert "withdrawal.rejected" in kinds
    assert "withdrawal.cancelled" in kinds


def test_after_a_restart_both_sides_give_their_shares_again(world: World) -> None:
    from tandem.errors import RemoteError
    from tandem.services.keyuse import OperationKeys

    s = setup(world)
    w = create_approved(world, btc_intent(s))
    world.svc.keys.operations = OperationKeys()  # what a restart does to the signer's memory
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.release(world["bob"], w["id"])
    assert err.value.remote_code == "operation_key_lost"
    renewed = world.client.withdrawals.renew_operation(world["alice"], w["id"])
    assert renewed["operation"]["statement"]["operation"] != w["operation"]["statement"]["operation"]
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.release(world["bob"], w["id"])
    assert err.value.remote_code == "invalid_input"  # no shares for the new operation yet
    world.client.withdrawals.contribute_share(world["mark"], w["id"])
    world.client.withdrawals.contribute_share(world["cora"], w["id"], totp=world.code("cora"))
    out = world.client.withdrawals.release(world["bob"], w["id"])
    verify_bitcoin(out["signed_tx"], w["prevouts"], s.keyset.keys[0][1])


def test_decoded_view_is_stored_at_create_and_rows_without_it_decode_when_read(world: World) -> None:
    from tandem.core.canonical import loads_strict
    from tandem.store.models import Withdrawal

    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s, amount=50_000))
    with world.svc.db.read() as session:
        row = session.get(Withdrawal, created["id"])
        assert row is not None
        assert row.decoded is not None
        assert loads_strict(row.decoded) == created["decoded"]
    shown = world.client.withdrawals.get(world["alice"], created["id"])
    assert shown["decoded"] == created["decoded"]
    # A row written before the column existed has none: its view is decoded on the fly.
    with world.svc.db.write() as session:
        row = session.get(Withdrawal, created["id"])
        assert row is not None
        row.decoded = None
        session.add(row)
    again = world.client.withdrawals.get(world["alice"], created["id"])
    assert again["decoded"] == created["decoded"]
    assert again["fee_review"] == shown["fee_review"]
