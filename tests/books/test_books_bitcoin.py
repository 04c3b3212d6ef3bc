"""Bitcoin deposits through the Esplora backend, answering in the shapes Esplora's
``API.md`` documents (no Bitcoin node installs from the registries here; see
tests/chainio/mock_nodes.py). The funding transactions are real signed ones, so each
UTXO's amount is checked against its previous transaction before it is believed."""

from __future__ import annotations

from tests.books.helpers import make_client
from tests.chainio.mock_nodes import NETWORK, EsploraServer, backend_for
from tests.conftest import World
from tests.helpers.keysets import make_keyset

from tandem.chainio import ChainConfig
from tandem.services.books import Books

SPEC = "esplora+https://esplora.example/api"


def test_utxos_become_deposits_once_and_reconcile(world: World) -> None:
    server = EsploraServer()
    books = Books(
        world.svc.runner, world.svc.withdrawals, ChainConfig.from_mapping({f"bitcoin.{NETWORK}": SPEC})
    )
    books._backends[("bitcoin", NETWORK)] = backend_for("bitcoin", NETWORK, SPEC, server)
    make_client(world, books, "acme")
    ks = make_keyset(world, chains=(("bitcoin", NETWORK),), segregation="client:acme")
    address = ks.addresses[0]["address"]
    first = server.fund(address, 40_000, height=150)
    second = server.fund(address, 2_500, height=None)

    seen = books.scan_deposits()
    assert sorted((m["txid"], m["amount"], m["height"]) for m in seen) == sorted(
        [(first, "40000", 150), (second, "2500", None)]
    )
    assert all(m["client"] == "acme" and m["index"] is not None for m in seen)
    assert books.scan_deposits() == []
    report = books.reconcile()["report"]
    assert report["verdict"] == "reconciled", report

    # An output the register never saw (scanned later it would be a deposit) is named.
    server.fund(address, 999, height=160)
    kinds = [(d["kind"], d["difference"]) for d in books.reconcile()["report"]["discrepancies"]]
    assert kinds == [("unexpected_inflow", "999")]

    # A withdrawal intent's inputs and fee rate come from the same backend.
    filled = books.fill_intent(
        {
            "wallet": ks.id,
            "chain": "bitcoin",
            "network": NETWORK,
            "asset": "BTC",
            "amount": "1000",
            "destination": address,
        }
    )
    assert {u["txid"] for u in filled["bitcoin"]["utxos"]} >= {first, second}
    assert filled["bitcoin"]["fee_rate"] >= 1
