"""Clients and omnibus allocations under dual control; statements of position whose
totals equal the register's, in JSON, CSV and a PDF checked against its logged hash
and rendered to an image. Deposits come from a real anvil chain."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from tests.books.helpers import books_for, make_client
from tests.chainio.conftest import Anvil
from tests.conftest import World
from tests.helpers.keysets import make_keyset

from tandem.core.register import UNALLOCATED
from tandem.errors import ConflictError, InputError, RoleNotAllowedError, VerificationError
from tandem.services.books import Books

ONE_ETH = 10**18


def _kinds(world: World) -> list[str]:
    lines, _cp = world.client.audit.export(world["olga"])
    import json

    return [json.loads(line)["kind"] for line in lines]


def test_client_needs_a_custodian_other_than_the_proposer(world: World) -> None:
    books = books_for(world, None)
    env = world.client.sign(
        world["alice"], "client.propose", {"id": "c1", "name": "C One", "segregation": "omnibus"}
    )
    prop = books.propose_client(env)
    # A manager may not approve, a custodian may not propose.
    with pytest.raises(RoleNotAllowedError):
        books.approve_client(
            world.client.sign(
                world["mark"], "client.approve", {"proposal": prop["proposal"], "digest": prop["digest"]}
            ),
            totp=world.code("mark"),
        )
    with pytest.raises(RoleNotAllowedError):
        books.propose_client(
            world.client.sign(
                world["bob"], "client.propose", {"id": "c2", "name": "x", "segregation": "omnibus"}
            )
        )
    with pytest.raises(ConflictError, match="digest mismatch"):
        books.approve_client(
            world.client.sign(
                world["bob"], "client.approve", {"proposal": prop["proposal"], "digest": "00" * 32}
            ),
            totp=world.code("bob"),
        )
    with pytest.raises(InputError, match="segregated or omnibus"):
        books.propose_client(
            world.client.sign(
                world["alice"], "client.propose", {"id": "c3", "name": "x", "segregation": "mixed"}
            )
        )
    done = books.approve_client(
        world.client.sign(
            world["bob"], "client.approve", {"proposal": prop["proposal"], "digest": prop["digest"]}
        ),
        totp=world.code("bob"),
    )
    assert done["client"] == {"id": "c1", "name": "C One", "segregation": "omnibus"}
    assert [c["id"] for c in books.clients()] == ["c1"]
    with pytest.raises(ConflictError, match="exists"):
        books.propose_client(
            world.client.sign(
                world["alice"], "client.propose", {"id": "c1", "name": "again", "segregation": "omnibus"}
            )
        )
    kinds = _kinds(world)
    assert "client.approve.refused" in kinds
    assert "client.propose.refused" in kinds
    assert kinds.count("client.created") == 1


def test_omnibus_allocation_and_statement_totals(world: World, anvil: Anvil, tmp_path: Path) -> None:
    books: Books = books_for(world, anvil.url)
    make_client(world, books, "ann", segregation="omnibus", name="Ann Example")
    make_client(world, books, "ben", segregation="omnibus", name="Ben Example")
    omni = make_keyset(world, chains=(("ethereum", "sepolia"),), segregation="client-omnibus")
    address = omni.addresses[0]["address"]
    anvil.send_from_dev(address, value=3 * ONE_ETH)
    [deposit] = books.scan_deposits()
    assert deposit["client"] == UNALLOCATED

    def allocate(client: str, amount: int) -> None:
        env = world.client.sign(
            world["alice"],
            "allocation.propose",
            {"deposit": deposit["id"], "client": client, "amount": str(amount)},
        )
        prop = books.propose_allocation(env)
        with pytest.raises(RoleNotAllowedError):  # the proposing manager cannot approve it
            books.approve_allocation(
                world.client.sign(
                    world["alice"],
                    "allocation.approve",
                    {"proposal": prop["proposal"], "digest": prop["digest"]},
                ),
                totp=world.code("alice"),
            )
        books.approve_allocation(
            world.client.sign(
                world["bob"], "allocation.approve", {"proposal": prop["proposal"], "digest": prop["digest"]}
            ),
            totp=world.code("bob"),
        )

    allocate("ann", 2 * ONE_ETH)
    allocate("ben", ONE_ETH)
    reg = books.register()
    pos = {p["client"]: int(p["balance"]) for p in books.positions()["items"]}
    assert pos == {"ann": 2 * ONE_ETH, "ben": ONE_ETH, UNALLOCATED: 0}
    # A further allocation beyond what the deposit brought is refused at approval.
    env = world.client.sign(
        world["alice"], "allocation.propose", {"deposit": deposit["id"], "client": "ann", "amount": "1"}
    )
    prop = books.propose_allocation(env)
    with pytest.raises(VerificationError, match="exceeds"):
        books.approve_allocation(
            world.client.sign(
                world["bob"], "allocation.approve", {"proposal": prop["proposal"], "digest": prop["digest"]}
            ),
            totp=world.code("bob"),
        )

    books.import_prices(
        world.client.sign(
            world["alice"],
            "prices.import",
            {
                "prices": [
                    {
                        "asset": "ETH",
                        "price": "2500.50",
                        "currency": "EUR",
                        "time": world.clock() - 10,
                        "source": "Example closing price",
                        "method": "last trade before period end",
                    },
                ]
            },
        )
    )
    period = _period_of(world.clock())
    out = books.statements(
        world.client.sign(world["bob"], "statement.issue", {"period": period}),
        custodian="Example Custodian S.A.",
    )
    docs = {d["client"]["id"]: d for d in out["statements"]}
    assert set(docs) == {"ann", "ben"}
    for cid, doc in docs.items():
        [row] = doc["assets"]
        assert int(row["closing"]) == sum(
            m.amount for m in reg.movements if m.client == cid and m.asset == "ETH"
        )
        assert doc["transfers"][0]["txid"] == deposit["txid"]
    assert docs["ann"]["assets"][0]["value"] == "5001.00"
    assert "ann" in out["csv"]
    assert deposit["txid"] in out["csv"]
    pdf = bytes.fromhex(out["pdf_hex"])
    assert hashlib.sha256(pdf).hexdigest() == out["pdf_sha256"]
    assert _kinds(world).count("statement.issued") == 1
    # Rendered: a page per client.
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    assert len(doc) == 2
    image = doc[0].render(scale=1.5).to_pil()
    image.save(tmp_path / "statement-page1.png")
    assert image.size[0] > 1000


def _period_of(ts: int) -> str:
    from datetime import UTC, datetime

    d = datetime.fromtimestamp(ts, tz=UTC)
    return f"{d.year}-Q{(d.month - 1) // 3 + 1}"
