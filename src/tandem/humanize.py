"""What a person reads beside the raw values: amounts in the chain's units, members by
name, destinations by their address-book label, instants in local ISO-8601.

Raw values (base units, member ids, Unix seconds) stay in every ``--json`` output; these
helpers only make the words printed beside them. No clock is read here and nothing is
fetched: the caller passes what it already has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tandem.localtime import local_iso

# The chain coins' decimals and base-unit names.
NATIVE_UNITS: dict[str, tuple[int, str]] = {"BTC": (8, "sat"), "ETH": (18, "wei"), "SOL": (9, "lamports")}


def _decimal(amount: int, decimals: int) -> str:
    whole, frac = divmod(amount, 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{whole:,}{'.' + digits if digits else ''}"


def amount(
    raw: int | str,
    asset: str,
    *,
    network: str | None = None,
    decimals: int | None = None,
    symbol: str | None = None,
) -> str:
    """``50000``, ``BTC`` -> ``0.0005 BTC (50,000 sat)``. A token with known decimals (a
    well-known contract on ``network``, or as decoded) reads in its symbol; one without
    them stays in base units."""
    from tandem.console.units import KNOWN_TOKENS

    value = int(raw)
    native = NATIVE_UNITS.get(asset.upper())
    if native is not None:
        places, unit = native
        return f"{_decimal(value, places)} {asset.upper()} ({value:,} {unit})"
    known = KNOWN_TOKENS.get((network or "", asset.lower()))
    if known is not None and decimals is None:
        symbol, decimals = symbol or known[0], known[1]
    name = symbol or short(asset)
    if decimals is None:
        return f"{value:,} base units of {name}"
    return f"{_decimal(value, decimals)} {name} ({value:,} base units)"


def short(text: str, keep: int = 6) -> str:
    """A long identifier shortened for a label only (never where it is compared)."""
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-keep:]}"


def when(ts: int | None) -> str:
    """Unix seconds as local ISO-8601 with its offset; "-" for none."""
    return "-" if ts is None else local_iso(int(ts))


def member_names(members: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Member id -> name, from the server's member list."""
    return {str(m["id"]): str(m["name"]) for m in members}


def member(member_id: str | None, names: Mapping[str, str]) -> str:
    """``alice (mem_…)``: the name a colleague knows, and the id that is checked."""
    if member_id is None:
        return "-"
    name = names.get(member_id)
    return f"{name} ({member_id})" if name else member_id


def labels(book: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], str]:
    """Labels of the address book's entries in force: by (chain, network, address) for an
    entry that allows any asset, and by (chain, network, address, asset) for one that names
    its asset (the same address may be both "Prime broker" and "Prime broker USDC")."""
    out: dict[tuple[str, ...], str] = {}
    generic: set[tuple[str, ...]] = set()
    for entry in book:
        if entry.get("status", "active") not in {"active", "in_force"}:
            continue
        key = (str(entry["chain"]), str(entry["network"]), str(entry["address"]).lower())
        label = str(entry["label"])
        if entry.get("asset"):
            out[(*key, str(entry["asset"]).lower())] = label
            if key not in generic:
                out[key] = label
        else:
            out[key] = label
            generic.add(key)
    return out


def destination(
    address: str, chain: str, network: str, book: Mapping[tuple[str, ...], str], asset: str | None = None
) -> str:
    """The whole address, with its label when the address book names it (for ``asset``,
    the entry that names that asset first)."""
    key = (chain, network, address.lower())
    label = (book.get((*key, asset.lower())) if asset else None) or book.get(key)
    return f"{address} ({label})" if label else f"{address} (not in the address book)"
