"""A proof challenge costs what its scope holds: the same SQL statements, and only the
in-scope addresses loaded, whether the deployment has a few addresses and a short log
or 20,000 more of each."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from tests.conftest import World
from tests.helpers.keysets import make_keyset

from tandem.store import audit_log
from tandem.store.models import AddressRow

GROWTH = 20_000


def three_chains(world: World) -> tuple[Any, Any]:
    own = make_keyset(
        world, chains=(("bitcoin", "testnet"), ("ethereum", "sepolia")), count=2, segregation="own"
    )
    client = make_keyset(
        world, curve="ed25519", chains=(("solana", "devnet"),), count=2, segregation="client:acme"
    )
    return own, client


def run(world: World, scope: dict[str, Any]) -> dict[str, Any]:
    return world.client.proofs.run(
        issuer=world["olga"],
        manager=world["alice"],
        custodian=world["bob"],
        scope=scope,
        code=lambda: world.code("bob"),
    )


class Counter:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.addresses_loaded = 0

    def statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def loaded(self, _target: Any, _context: Any) -> None:
        self.addresses_loaded += 1


@pytest.fixture
def counter(world: World) -> Iterator[Counter]:
    c = Counter()
    engines = {world.svc.db.writer, world.svc.db.reader}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", c.statement)
    event.listen(AddressRow, "load", c.loaded)
    yield c
    event.remove(AddressRow, "load", c.loaded)
    for engine in engines:
        event.remove(engine, "before_cursor_execute", c.statement)


def grow(world: World) -> None:
    """20,000 addresses outside every scope used here (another key set's, another
    class) and 20,000 more log entries, written straight to the tables."""
    with world.svc.db.write() as s:
        s.add_all(
            AddressRow(
                key_id="k_filler",
                keyset="ks_filler",
                chain="bitcoin",
                network="testnet",
                address="tb1q" + secrets.token_hex(19),
                segregation="client:filler",
                birth_proof="{}",
            )
            for _ in range(GROWTH)
        )
    for _ in range(GROWTH // 2000):
        with world.svc.db.write() as s:
            audit_log.append_batch(
                s,
                world.svc.key,
                deployment=world.deployment,
                records=[
                    audit_log.Record("session.opened", None, "ok", None, None, {"n": i}, world.clock())
                    for i in range(2000)
                ],
            )


def measure(world: World, counter: Counter, scope: dict[str, Any]) -> tuple[int, int, int]:
    counter.statements.clear()
    counter.addresses_loaded = 0
    bundle = run(world, scope)
    return len(bundle["proofs"]), len(counter.statements), counter.addresses_loaded


def test_proof_challenge_cost_is_its_scope_not_the_deployment(world: World, counter: Counter) -> None:
    own, client = three_chains(world)
    scopes = [
        {
            "kind": "addresses",
            "addresses": [own.addresses[1]["address"].lower(), client.addresses[0]["address"]],
        },
        {"kind": "keyset", "keyset": client.id},
        {"kind": "segregation", "segregation": "own"},
    ]
    # Once first, so that sessions are open and nothing one-off is counted.
    for scope in scopes:
        measure(world, counter, scope)
    before = [measure(world, counter, scope) for scope in scopes]
    grow(world)
    after = [measure(world, counter, scope) for scope in scopes]
    for (proofs, statements, loaded), (proofs2, statements2, loaded2) in zip(before, after, strict=True):
        assert proofs2 == proofs
        assert statements2 == statements
        # Issue and sign each read the scope once: nothing outside it is loaded.
        assert loaded2 == loaded <= 2 * proofs


def test_address_scope_finds_every_spelling_of_a_case_insensitive_address(world: World) -> None:
    """Hex and bech32 addresses are compared case-insensitively; the index lookup must
    find the stored (EIP-55, lower-case bech32) form from any spelling."""
    own, _client = three_chains(world)
    eth = next(a["address"] for a in own.addresses if a["chain"] == "ethereum")
    btc = next(a["address"] for a in own.addresses if a["chain"] == "bitcoin")
    assert eth != eth.lower()  # stored in its EIP-55 form
    for spelling in (eth.lower(), "0x" + eth[2:].upper(), btc.upper()):
        bundle = run(world, {"kind": "addresses", "addresses": [spelling]})
        assert [p["address"].lower() for p in bundle["proofs"]] == [spelling.lower()]
