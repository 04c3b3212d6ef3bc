"""The address book in force at a time, and the tokens it allows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tandem.core.chains import CHAINS
from tandem.core.policy import (
    AddressBookEntry,
)

# --- address book ----------------------------------------------------------------------


@dataclass(frozen=True)
class BookAddition:
    id: str
    entry: AddressBookEntry
    effective_at: int


def address_book_at(
    additions: Iterable[BookAddition], removals: Mapping[str, int], now: int
) -> list[AddressBookEntry]:
    """Entries in force at ``now``: added and past their delay, not removed by then."""
    return [
        a.entry
        for a in additions
        if a.effective_at <= now and not (a.id in removals and removals[a.id] <= now)
    ]


def allowed_tokens(book: Iterable[AddressBookEntry], network: str, chain: str = "ethereum") -> list[str]:
    """Token contracts (ERC-20) or mints (SPL) the address book allows on ``chain`` and
    ``network``: every asset an entry there names that is not the native coin."""
    tx = CHAINS[chain].tx
    return sorted(
        {
            e.asset
            for e in book
            if e.chain == chain
            and e.network == network
            and e.asset is not None
            and tx.token(e.asset) is not None
        }
    )
