"""Solana withdrawals through the real service, approving client and offline signer: SOL
and SPL token transfers built by Tandem, decoded by the approving client, released once,
and the signed bytes checked by ``solders`` (the Solana SDK's own decoder and signature
check), not by Tandem's code."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from tests.api.test_withdrawal_offline import SIGNER
from tests.conftest import World
from tests.helpers.keysets import make_keyset
from tests.helpers.withdrawals import allow, approve, pass_delay

from tandem.client import withdrawal as cw
from tandem.core import withdrawal as wcore
from tandem.core.chains import solana as sol
from tandem.core.chains import solana_tx as stx
from tandem.core.chains.base58 import b58decode
from tandem.errors import Error, RemoteError

solders = pytest.importorskip("solders")
from solders.transaction import Transaction  # noqa: E402

DEST = sol.address_from_public_key(sol.public_key_from_seed(hashlib.sha256(b"sol cold vault").digest()))
STRANGER = sol.address_from_public_key(sol.public_key_from_seed(hashlib.sha256(b"stranger").digest()))
NONCE = sol.address_from_public_key(sol.public_key_from_seed(hashlib.sha256(b"nonce").digest()))
MINT = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"  # USDC on devnet
BLOCKHASH = "EkSnNWid2cvwEVnVx9aBqawnmiCNiDgp3gUdkDPTKN1N"


def _setup(world: World) -> tuple[str, str]:
    ks = make_keyset(world, curve="ed25519", chains=(("solana", "devnet"),))
    allow(world, chain="solana", network="devnet", address=DEST, label="sol cold vault", asset="SOL")
    allow(world, chain="solana", network="devnet", address=DEST, label="usdc cold vault", asset=MINT)
    pass_delay(world)
    (address,) = [a["address"] for a in ks.addresses if a["chain"] == "solana"]
    return ks.id, address


def _intent(wallet: str, *, amount: int, asset: str = "SOL", **solana: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"recent_blockhash": BLOCKHASH, **solana}
    if asset != "SOL":
        params.setdefault("decimals", 6)
        params.setdefault("create_destination_account", True)
    return {
        "wallet": wallet,
        "chain": "solana",
        "network": "devnet",
        "asset": asset,
        "amount": str(amount),
        "destination": DEST,
        "solana": params,
    }


def _released(world: World, intent: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    created = world.client.withdrawals.create(world["alice"], intent)
    approve(world, created["id"])
    shown = world.client.withdrawals.get(world["olga"], created["id"])
    out = world.client.withdrawals.release(world["bob"], created["id"])
    return shown, out


def test_sol_transfer_released_once_and_verified_by_solders(world: World) -> None:
    wallet, source = _setup(world)
    shown, out = _released(world, _intent(wallet, amount=1_250_000_000, nonce_account=NONCE))
    assert shown["decoded"]["to"] == DEST
    assert shown["decoded"]["asset"] == "SOL"
    assert shown["decoded"]["nonce_account"] == NONCE
    assert shown["fee"] == "5000"
    tx = Transaction.from_bytes(bytes.fromhex(out["signed_tx"]))
    tx.verify()
    assert str(tx.message.account_keys[0]) == source
    assert str(tx.signatures[0]) == out["txid"]
    transfer = tx.message.instructions[-1]
    assert bytes(transfer.data) == (2).to_bytes(4, "little") + (1_250_000_000).to_bytes(8, "little")
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.release(world["bob"], shown["id"])
    assert err.value.remote_code == "already_released"


def test_spl_transfer_creates_the_destination_account_and_verifies(world: World) -> None:
    wallet, source = _setup(world)
    shown, out = _released(world, _intent(wallet, amount=2_500_000, asset=MINT))
    decoded = shown["decoded"]
    assert (decoded["token"], decoded["decimals"], decoded["to"]) == (MINT, 6, DEST)
    assert decoded["destination_token_account"] == stx.associated_token_address(DEST, MINT)
    assert int(shown["fee"]) == 5000 + stx.TOKEN_ACCOUNT_RENT
    tx = Transaction.from_bytes(bytes.fromhex(out["signed_tx"]))
    tx.verify()
    keys = [str(k) for k in tx.message.account_keys]
    create, send = tx.message.instructions
    assert keys[create.program_id_index] == stx.ASSOCIATED_TOKEN_PROGRAM
    assert keys[send.program_id_index] == stx.TOKEN_PROGRAM
    assert bytes(send.data) == bytes([12]) + (2_500_000).to_bytes(8, "little") + bytes([6])
    assert keys[send.accounts[0]] == stx.associated_token_address(source, MINT)


def test_mint_without_an_address_book_entry_is_refused(world: World) -> None:
    wallet, _ = _setup(world)
    other_mint = "Es9vMFrzaCERmJfrF4H2FYD4KCoNkY11McCe8BenwNYB"
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.create(world["alice"], _intent(wallet, amount=5, asset=other_mint))
    assert err.value.remote_code == "disallowed_contract_call"


def test_destination_outside_the_address_book_is_refused(world: World) -> None:
    wallet, _ = _setup(world)
    intent = _intent(wallet, amount=5)
    intent["destination"] = STRANGER
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.create(world["alice"], intent)
    assert err.value.remote_code == "destination_not_allowed"


def test_offline_signer_signs_a_solana_release(world: World) -> None:
    wallet, source = _setup(world)
    created = world.client.withdrawals.create(world["alice"], _intent(wallet, amount=7_000))
    approve(world, created["id"])
    bundle = world.client.withdrawals.export_bundle(world["alice"], created["id"], SIGNER.card())
    bundle = cw.add_share(bundle, world["cora"], now=world.clock())
    bundle = json.loads(json.dumps(bundle))
    result = cw.offline_sign(bundle, SIGNER, now=world.clock())
    tx = Transaction.from_bytes(bytes.fromhex(result["signed_tx"]))
    tx.verify()
    assert str(tx.message.account_keys[0]) == source
    assert world.client.withdrawals.import_result(world["bob"], result)["status"] == "released"


def test_a_priority_fee_is_decoded_reviewed_and_capped_by_the_policy(world: World) -> None:
    """A compute-unit price and limit (by hand here; from the chain in the books tests)
    are in the bytes solders decodes, in the approving client's own decoded view and fee
    review, counted in the worst-case fee, and refused above the policy's cap."""
    wallet, _source = _setup(world)
    priced = _intent(wallet, amount=10_000, compute_unit_limit=1_500, compute_unit_price=2_000_000)
    shown, out = _released(world, priced)
    assert shown["fee"] == str(5000 + 3000)  # 1,500 units at 2 lamports each
    checked = cw.review(shown)  # decoded on the approver's machine from the raw bytes
    d = checked.decoded
    assert (d["compute_unit_limit"], d["compute_unit_price"], d["priority_fee"]) == (1_500, 2_000_000, "3000")
    assert (checked.fee["fee"], checked.fee["priority_rate"]) == ("8000", "2000000")
    assert checked.fee["priority_unit"] == "micro-lamports/compute unit"
    tx = Transaction.from_bytes(bytes.fromhex(out["signed_tx"]))
    tx.verify()
    keys = tx.message.account_keys
    budget = [
        bytes(ix.data)
        for ix in tx.message.instructions
        if str(keys[ix.program_id_index]) == stx.COMPUTE_BUDGET_PROGRAM
    ]
    assert budget == [
        bytes([2]) + (1_500).to_bytes(4, "little"),
        bytes([3]) + (2_000_000).to_bytes(8, "little"),
    ]

    # The chain's cap on the compute-unit price (100 lamports per unit) refuses more.
    too_much = _intent(wallet, amount=10_000, compute_unit_limit=1_500, compute_unit_price=100_000_001)
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.create(world["alice"], too_much)
    assert err.value.remote_code == "fee_exceeded"
    assert "priority fee" in str(err.value)
    # So does a worst-case fee above the chain's 0.01 SOL, priority fee included.
    costly = _intent(wallet, amount=10_000, compute_unit_limit=200_000, compute_unit_price=50_000_000)
    with pytest.raises(RemoteError) as err:
        world.client.withdrawals.create(world["alice"], costly)
    assert err.value.remote_code == "fee_exceeded"
    # A price without its limit is refused as input.
    with pytest.raises(Exception, match="together"):
        world.client.withdrawals.create(world["alice"], _intent(wallet, amount=10_000, compute_unit_price=5))


def test_a_token_2022_transfer_is_built_in_that_program_decoded_and_signed_offline(world: World) -> None:
    """The intent names Token-2022; the bytes run in that program, with its accounts and
    its account rent, and the offline signer's own decoding agrees."""
    wallet, source = _setup(world)
    t22 = stx.TOKEN_2022_PROGRAM
    intent = _intent(wallet, amount=3_000, asset=MINT, token_program=t22)
    created = world.client.withdrawals.create(world["alice"], intent)
    decoded = created["decoded"]
    assert decoded["token_program"] == t22
    assert decoded["destination_token_account"] == stx.associated_token_address(DEST, MINT, t22)
    assert int(created["fee"]) == 5000 + stx.TOKEN_2022_ACCOUNT_RENT
    approve(world, created["id"])
    bundle = world.client.withdrawals.export_bundle(world["alice"], created["id"], SIGNER.card())
    bundle = cw.add_share(bundle, world["cora"], now=world.clock())
    result = cw.offline_sign(json.loads(json.dumps(bundle)), SIGNER, now=world.clock())
    tx = Transaction.from_bytes(bytes.fromhex(result["signed_tx"]))
    tx.verify()
    keys = [str(k) for k in tx.message.account_keys]
    create, send = tx.message.instructions
    assert keys[send.program_id_index] == t22
    assert keys[create.accounts[5]] == t22
    assert keys[send.accounts[0]] == stx.associated_token_address(source, MINT, t22)


def test_the_token_program_has_one_spelling_and_must_match_the_bytes(world: World) -> None:
    wallet, source = _setup(world)
    spelled = _intent(wallet, amount=3, asset=MINT, token_program=stx.TOKEN_PROGRAM)
    with pytest.raises(Error, match="token_program is named only for a Token-2022 mint"):
        world.client.withdrawals.create(world["alice"], spelled)
    # The same transfer in the classic program is not what a Token-2022 intent says.
    doc = {**_intent(wallet, amount=3, asset=MINT, token_program=stx.TOKEN_2022_PROGRAM), "from": source}
    intent = wcore.parse_intent(doc)
    classic = stx.build_transfer(
        payer=source,
        destination=DEST,
        amount=3,
        recent_blockhash=BLOCKHASH,
        mint=MINT,
        decimals=6,
        create_destination_account=True,
    )
    with pytest.raises(Error, match="token program is TokenkegQ"):
        wcore.check_transaction(intent, public_key=b58decode(source), unsigned=classic, prevouts=[])
