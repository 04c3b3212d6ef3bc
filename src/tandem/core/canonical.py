"""Strict JSON parsing and RFC 8785 canonical bytes with domain separation.

Everything Tandem signs or hashes goes through :func:`canonical` behind a domain
prefix (:func:`domain_bytes`), so that a signature made for one purpose can never be
presented for another. Parsing is deliberately narrower than JSON: duplicate keys,
floats, NaN/Infinity, integers outside the interoperable range, lone surrogates,
oversized documents and deep nesting are all refused with a stable error code.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Any

import rfc8785

from tandem.errors import (
    DuplicateKeyError,
    FloatNotAllowedError,
    InputError,
    MalformedJSONError,
    NestingTooDeepError,
    PayloadTooLargeError,
    UnknownFieldError,
)

JSON = Any  # a value made of dict[str, JSON], list[JSON], str, int, bool, None

MAX_DOCUMENT_BYTES = 1 << 20
MAX_DEPTH = 32
# RFC 8785 / I-JSON: integers must be exactly representable as IEEE-754 doubles.
MAX_SAFE_INT = (1 << 53) - 1
_MAX_INT_DIGITS = 16


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKeyError(f"duplicate key {key!r} in JSON object")
        out[key] = value
    return out


def _refuse_float(text: str) -> Any:
    raise FloatNotAllowedError(
        "floating-point numbers are not accepted: write counts and durations as whole numbers "
        "and amounts as decimal strings"
    )


def _refuse_constant(text: str) -> Any:
    raise FloatNotAllowedError(f"{text} is not accepted")


def _parse_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS or abs(int(text)) > MAX_SAFE_INT:
        raise InputError(
            "integer outside the interoperable range (|n| <= 2^53-1); send large amounts as decimal strings"
        )
    return int(text)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


def _depth_guard(text: str, max_depth: int) -> None:
    """Refuse deep nesting before the recursive C parser sees it. Most documents have
    fewer brackets than the limit and need no scan; the rest are scanned with regular
    expressions (strings removed, then a running sum over the brackets), never a
    Python loop per character."""
    if text.count("[") + text.count("{") <= max_depth:
        return
    brackets = _BRACKET.findall(_STRING.sub("", text))
    if max(accumulate(map(_DELTA.__getitem__, brackets)), default=0) > max_depth:
        raise NestingTooDeepError(f"JSON nested deeper than {max_depth} levels")


def _check_tree(value: Any, forbid_nul: bool, max_depth: int) -> None:
    """One walk over the parsed values (not the characters): nesting depth, lone
    surrogates and, where asked, NUL characters."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_str(item, forbid_nul)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= max_depth:
            raise NestingTooDeepError(f"JSON nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            for k, v in item.items():
                _check_str(k, forbid_nul)
                stack.append((v, depth + 1))
        else:
            stack.extend((v, depth + 1) for v in item)


def _check_str(value: str, forbid_nul: bool) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedJSONError("JSON string is not valid Unicode (lone surrogate)") from None
    if forbid_nul and "\x00" in value:
        raise InputError("text must not contain NUL characters")


def loads_strict(
    data: bytes | str,
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DEPTH,
    forbid_nul: bool = False,
) -> JSON:
    """Parse a JSON document strictly; see the module docstring for what is refused.

    ``forbid_nul`` refuses NUL characters in strings: request bodies use it because
    some databases cannot store NUL in text, while stored documents that already hold
    an escaped NUL still parse."""
    if isinstance(data, bytes):
        text = utf8_text(data, max_bytes)
    else:
        text = data
        if len(text) > max_bytes or (
            not text.isascii() and len(text.encode("utf-8", "surrogatepass")) > max_bytes
        ):
            raise PayloadTooLargeError(f"document exceeds {max_bytes} bytes")
    brackets = text.count("[") + text.count("{")
    if brackets > max_depth:
        _depth_guard(text, max_depth)
    value = parse_json_text(text)
    # All-ASCII text without a backslash holds no escape, so no string in it can be a
    # lone surrogate or hold NUL; with no more opening brackets than the limit, nothing
    # is nested deeper than it. The walk over the values would find nothing then.
    if brackets > max_depth or "\\" in text or not text.isascii():
        _check_tree(value, forbid_nul, max_depth)
    return value


def utf8_text(data: bytes, max_bytes: int, what: str = "document") -> str:
    """``data`` decoded as UTF-8, once it is known to be at most ``max_bytes``."""
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{what} of {len(data)} bytes exceeds {max_bytes}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJSONError(f"{what} is not UTF-8") from None


def parse_json_text(text: str, what: str = "JSON") -> JSON:
    """The JSON parser with Tandem's hooks (duplicate keys, floats, NaN and integers
    beyond 2^53-1 refused), without the size, depth and text scans of
    :func:`loads_strict`. Large files whose entries are checked one by one afterwards
    (proof bundles) use it directly: the pure-Python depth scan would dominate their
    parse time, and the parser's own recursion limit still refuses deep nesting."""
    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
            parse_int=_parse_int,
        )
    except InputError:
        raise
    except json.JSONDecodeError as exc:
        # Where, and the parser's words for what; never the document's text.
        raise MalformedJSONError(
            f"malformed {what} at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise MalformedJSONError(f"malformed {what}: {type(exc).__name__}") from None


def canonical(value: JSON) -> bytes:
    """RFC 8785 canonical bytes. Floats are refused here too, not only at parse time.

    Documents made of objects with ASCII keys, arrays, strings, booleans, null and
    integers within +-(2^53-1) (everything Tandem itself signs) are encoded by the C
    encoder of :mod:`json`: for exactly that subset its output is the RFC 8785 output
    (keys sorted by code unit, which for ASCII is by code point; ES6 string escapes;
    integers as plain digits). Anything else goes through :mod:`rfc8785`.
    ``tests/unit/test_canonical.py`` holds the two to the same bytes."""
    if _plain(value):
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:
            pass  # a lone surrogate: let rfc8785 name it
    _refuse_floats_in(value)
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InputError(f"value cannot be canonicalised: {type(exc).__name__}") from None


def _plain(value: Any) -> bool:
    """True when ``value`` is in the subset the C encoder writes as RFC 8785 does."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
                continue
            return False
        if kind is dict:
            for k in item:
                if type(k) is not str or not k.isascii():
                    return False
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        else:
            return False
    return True


def _refuse_floats_in(value: Any) -> None:
    if isinstance(value, float):
        raise FloatNotAllowedError("floating-point numbers cannot be canonicalised here")
    if isinstance(value, Mapping):
        for v in value.values():
            _refuse_floats_in(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _refuse_floats_in(v)


def domain_bytes(domain: str, value: JSON) -> bytes:
    """The exact bytes that get signed or hashed for ``value`` under ``domain``.

    ``TANDEM/1/<domain>`` then a NUL byte, then the canonical JSON. A domain never
    contains NUL, so no two domains can produce the same prefix.
    """
    if not domain or "\x00" in domain:
        raise ValueError("domain must be a non-empty string without NUL")
    return b"TANDEM/1/" + domain.encode("ascii") + b"\x00" + canonical(value)


def digest(domain: str, value: JSON) -> bytes:
    """SHA-256 of :func:`domain_bytes`."""
    return hashlib.sha256(domain_bytes(domain, value)).digest()


def digest_hex(domain: str, value: JSON) -> str:
    return digest(domain, value).hex()


def check_fields(
    obj: Any,
    *,
    required: Iterable[str],
    optional: Iterable[str] = (),
    where: str = "object",
) -> dict[str, Any]:
    """Require ``obj`` to be an object with exactly the allowed fields."""
    if not isinstance(obj, dict):
        raise InputError(f"{where} must be a JSON object")
    req = set(required)
    allowed = req | set(optional)
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise UnknownFieldError(f"unknown field(s) in {where}: {', '.join(unknown)}")
    missing = sorted(req - set(obj))
    if missing:
        raise InputError(f"missing field(s) in {where}: {', '.join(missing)}")
    return obj


def require_str(obj: Mapping[str, Any], key: str, *, where: str, max_len: int = 4096) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise InputError(f"{where}.{key} must be a string")
    if len(value) > max_len:
        raise InputError(f"{where}.{key} is longer than {max_len} characters")
    return value


def parse_amount(text: Any, *, where: str = "amount") -> int:
    """An amount in base units, given as a decimal string of digits (no sign, no dot)."""
    from tandem.errors import InvalidAmountError

    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        raise InvalidAmountError(f'{where} must be a decimal string of base units, e.g. "1500"')
    if len(text) > 78 or (len(text) > 1 and text.startswith("0")):
        raise InvalidAmountError(f"{where} must be a canonical decimal string under 2^256")
    value = int(text)
    if value >= 1 << 256:
        raise InvalidAmountError(f"{where} must be below 2^256")
    return value
