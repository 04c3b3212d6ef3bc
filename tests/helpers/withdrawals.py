"""Shared set-up for the withdrawal and policy tests (plain functions, no fixtures):
an address book made through the real dual-controlled path, a key set, intents, and
independent verification of released transactions with python-bitcoinlib and
eth-account."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bitcoin.core import CTransaction, b2lx
from bitcoin.core.key import CPubKey
from bitcoin.core.script import SIGHASH_ALL, SIGVERSION_WITNESS_V0, CScript, SignatureHash
from eth_account import Account
from scripts.harness import utxos_paying
from tests.conftest import World
from tests.helpers.keysets import make_keyset

if TYPE_CHECKING:
    from tests.helpers.keysets import TestKeyset

from tandem.core.chains import bitcoin as btc
from tandem.core.chains import ethereum as eth
from tandem.core.chains.secp256k1 import public_key as secp_public

DELAY = 86400  # the default policy's change_delay_seconds
# Sepolia USDC (Circle's test token); any contract address would do.
TOKEN = "0x1c7D4B196Cb0C7B01d743Fbc6116a902379C7238"


def _random_key() -> bytes:
    return (int.from_bytes(os.urandom(32), "big") % (2**255) + 1).to_bytes(32, "big")


BTC_DEST = btc.p2wpkh_address(secp_public(_random_key()), "testnet")
ETH_DEST = eth.address_from_private_key(_random_key())
STRANGER_BTC = btc.p2wpkh_address(secp_public(_random_key()), "testnet")
STRANGER_ETH = eth.address_from_private_key(_random_key())


@dataclass
class Setup:
    keyset: TestKeyset
    btc_from: str
    eth_from: str
    entries: dict[str, str]


def fresh_sessions(world: World) -> None:
    world.client._sessions.clear()


def approve_proposal(world: World, proposal_id: str, who: str = "bob") -> dict[str, Any]:
    return world.client.members.approve(world[who], proposal_id, totp=world.code(who))


def pass_delay(world: World, seconds: int = DELAY) -> None:
    world.clock.advance(seconds + 1)
    fresh_sessions(world)


def allow(
    world: World, *, chain: str, network: str, address: str, label: str, asset: str | None = None
) -> dict[str, Any]:
    prop = world.client.policy.propose_address(
        world["alice"], chain=chain, network=network, address=address, label=label, asset=asset
    )
    return approve_proposal(world, prop["id"])


def setup(world: World, *, policy: dict[str, Any] | None = None) -> Setup:
    """A key set, three vetted destinations (BTC, ETH, and the same ETH address for the
    token), optionally a new policy; then the change delay passes."""
    ks = make_keyset(world)
    allow(world, chain="bitcoin", network="testnet", address=BTC_DEST, label="cold vault btc")
    allow(world, chain="ethereum", network="sepolia", address=ETH_DEST, label="cold vault eth", asset="ETH")
    allow(world, chain="ethereum", network="sepolia", address=ETH_DEST, label="cold vault usdc", asset=TOKEN)
    if policy is not None:
        prop = world.client.policy.propose(world["alice"], policy)
        approve_proposal(world, prop["id"])
    pass_delay(world)
    addr = {(a["chain"], a["network"]): a["address"] for a in ks.addresses}
    book = {e["label"]: e["id"] for e in world.client.policy.address_book(world["olga"])}
    return Setup(
        keyset=ks, btc_from=addr[("bitcoin", "testnet")], eth_from=addr[("ethereum", "sepolia")], entries=book
    )


def policy_doc(version: int, rules: list[dict[str, Any]], delay: int = 0) -> dict[str, Any]:
    return {"version": version, "change_delay_seconds": delay, "rules": rules}


def rule(name: str, *, custodians: int = 1, managers: int = 0, **extra: Any) -> dict[str, Any]:
    approvals = {"custodian": custodians}
    if managers:
        approvals["manager"] = managers
    return {
        "name": name,
        "match": extra.pop("match", {}),
        "approvals": approvals,
        "request_ttl_seconds": extra.pop("request_ttl_seconds", 86400),
        "approval_ttl_seconds": extra.pop("approval_ttl_seconds", 3600),
        **extra,
    }


def utxos(address: str, n: int = 2, amount: int = 100_000) -> list[dict[str, Any]]:
    """``n`` fresh outputs paid to ``address``, each with the transaction that proves it."""
    return utxos_paying(address, [amount + i for i in range(n)])


def btc_intent(
    s: Setup,
    *,
    amount: int = 50_000,
    destination: str = BTC_DEST,
    fee_rate: int = 5,
    spend: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "wallet": s.keyset.id,
        "chain": "bitcoin",
        "network": "testnet",
        "asset": "BTC",
        "amount": str(amount),
        "destination": destination,
        "bitcoin": {"utxos": spend or utxos(s.btc_from), "fee_rate": fee_rate},
    }


def eth_intent(
    s: Setup, *, amount: int = 10**15, asset: str = "ETH", destination: str = ETH_DEST, nonce: int = 7
) -> dict[str, Any]:
    return {
        "wallet": s.keyset.id,
        "chain": "ethereum",
        "network": "sepolia",
        "asset": asset,
        "amount": str(amount),
        "destination": destination,
        "ethereum": {
            "chain_id": 11155111,
            "nonce": nonce,
            "max_fee_per_gas": "30000000000",
            "max_priority_fee_per_gas": "1000000000",
            "gas_limit": 21000 if asset == "ETH" else 65000,
        },
    }


def approve(world: World, wid: str, who: str = "bob") -> dict[str, Any]:
    return world.client.withdrawals.approve(world[who], wid, totp=world.code(who))


def create_approved(
    world: World, intent: dict[str, Any], *, by: tuple[str, ...] = ("bob",)
) -> dict[str, Any]:
    created = world.client.withdrawals.create(world["alice"], intent)
    for who in by:
        approve(world, created["id"], who)
    return world.client.withdrawals.get(world["olga"], created["id"])


def verify_bitcoin(raw_hex: str, prevouts: list[dict[str, Any]], from_pubkey: bytes) -> CTransaction:
    """Every input verifies under python-bitcoinlib's own BIP-143 sighash."""
    tx = CTransaction.deserialize(bytes.fromhex(raw_hex))
    script_code = CScript(b"\x76\xa9\x14" + btc.hash160(from_pubkey) + b"\x88\xac")
    assert len(tx.vin) == len(prevouts)
    for i, prev in enumerate(prevouts):
        assert b2lx(tx.vin[i].prevout.hash) == prev["txid"]
        assert prev["script_pubkey"] == b"\x00\x14".hex() + btc.hash160(from_pubkey).hex()
        sig, pub = tx.wit.vtxinwit[i].scriptWitness.stack
        assert pub == from_pubkey
        assert sig[-1] == SIGHASH_ALL
        sighash = SignatureHash(
            script_code, tx, i, SIGHASH_ALL, amount=int(prev["amount"]), sigversion=SIGVERSION_WITNESS_V0
        )
        assert CPubKey(pub).verify(sighash, sig[:-1])
    return tx


def verify_ethereum(raw_hex: str, from_address: str) -> dict[str, Any]:
    """The sender eth-account recovers, and the fields it decodes."""
    raw = bytes.fromhex(raw_hex)
    assert Account.recover_transaction(raw) == from_address
    decoded = eth.decode_transaction(raw)
    return {
        "to": decoded.to,
        "value": decoded.value,
        "data": decoded.data,
        "chain_id": decoded.chain_id,
        "nonce": decoded.nonce,
    }
