"""Plain helpers for the books tests: clients made through the real dual-controlled
path, a chain-configured :class:`Books`, and a full Ethereum withdrawal."""

from __future__ import annotations

from typing import Any

from tests.conftest import World

from tandem.chainio import ChainConfig
from tandem.services.books import Books


def books_for(world: World, url: str | None) -> Books:
    """A :class:`Books` reading ``url`` (anvil), also the one the app's routes use."""
    config = ChainConfig.from_env({"TANDEM_CHAIN_ETHEREUM_SEPOLIA": f"jsonrpc+{url}"} if url else {})
    books = Books(world.svc.runner, world.svc.withdrawals, config)
    world.client.http.app.state.books = books  # type: ignore[attr-defined]
    return books


def make_client(
    world: World, books: Books, client_id: str, *, segregation: str = "segregated", name: str | None = None
) -> dict[str, Any]:
    env = world.client.sign(
        world["alice"],
        "client.propose",
        {"id": client_id, "name": name or f"Client {client_id}", "segregation": segregation},
    )
    prop = books.propose_client(env)
    approval = world.client.sign(
        world["bob"], "client.approve", {"proposal": prop["proposal"], "digest": prop["digest"]}
    )
    return books.approve_client(approval, totp=world.code("bob"))
