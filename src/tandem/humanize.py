"""What a person reads beside the raw values: amounts in the chain's units, members by
name, destinations by their address-book label, instants in local ISO-8601.

Raw values (base units, member ids, Unix seconds) stay in every ``--json`` output; these
helpers only make the words printed beside them. No clock is read here and nothing is
fetched: the caller passes what it already has.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tandem.localtime import local_iso

# The chain coins' decimals and base-unit names.
NATIVE_UNITS: dict[str, tuple[int, str]] = {"BTC": (8, "sat"), "ETH": (18, "wei"), "SOL": (9, "lamports")}

# ERC-20 contracts whose symbol and decimals are fixed facts of the token (lower-case
# address per network). Anything else is rendered in base units, never guessed.
KNOWN_TOKENS: dict[tuple[str, str], tuple[str, int]] = {
    ("mainnet", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"): ("USDC", 6),
    ("mainnet", "0xdac17f958d2ee523a2206206994597c13d831ec7"): ("USDT", 6),
    ("mainnet", "0x6b175474e89094c44da98b954eedeac495271d0f"): ("DAI", 18),
    ("sepolia", "0x1c7d4b196cb0c7b01d743fbc6116a902379c7238"): ("USDC", 6),
}


@dataclass(frozen=True)
class Amount:
    """An amount as a person reads it, beside the exact base-unit integer."""

    text: str  # e.g. "0.0005 BTC"
    base: str  # e.g. "50,000 sat"
    known: bool  # False when the decimals are not known here (then ``text`` is in base units)

    def __str__(self) -> str:
        return f"{self.text} ({self.base})" if self.known else self.text


def decimal_text(value: int, decimals: int) -> str:
    """``50000``, 8 -> ``0.0005`` by integer arithmetic (no floats anywhere)."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{sign}{whole:,}{'.' + digits if digits else ''}"


def asset_symbol(asset: str, *, network: str | None = None) -> tuple[str, int | None]:
    """The symbol and decimals of ``asset`` (a coin name, or a token contract well known
    on ``network``); decimals ``None`` when not known here."""
    native = NATIVE_UNITS.get(asset.upper())
    if native is not None:
        return asset.upper(), native[0]
    token = KNOWN_TOKENS.get((network or "", asset.lower()))
    return token if token is not None else (asset, None)


def measure(
    raw: int | str,
    asset: str,
    *,
    network: str | None = None,
    decimals: int | None = None,
    symbol: str | None = None,
) -> Amount:
    """``50000``, ``BTC`` -> ``0.0005 BTC`` beside ``50,000 sat``. Decimals and symbol as
    decoded from the transaction win over the well-known table."""
    value = int(raw)
    known_symbol, known_decimals = asset_symbol(asset, network=network)
    places = decimals if decimals is not None else known_decimals
    name = symbol or known_symbol
    if places is None:
        return Amount(text=f"{value:,} base units of token {name}", base=f"{value:,}", known=False)
    native = NATIVE_UNITS.get(name.upper())
    unit = native[1] if native is not None and native[0] == places else "base units"
    return Amount(text=f"{decimal_text(value, places)} {name}", base=f"{value:,} {unit}", known=True)


def amount(
    raw: int | str,
    asset: str,
    *,
    network: str | None = None,
    decimals: int | None = None,
    symbol: str | None = None,
) -> str:
    """``50000``, ``BTC`` -> ``0.0005 BTC (50,000 sat)``; a token without known decimals
    reads in base units, said so."""
    return str(measure(raw, asset, network=network, decimals=decimals, symbol=symbol))


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


# A proposal's kind as a person names it; the kind itself stays shown beside it.
PROPOSAL_KINDS = {
    "addressbook.add": "Address book: add an entry",
    "addressbook.remove": "Address book: remove an entry",
    "policy.change": "Withdrawal policy: change",
    "member.add": "Membership: add a member",
    "member.remove": "Membership: remove a member",
    "member.rekey": "Membership: replace a member's keys",
}


def proposal_kind(kind: str) -> str:
    """``policy.change`` -> ``Withdrawal policy: change`` (an unknown kind as it is)."""
    return PROPOSAL_KINDS.get(kind, kind)
