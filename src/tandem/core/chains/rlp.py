"""Recursive Length Prefix encoding (Ethereum yellow paper, appendix B), decoded strictly.

Decoding accepts exactly one encoding per value. A transaction that a custodian's client
decodes must mean one thing only: if two byte strings could decode to the same fields, a
digest approved over one could be argued to cover the other. So non-minimal length
prefixes, single bytes wrapped in a string header, integers with leading zero bytes,
truncation and trailing bytes are all refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from tandem.errors import InvalidTransactionError

# A decoded item: a byte string or a list of items.
RlpItem: TypeAlias = bytes | list["RlpItem"]
# What the encoder takes: byte strings, non-negative integers and sequences of them.
RlpEncodable: TypeAlias = bytes | int | Sequence["RlpEncodable"]

# Transactions nest at most four deep (tx -> access list -> entry -> storage keys); the
# bound keeps hostile input from exhausting the interpreter's recursion limit.
MAX_DEPTH = 16


def encode_uint(value: int) -> bytes:
    """Minimal big-endian bytes of ``value``; zero is the empty string."""
    if isinstance(value, bool) or value < 0:
        raise InvalidTransactionError("RLP integers must be non-negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def decode_uint(data: bytes, *, field: str, max_bytes: int = 32) -> int:
    """Integer from an RLP string, refusing leading zeros and oversize values."""
    if not isinstance(data, bytes):
        raise InvalidTransactionError(f"{field}: expected an integer, found a list")
    if len(data) > max_bytes:
        raise InvalidTransactionError(f"{field}: integer longer than {max_bytes} bytes")
    if data[:1] == b"\x00":
        raise InvalidTransactionError(f"{field}: integer has a leading zero byte")
    return int.from_bytes(data, "big")


def _length_prefix(length: int, offset: int) -> bytes:
    if length <= 55:
        return bytes([offset + length])
    length_bytes = encode_uint(length)
    return bytes([offset + 55 + len(length_bytes)]) + length_bytes


def encode(item: RlpEncodable) -> bytes:
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length_prefix(len(item), 0x80) + item
    if isinstance(item, bool):
        raise InvalidTransactionError("booleans have no RLP encoding")
    if isinstance(item, int):
        return encode(encode_uint(item))
    if isinstance(item, str | bytearray | memoryview):
        raise InvalidTransactionError("RLP takes bytes, integers and lists only")
    payload = b"".join(encode(sub) for sub in item)
    return _length_prefix(len(payload), 0xC0) + payload


def _read_length(data: bytes, pos: int, size_of_length: int) -> int:
    end = pos + size_of_length
    if end > len(data):
        raise InvalidTransactionError("RLP input truncated inside a length prefix")
    length_bytes = data[pos:end]
    if length_bytes[0] == 0:
        raise InvalidTransactionError("RLP length prefix has a leading zero byte")
    length = int.from_bytes(length_bytes, "big")
    if length <= 55:
        raise InvalidTransactionError("RLP long form used for a length of 55 or less")
    return length


def _payload(data: bytes, pos: int, offset: int, what: str) -> tuple[int, int]:
    """Where the payload of the header at ``pos`` starts and ends; ``offset`` is 0x80
    for a string and 0xC0 for a list (as in :func:`_length_prefix`)."""
    prefix = data[pos]
    if prefix <= offset + 55:
        length, start = prefix - offset, pos + 1
    else:
        size = prefix - offset - 55
        length, start = _read_length(data, pos + 1, size), pos + 1 + size
    end = start + length
    if end > len(data):
        raise InvalidTransactionError(f"RLP {what} runs past the end of the input")
    return start, end


def _decode_at(data: bytes, pos: int, depth: int) -> tuple[RlpItem, int]:
    if depth > MAX_DEPTH:
        raise InvalidTransactionError(f"RLP nesting deeper than {MAX_DEPTH}")
    if pos >= len(data):
        raise InvalidTransactionError("RLP input truncated")
    prefix = data[pos]
    if prefix < 0x80:
        return data[pos : pos + 1], pos + 1
    if prefix < 0xC0:
        start, end = _payload(data, pos, 0x80, "string")
        body = data[start:end]
        if len(body) == 1 and body[0] < 0x80:
            raise InvalidTransactionError("RLP single byte below 0x80 wrapped in a header")
        return body, end
    start, end = _payload(data, pos, 0xC0, "list")
    items: list[RlpItem] = []
    cursor = start
    while cursor < end:
        sub, cursor = _decode_at(data, cursor, depth + 1)
        if cursor > end:
            raise InvalidTransactionError("RLP list item runs past the end of its list")
        items.append(sub)
    return items, end


def decode(data: bytes) -> RlpItem:
    """The single item ``data`` encodes; anything else in ``data`` is an error."""
    if not isinstance(data, bytes):
        raise InvalidTransactionError("RLP input must be bytes")
    item, end = _decode_at(data, 0, 0)
    if end != len(data):
        raise InvalidTransactionError(f"{len(data) - end} trailing bytes after the RLP item")
    return item
