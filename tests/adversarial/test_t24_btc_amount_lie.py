"""THREATS 24: the segwit v0 fee attack - a Bitcoin amount lie split over two withdrawals
that spend the same outpoints.

A BIP-143 signature commits to its own input's amount only. If the amounts come from
the intent, a manager asks for two withdrawals over the same two outputs of 1 BTC each,
the first lying low about the second input and the second lying low about the first:
each shows the custodian a tiny fee, the two releases build byte-identical unsigned
transactions, and witness 0 of one plus witness 1 of the other is a valid transaction
that gives almost a whole bitcoin to the miner. The first test shows that this is real
(the old inputs, signed by our own chain code, verified by python-bitcoinlib); the rest
mount it against Tandem, which reads every amount from the previous transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from scripts.harness import funding_tx, utxo
from sqlmodel import select
from tests.conftest import World
from tests.helpers.audit import audit_entries, refusals
from tests.helpers.withdrawal_raw import create_unchecked, withdrawal_state
from tests.helpers.withdrawals import btc_intent, setup, verify_bitcoin

from tandem.client import withdrawal as cw
from tandem.core import withdrawal as wcore
from tandem.core.chains import bitcoin as btc
from tandem.core.chains.secp256k1 import public_key
from tandem.errors import UnprovenInputError, VerificationError
from tandem.store.models import Approval

BTC = 100_000_000
KEY = bytes.fromhex("5a" * 32)
DEST = btc.p2wpkh_address(public_key(bytes.fromhex("6b" * 32)), "testnet")


def test_without_proven_amounts_the_two_releases_combine_into_a_huge_fee() -> None:
    """The attack, in Bitcoin itself: two signings over swapped lies combine."""
    pub = public_key(KEY)
    own = btc.p2wpkh_script(btc.hash160(pub))
    deposit = funding_tx(btc.p2wpkh_address(pub, "testnet"), [BTC, BTC])
    truth = [btc.Prevout(deposit.txid, i, BTC, own) for i in (0, 1)]
    small = 100_000
    # Withdrawal 1 says input 1 holds 0.001 BTC; withdrawal 2 says input 0 does.
    lie_1 = [truth[0], btc.Prevout(deposit.txid, 1, small, own)]
    lie_2 = [btc.Prevout(deposit.txid, 0, small, own), truth[1]]
    args: dict[str, Any] = {"from_pubkey": pub, "destination": DEST, "amount": 50_000, "fee_rate": 5}
    one = btc.build_p2wpkh_spend(prevouts=lie_1, network="testnet", **args)
    two = btc.build_p2wpkh_spend(prevouts=lie_2, network="testnet", **args)
    assert one.raw == two.raw  # the same unsigned transaction, twice approved
    shown_fee = one.fee
    signed_1, _ = btc.sign_p2wpkh_spend(one.raw, lie_1, KEY)
    signed_2, _ = btc.sign_p2wpkh_spend(two.raw, lie_2, KEY)
    w1 = btc.parse_transaction(signed_1).witnesses
    w2 = btc.parse_transaction(signed_2).witnesses
    combined = btc.parse_transaction(signed_1)
    combined_raw = replace(combined, witnesses=(w1[0], w2[1])).serialize()
    # Valid under the *true* amounts, checked by python-bitcoinlib and by our own verifier.
    verify_bitcoin(combined_raw.hex(), wcore.prevouts_to_json(truth), pub)
    for i in (0, 1):
        btc.verify_p2wpkh_input(combined_raw, i, truth[i])
    real_fee = 2 * BTC - sum(o.amount for o in combined.outputs)
    assert real_fee > 1000 * shown_fee
    assert real_fee > BTC - 2 * small


def lying_intent(s: Any) -> tuple[dict[str, Any], btc.Transaction]:
    """Two real outputs of 1 BTC; the second's previous transaction is swapped for one
    that says 0.001 BTC (the only way left to state a false amount)."""
    deposit = funding_tx(s.btc_from, [BTC, BTC])
    low = btc.TxOutput(100_000, deposit.outputs[1].script_pubkey)
    forged = btc.Transaction(deposit.version, deposit.inputs, (deposit.outputs[0], low), 0)
    spend = [utxo(deposit, 0), {"txid": deposit.txid, "vout": 1, "prev_tx": forged.serialize().hex()}]
    intent = {**btc_intent(s, amount=50_000, spend=spend), "from": s.btc_from}
    return intent, deposit


def test_an_amount_not_backed_by_its_previous_transaction_is_refused_at_create(world: World) -> None:
    s = setup(world)
    intent, deposit = lying_intent(s)
    # The manager's own client refuses before anything is signed ...
    with pytest.raises(UnprovenInputError, match=f"given for {deposit.txid}:1 hashes to"):
        world.client.withdrawals.create(world["alice"], intent)
    # ... and a client that does not check meets the same refusal at the server.
    before = withdrawal_state(world)
    response = create_unchecked(world, intent)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unproven_input"
    assert deposit.txid in response.json()["message"]
    assert withdrawal_state(world) == before
    entries = refusals(world, "unproven_input")
    assert [e["kind"] for e in entries] == ["withdrawal.create.refused"]
    assert entries[0]["actor"] == world["alice"].member_id


def test_an_amount_stated_beside_the_outpoint_is_not_accepted(world: World) -> None:
    """The old intent form (an amount field) is no longer a thing the server reads."""
    s = setup(world)
    deposit = funding_tx(s.btc_from, [BTC])
    spend = [{"txid": deposit.txid, "vout": 0, "amount": str(BTC // 1000)}]
    intent = {**btc_intent(s, spend=spend), "from": s.btc_from}
    before = withdrawal_state(world)
    response = create_unchecked(world, intent)
    assert (response.status_code, response.json()["code"]) == (422, "unknown_field")
    assert withdrawal_state(world) == before
    assert any(e["kind"] == "withdrawal.create.refused" for e in refusals(world, "unknown_field"))


def test_the_second_half_of_the_attack_cannot_even_be_requested(world: World) -> None:
    """With honest previous transactions the two requests would have no lie to swap; and
    the second over the same outputs is refused anyway (THREATS 25)."""
    s = setup(world)
    deposit = funding_tx(s.btc_from, [BTC, BTC])
    spend = [utxo(deposit, 0), utxo(deposit, 1)]
    first = world.client.withdrawals.create(world["alice"], btc_intent(s, spend=spend))
    assert [p["amount"] for p in first["prevouts"]] == [str(BTC), str(BTC)]
    assert int(first["fee"]) < 10_000  # the fee shown is the fee the transaction pays
    before = withdrawal_state(world)
    response = create_unchecked(world, {**btc_intent(s, spend=spend), "from": s.btc_from})
    assert (response.status_code, response.json()["code"]) == (409, "outpoint_reserved")
    assert withdrawal_state(world) == before


def test_the_approving_client_refuses_a_view_whose_amounts_differ_from_the_prev_tx(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile server serves a consistent lie: prevouts with a smaller amount and a
    transaction digest recomputed over them. The client reads the amount from the
    previous transaction in the signed intent and refuses to approve."""
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    view = world.client.withdrawals.get(world["bob"], created["id"])
    lie = [dict(p) for p in view["prevouts"]]
    lie[1]["amount"] = str(int(lie[1]["amount"]) // 1000)
    forged = {
        **view,
        "prevouts": lie,
        "tx_digest": wcore.tx_digest(
            chain="bitcoin",
            network="testnet",
            public_key=view["public_key"],
            unsigned_tx=view["unsigned_tx"],
            prevouts=lie,
        ),
    }
    with pytest.raises(VerificationError, match="its previous transaction holds"):
        cw.review(forged)
    monkeypatch.setattr(cw.Withdrawals, "get", lambda self, member, wid: forged)
    with pytest.raises(VerificationError, match=r"prevout 1 .* its previous transaction holds"):
        world.client.withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    with world.svc.db.read() as session:
        assert session.exec(select(Approval).where(Approval.subject == created["id"])).all() == []
    assert not any(e["kind"] == "withdrawal.approved" for e in audit_entries(world))
    # The honest view still reviews, with the amounts of the previous transactions.
    proven = [
        btc.prevout_from_tx(bytes.fromhex(u["prev_tx"]), u["txid"], u["vout"])
        for u in view["intent"]["bitcoin"]["utxos"]
    ]
    assert cw.review(view).decoded["inputs"] == [
        {"txid": p.txid, "vout": p.vout, "amount": str(p.amount), "sequence": 0xFFFFFFFD} for p in proven
    ]
