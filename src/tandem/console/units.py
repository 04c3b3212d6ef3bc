"""Amounts in the units a person reads: ``0.0005 BTC``, ``1.234567 USDC``.

Base-unit integers stay what is signed and compared; this module only renders them.
A token whose decimals are not known here is shown in base units, said so plainly,
never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

NATIVE: dict[str, tuple[int, str]] = {"BTC": (8, "sat"), "ETH": (18, "wei")}

# ERC-20 contracts whose symbol and decimals are fixed facts of the token (lower-case
# address per network). Anything else is rendered in base units.
KNOWN_TOKENS: dict[tuple[str, str], tuple[str, int]] = {
    ("mainnet", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"): ("USDC", 6),
    ("mainnet", "0xdac17f958d2ee523a2206206994597c13d831ec7"): ("USDT", 6),
    ("mainnet", "0x6b175474e89094c44da98b954eedeac495271d0f"): ("DAI", 18),
    ("sepolia", "0x1c7d4b196cb0c7b01d743fbc6116a902379c7238"): ("USDC", 6),
}


@dataclass(frozen=True)
class Amount:
    text: str  # what a person reads, e.g. "0.0005 BTC"
    base: str  # the exact base-unit integer, e.g. "50000 sat"
    known: bool  # False when the decimals are unknown (shown in base units)


def decimal_text(value: int, decimals: int) -> str:
    """``50000``, 8 -> ``0.0005`` by integer arithmetic (no floats anywhere)."""
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), 10**decimals)
    digits = f"{frac:0{decimals}d}".rstrip("0") if decimals else ""
    return f"{sign}{whole:,}{'.' + digits if digits else ''}"


def asset_symbol(asset: str, *, network: str) -> tuple[str, int | None]:
    """The symbol and decimals of ``asset`` (a coin name or a token contract)."""
    upper = asset.upper()
    if upper in NATIVE:
        return upper, NATIVE[upper][0]
    token = KNOWN_TOKENS.get((network, asset.lower()))
    if token is not None:
        return token
    return asset, None


def amount(value: str | int, asset: str, *, network: str) -> Amount:
    base = int(value)
    symbol, decimals = asset_symbol(asset, network=network)
    if decimals is None:
        return Amount(text=f"{base:,} base units of token {asset}", base=f"{base}", known=False)
    unit = NATIVE[symbol][1] if symbol in NATIVE else "base units"
    return Amount(text=f"{decimal_text(base, decimals)} {symbol}", base=f"{base:,} {unit}", known=True)
