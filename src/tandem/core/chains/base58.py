"""Base58 with the Bitcoin alphabet (as Solana uses it), without a checksum.

Each leading zero byte is written as one leading ``1`` and the rest as a big-endian
base-58 number, so every byte string has exactly one encoding and every string of
alphabet characters decodes to exactly one byte string. Anything outside the alphabet
(``0``, ``O``, ``I``, ``l``, whitespace, non-ASCII) is refused rather than skipped.
"""

from __future__ import annotations

import re

from tandem.errors import InputError

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}

# Base-58 conversion is quadratic; Solana's longest values (64-byte signatures) need 88
# characters, so this bound is generous without letting a caller burn CPU.
MAX_TEXT_CHARS = 1024


# Two digits at a time: half the big-number divisions, on every address and signature.
_PAIRS = tuple(a + b for a in ALPHABET for b in ALPHABET)
_PAIR_VALUE = {pair: i for i, pair in enumerate(_PAIRS)}
_PAIR_BASE = 58 * 58
_VALID = re.compile(f"[{ALPHABET}]*")


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    pairs: list[str] = []
    while number:
        number, rem = divmod(number, _PAIR_BASE)
        pairs.append(_PAIRS[rem])
    # The top pair may start with a zero digit, which is not written.
    return "1" * zeros + "".join(reversed(pairs)).lstrip("1")


def b58decode(text: str) -> bytes:
    """Bytes of ``text``; raises :class:`InputError` on any character outside the alphabet."""
    if not isinstance(text, str):
        raise InputError("base58 input must be text")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"base58 text longer than {MAX_TEXT_CHARS} characters")
    if not _VALID.fullmatch(text):
        position = next(i for i, ch in enumerate(text) if ch not in _INDEX)
        raise InputError(f"character at position {position} is not in the base58 alphabet")
    # Two digits at a time (an odd length starts with one).
    head = len(text) % 2
    number = _INDEX[text[0]] if head else 0
    pair_value = _PAIR_VALUE
    for i in range(head, len(text), 2):
        number = number * _PAIR_BASE + pair_value[text[i : i + 2]]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * zeros + body
