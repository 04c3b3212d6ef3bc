"""THREATS 27: one key for bitcoin mainnet and testnet.

BIP-143 commits to no network and the address prefix is only an encoding, so with one
key on both a "testnet" withdrawal signs a transaction that spends real coins. Ceremony
validation refuses a definition that gives one chain two networks, naming the field;
a key set stored that way anyway is found by the start-up check, which seals signing
and names it.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from tests.conftest import World
from tests.helpers.audit import post, refusals
from tests.helpers.keysets import make_keyset

from tandem.api import create_app
from tandem.client import ceremony as cc
from tandem.core import ceremony as core
from tandem.core import keygen
from tandem.core.canonical import canonical
from tandem.core.ceremony_def import network_mixes, parse_definition
from tandem.errors import InvalidDefinitionError
from tandem.services import Tandem
from tandem.store.models import AddressRow, Ceremony

MIXED = """
[ceremony]
name = "btc-both-networks"
description = "One key for real and test coins"
kind = "keygen"
curve = "secp256k1"
count = 1
segregation = "own"
expiry_seconds = 3600

[[ceremony.chains]]
chain = "bitcoin"
network = "mainnet"

[[ceremony.chains]]
chain = "ethereum"
network = "mainnet"
chain_id = 1

[[ceremony.chains]]
chain = "bitcoin"
network = "testnet"

[ceremony.approvals]
custodian = 1
"""


def test_a_definition_mixing_networks_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidDefinitionError) as err:
        parse_definition(MIXED, source="mixed.toml")
    message = err.value.message
    assert "ceremony.chains[2].network" in message
    assert "one key serves one network" in message
    assert "ceremony.chains[0] already gives bitcoin mainnet" in message
    # Different chains on one key stay allowed (a secp256k1 key for BTC and ETH).
    one_each = MIXED.replace('[[ceremony.chains]]\nchain = "bitcoin"\nnetwork = "testnet"\n\n', "")
    assert [(c.chain, c.network) for c in parse_definition(one_each).chains] == [
        ("bitcoin", "mainnet"),
        ("ethereum", "mainnet"),
    ]


def test_the_server_refuses_to_propose_it(world: World) -> None:
    with pytest.raises(InvalidDefinitionError):
        world.client.ceremonies.propose(world["alice"], MIXED, contribution=keygen.make_contribution())
    ceremony_id = cc.new_ceremony_id()
    body = {
        "ceremony": ceremony_id,
        "definition": MIXED,
        "commitment": keygen.commit_contribution(
            ceremony_id=ceremony_id,
            member_id=world["alice"].member_id,
            contribution=keygen.make_contribution(),
        ),
    }
    env = world.client.sign(world["alice"], core.PROPOSE, body)
    response = post(world, "/v1/ceremonies", {"envelope": env})
    assert (response.status_code, response.json()["code"]) == (422, "invalid_definition")
    assert "ceremony.chains[2].network" in response.json()["message"]
    with world.svc.db.read() as session:
        assert session.exec(select(Ceremony)).all() == []
    entries = refusals(world, "invalid_definition")
    assert [e["kind"] for e in entries] == ["ceremony.propose.refused"]


def restart(world: World) -> Tandem:
    svc = Tandem(world.svc.db, world.svc.key, clock=world.clock)
    svc.audit.startup_check()
    return svc


def test_a_stored_key_set_with_both_networks_is_found_at_start_up(world: World) -> None:
    good = make_keyset(world)
    assert restart(world).runner.sealed_reason is None
    bad = make_keyset(world, chains=(("bitcoin", "mainnet"), ("bitcoin", "testnet")))
    svc = restart(world)
    assert svc.runner.sealed_reason is not None
    assert "mixed_networks" in svc.runner.sealed_reason
    assert bad.id in svc.runner.sealed_reason
    assert good.id not in svc.runner.sealed_reason
    assert "bitcoin on mainnet and testnet" in svc.runner.sealed_reason

    with TestClient(create_app(service=svc), raise_server_exceptions=False) as http:
        health = http.get("/v1/health").json()
        assert (health["status"], health["sealed"]) == ("sealed", True)
        assert bad.id in health["reason"]
        env = world.client.sign(world["alice"], "withdrawal.prepare", {"keyset": good.id})
        refused = http.post("/v1/withdrawals/operations", content=canonical({"envelope": env}))
        assert (refused.status_code, refused.json()["code"]) == (503, "sealed")

    # The operator retires the test-network address; the next start-up unseals.
    with world.svc.db.write() as session:
        for row in session.exec(
            select(AddressRow).where(AddressRow.keyset == bad.id, AddressRow.network == "testnet")
        ).all():
            session.delete(row)
    assert restart(world).runner.sealed_reason is None


def test_the_start_up_rule_is_the_validation_rule() -> None:
    rows = [
        ("k1", "bitcoin", "mainnet"),
        ("k1", "ethereum", "mainnet"),
        ("k2", "bitcoin", "signet"),
        ("k2", "bitcoin", "testnet"),
        ("k3", "bitcoin", "testnet"),
    ]
    assert [str(m) for m in network_mixes(rows)] == ["key k2 serves bitcoin on signet and testnet"]
