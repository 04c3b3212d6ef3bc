"""The two-digits-at-a-time base58 encoder against the textbook one-digit loop, and the
table-driven bech32 checksum and bit regrouping against their definitions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.chains import bech32
from tandem.core.chains.base58 import ALPHABET, b58decode, b58encode


def _reference_b58(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\x00"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(ALPHABET[rem])
    return "1" * zeros + "".join(reversed(digits))


def _reference_polymod(values: list[int]) -> int:
    generator = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(generator):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _reference_convert(data: list[int], from_bits: int, to_bits: int, pad: bool) -> list[int] | None:
    acc = bits = 0
    out = []
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & ((1 << to_bits) - 1))
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & ((1 << to_bits) - 1))
    elif bits >= from_bits or (acc << (to_bits - bits)) & ((1 << to_bits) - 1):
        return None
    return out


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_base58_matches_the_one_digit_loop_and_round_trips(data: bytes) -> None:
    assert b58encode(data) == _reference_b58(data)
    assert b58decode(b58encode(data)) == data


@settings(max_examples=300)
@given(st.lists(st.integers(min_value=0, max_value=31), max_size=90))
def test_polymod_matches_its_definition(values: list[int]) -> None:
    assert bech32._polymod(values) == _reference_polymod(values)


@settings(max_examples=300)
@given(st.binary(max_size=40), st.booleans())
def test_bit_regrouping_matches_its_definition(data: bytes, pad: bool) -> None:
    five = bech32.convert_bits(data, 8, 5, pad=True)
    assert five == _reference_convert(list(data), 8, 5, True)
    expected = _reference_convert(five, 5, 8, pad)
    if expected is None:
        try:
            bech32.convert_bits(five, 5, 8, pad=pad)
        except bech32.InvalidAddressError:
            return
        raise AssertionError("padding that the definition refuses was accepted")
    assert bech32.convert_bits(five, 5, 8, pad=pad) == expected
