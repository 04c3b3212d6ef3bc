"""Bech32 and Bech32m (BIP-173, BIP-350) and native segwit addresses.

Decoding is strict on purpose: a custody system should refuse an address a person
mistyped rather than guess what they meant, so mixed case, a checksum of the wrong
variant (Bech32 for v1+, Bech32m for v0), non-zero padding and out-of-range program
lengths are all errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum

from tandem.errors import InvalidAddressError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_LENGTH = 90


class Encoding(Enum):
    BECH32 = 1
    BECH32M = 0x2BC830A3

    @property
    def const(self) -> int:
        return self.value


_ENCODING_BY_CONST = {encoding.const: encoding for encoding in Encoding}


def _generator_xor(top: int) -> int:
    out = 0
    for i, gen in enumerate(_GENERATOR):
        if (top >> i) & 1:
            out ^= gen
    return out


# The BCH generator terms each 5-bit "top" value folds in, precomputed: one lookup per
# character instead of five tests (address decoding is on every proof's path).
_GENERATOR_TABLE = tuple(_generator_xor(top) for top in range(32))


def _polymod(values: Iterable[int]) -> int:
    chk = 1
    table = _GENERATOR_TABLE
    for value in values:
        chk = ((chk & 0x1FFFFFF) << 5) ^ value ^ table[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_encode(hrp: str, data: Sequence[int], encoding: Encoding) -> str:
    """Encode 5-bit ``data`` under ``hrp``; the result is lower case."""
    hrp = hrp.lower()
    values = _hrp_expand(hrp) + list(data)
    polymod = _polymod([*values, 0, 0, 0, 0, 0, 0]) ^ encoding.const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[d] for d in [*data, *checksum])


def bech32_decode(text: str) -> tuple[str, list[int], Encoding]:
    """Return ``(hrp, data, encoding)`` with the checksum removed; hrp is lower case."""
    if len(text) > MAX_LENGTH:
        raise InvalidAddressError(f"bech32 string is longer than {MAX_LENGTH} characters")
    if not (text.isascii() and text.isprintable()) or " " in text:
        raise InvalidAddressError("bech32 string contains a character outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise InvalidAddressError("bech32 string mixes upper and lower case")
    text = text.lower()
    hrp, sep, rest = text.rpartition("1")
    if not sep:
        raise InvalidAddressError("bech32 string has no '1' separator")
    if not hrp:
        raise InvalidAddressError("bech32 string has an empty human-readable part")
    if len(rest) < 6:
        raise InvalidAddressError("bech32 checksum is too short")
    try:
        data = [_CHARSET_INDEX[c] for c in rest]
    except KeyError:
        raise InvalidAddressError("bech32 data contains an invalid character") from None
    encoding = _ENCODING_BY_CONST.get(_polymod(_hrp_expand(hrp) + data))
    if encoding is None:
        raise InvalidAddressError("bech32 checksum is wrong (mistyped address?)")
    return hrp, data[:-6], encoding


def convert_bits(data: Iterable[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    """Regroup bits; without ``pad``, leftover bits must be fewer than ``from_bits`` and zero."""
    values = list(data)
    if values and (min(values) < 0 or max(values) >> from_bits):
        raise InvalidAddressError("value out of range in bit conversion")
    # The whole group as one integer: Python's big integers do the shifting in C.
    acc = int.from_bytes(bytes(values), "big") if from_bits == 8 else 0
    if from_bits != 8:
        for value in values:
            acc = (acc << from_bits) | value
    count, rest = divmod(len(values) * from_bits, to_bits)
    if pad:
        if rest:
            acc <<= to_bits - rest
            count += 1
    elif rest >= from_bits:
        raise InvalidAddressError("witness program has more than 4 bits of padding")
    elif acc & ((1 << rest) - 1):
        raise InvalidAddressError("witness program has non-zero padding")
    else:
        acc >>= rest
    if to_bits == 8:
        return list(acc.to_bytes(count, "big"))
    mask = (1 << to_bits) - 1
    return [(acc >> (to_bits * (count - 1 - i))) & mask for i in range(count)]


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    """``(witness version, program)`` of a BIP-173/350 address, with every BIP rule checked."""
    got_hrp, data, encoding = bech32_decode(address)
    if got_hrp != hrp:
        raise InvalidAddressError(f"address prefix is {got_hrp!r}, expected {hrp!r}")
    if not data:
        raise InvalidAddressError("segwit address has an empty data part")
    version = data[0]
    if version > 16:
        raise InvalidAddressError(f"invalid witness version {version}")
    program = bytes(convert_bits(data[1:], 5, 8, pad=False))
    if not 2 <= len(program) <= 40:
        raise InvalidAddressError(f"invalid witness program length {len(program)}")
    if version == 0 and len(program) not in (20, 32):
        raise InvalidAddressError(f"witness version 0 program must be 20 or 32 bytes, not {len(program)}")
    expected = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    if encoding is not expected:
        raise InvalidAddressError(
            f"witness version {version} address must use {expected.name.lower()}, not {encoding.name.lower()}"
        )
    return version, program


def encode_segwit_address(hrp: str, version: int, program: bytes) -> str:
    if not 0 <= version <= 16:
        raise InvalidAddressError(f"invalid witness version {version}")
    encoding = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    address = bech32_encode(hrp, [version, *convert_bits(program, 8, 5, pad=True)], encoding)
    # Round-trip through the strict decoder so an encoder bug cannot emit an address
    # that no wallet would accept (or that pays somewhere else).
    if decode_segwit_address(hrp, address) != (version, program):
        raise InvalidAddressError("segwit address failed to round-trip")
    return address
