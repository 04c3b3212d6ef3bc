"""One address, two address-book entries (any asset, and one token): a withdrawal is
labelled by the entry for its own asset, never by the other one."""

from __future__ import annotations

from tandem import humanize

ADDR = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
GONE = "0x" + "1" * 40
ETH = {"chain": "ethereum", "network": "mainnet"}
BOOK = [
    {**ETH, "address": ADDR, "label": "Prime broker"},
    {**ETH, "address": ADDR, "label": "Prime broker USDC", "asset": USDC},
    {**ETH, "address": GONE, "label": "gone", "status": "removed"},
]


def to(book: dict[tuple[str, ...], str], address: str, asset: str | None = None) -> str:
    return humanize.destination(address, "ethereum", "mainnet", book, asset)


def test_the_label_is_the_one_for_the_asset_sent() -> None:
    book = humanize.labels(BOOK)
    assert to(book, ADDR, "ETH") == f"{ADDR} (Prime broker)"
    assert to(book, ADDR, USDC.lower()) == f"{ADDR} (Prime broker USDC)"
    # Without an asset, the entry for any asset names it, whatever the order of entries.
    assert to(humanize.labels(BOOK[::-1]), ADDR) == f"{ADDR} (Prime broker)"


def test_an_entry_not_in_force_labels_nothing() -> None:
    assert to(humanize.labels(BOOK), GONE).endswith("(not in the address book)")
