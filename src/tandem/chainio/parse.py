"""Strict readers for what nodes answer: JSON, hex quantities, integers, hashes.

A node is outside Tandem's trust boundary. Everything it says is parsed here, once,
into ints and bytes, and anything that is not exactly the documented shape is refused
with :class:`ChainBadResponseError`: a float where an integer belongs, a hex quantity
with leading zeros or no digits, a boolean posing as a number, a duplicate JSON key.
JSON numbers with a fraction or exponent are read as :class:`decimal.Decimal` (never
``float``) so that the few documented decimal fields (Esplora fee estimates, Bitcoin
Core BTC amounts) convert exactly, and every other field can refuse them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from tandem.errors import ChainBadResponseError

# Larger answers than this are not a balance or a page of logs: a hostile or broken node.
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_MAX_DEPTH = 64

_QUANTITY = re.compile(r"0x(?:0|[1-9a-fA-F][0-9a-fA-F]*)")
_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_HASH32_0X = re.compile(r"0x[0-9a-fA-F]{64}")
_TXID = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL_DIGITS = re.compile(r"0|[1-9][0-9]*")
SATS_PER_BTC = 100_000_000


def bad(what: str, problem: str) -> NoReturn:
    raise ChainBadResponseError(f"{what}: {problem}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            bad("node response", f"duplicate JSON key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> NoReturn:
    bad("node response", f"{name} is not JSON")


def _depth_ok(value: Any, depth: int = 0) -> bool:
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, dict):
        return all(_depth_ok(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_depth_ok(v, depth + 1) for v in value)
    return True


def loads(body: bytes, what: str) -> Any:
    """Parse a node's JSON answer strictly (UTF-8, no duplicate keys, no NaN, no floats)."""
    if len(body) > MAX_RESPONSE_BYTES:
        bad(what, f"answer is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        value = json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constant,
            object_pairs_hook=_no_duplicates,
        )
    except ChainBadResponseError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        bad(what, "answer is not valid JSON")
    if not _depth_ok(value):
        bad(what, "answer is nested too deeply")
    return value


# --- shapes ---------------------------------------------------------------------------


def obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        bad(what, f"expected a JSON object, got {_kind(value)}")
    return value


def arr(value: Any, what: str) -> Sequence[Any]:
    if not isinstance(value, list):
        bad(what, f"expected a JSON array, got {_kind(value)}")
    return value


def field(mapping: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in mapping:
        bad(what, f"field {key!r} is missing")
    return mapping[key]


def string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        bad(what, f"expected a string, got {_kind(value)}")
    return value


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        bad(what, f"expected true or false, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Decimal):
        return "a number with a fraction or exponent"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


# --- numbers --------------------------------------------------------------------------


def integer(value: Any, what: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    """A JSON integer (not a boolean, not 1.0, not "1") in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        bad(what, f"expected an integer, got {_kind(value)}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"[{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        bad(what, f"integer {value} is outside {bound}")
    return value


def decimal_string(value: Any, what: str, *, maximum: int | None = None) -> int:
    """A base-unit amount sent as a string of decimal digits (Solana token amounts)."""
    text = string(value, what)
    if len(text) > 80 or not _DECIMAL_DIGITS.fullmatch(text):
        bad(what, f"{text[:40]!r} is not a whole number of base units")
    number = int(text)
    if maximum is not None and number > maximum:
        bad(what, f"{number} is above {maximum}")
    return number


def decimal_number(value: Any, what: str) -> Decimal:
    """A JSON number read exactly; for the documented decimal fields only."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        bad(what, f"expected a number, got {_kind(value)}")
    number = Decimal(value)
    if not number.is_finite():
        bad(what, "number is not finite")
    return number


def btc_to_sats(value: Any, what: str) -> int:
    """An amount in BTC (Bitcoin Core RPC style, e.g. 0.00010000) as exact satoshis."""
    number = decimal_number(value, what)
    try:
        sats = number * SATS_PER_BTC
        if sats != sats.to_integral_value() or sats < 0:
            bad(what, f"{number} BTC is not a whole, non-negative number of satoshis")
        return int(sats)
    except InvalidOperation:
        bad(what, "amount is not a number")


def quantity(value: Any, what: str, *, bits: int = 256) -> int:
    """An Ethereum JSON-RPC QUANTITY: 0x-hex, no leading zeros, at least one digit."""
    text = string(value, what)
    if len(text) > 2 + bits // 4 or not _QUANTITY.fullmatch(text):
        bad(what, f"{text[:40]!r} is not a hex quantity (0x followed by digits, no leading zeros)")
    number = int(text, 16)
    if number.bit_length() > bits:
        bad(what, f"quantity does not fit in {bits} bits")
    return number


def data(value: Any, what: str, *, length: int | None = None) -> bytes:
    """An Ethereum JSON-RPC DATA: 0x-hex with an even number of digits."""
    text = string(value, what)
    if not _DATA.fullmatch(text):
        bad(what, f"{text[:40]!r} is not 0x-prefixed hex bytes")
    raw = bytes.fromhex(text[2:])
    if length is not None and len(raw) != length:
        bad(what, f"expected {length} bytes, got {len(raw)}")
    return raw


def hash32(value: Any, what: str) -> str:
    """A 0x-prefixed 32-byte hash, lower-cased."""
    text = string(value, what)
    if not _HASH32_0X.fullmatch(text):
        bad(what, f"{text[:40]!r} is not a 32-byte 0x-hex hash")
    return text.lower()


def txid(value: Any, what: str) -> str:
    """A Bitcoin txid (64 hex digits, display order), lower-cased."""
    text = string(value, what)
    if not _TXID.fullmatch(text):
        bad(what, f"{text[:40]!r} is not a 64-hex-digit txid")
    return text.lower()


def hex_bytes(value: Any, what: str) -> bytes:
    """Plain hex without a prefix (Bitcoin raw transactions, script pubkeys)."""
    text = string(value, what).strip()
    if not _HEX.fullmatch(text):
        bad(what, "is not hex bytes")
    return bytes.fromhex(text)


def text_integer(body: bytes, what: str) -> int:
    """A plain-text decimal integer (Esplora /blocks/tip/height)."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        bad(what, "answer is not ASCII")
    if len(text) > 20 or not _DECIMAL_DIGITS.fullmatch(text):
        bad(what, f"{text[:40]!r} is not a whole number")
    return int(text)
