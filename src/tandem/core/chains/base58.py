"""Base58 with the Bitcoin alphabet (as Solana uses it), without a checksum.

Each leading zero byte is written as one leading ``1`` and the rest as a big-endian
base-58 number, so every byte string has exactly one encoding and every string of
alphabet characters decodes to exactly one byte string. Anything outside the alphabet
(``0``, ``O``, ``I``, ``l``, whitespace, non-ASCII) is refused rather than skipped.
"""

from __future__ import annotations

from tandem.errors import InputError

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}

# Base-58 conversion is quadratic; Solana's longest values (64-byte signatures) need 88
# characters, so this bound is generous without letting a caller burn CPU.
MAX_TEXT_CHARS = 1024


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    """Bytes of ``text``; raises :class:`InputError` on any character outside the alphabet."""
    if not isinstance(text, str):
        raise InputError("base58 input must be text")
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"base58 text longer than {MAX_TEXT_CHARS} characters")
    number = 0
    for position, ch in enumerate(text):
        value = _INDEX.get(ch)
        if value is None:
            raise InputError(f"character at position {position} is not in the base58 alphabet")
        number = number * 58 + value
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\x00" * zeros + body
