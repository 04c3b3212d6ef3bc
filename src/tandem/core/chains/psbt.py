"""BIP-174 Partially Signed Bitcoin Transactions, version 0.

Tandem reads a PSBT as a way to say which outputs a withdrawal spends (each input must
carry its full previous transaction, ``PSBT_IN_NON_WITNESS_UTXO``), and writes one for
the unsigned transaction of a withdrawal so that a custodian can also inspect it in a
standard wallet. Parsing is strict in the way BIP-174 asks: duplicate keys, key data
where a type has none, values of the wrong size, a non-empty scriptSig in the unsigned
transaction, version 2 fields, and any byte left over are refused. Unknown key types
are kept and written back unchanged, so a parsed PSBT serialises to its own bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from Crypto.Hash import RIPEMD160

from tandem.core.chains import bitcoin as btc
from tandem.errors import InvalidTransactionError, UnprovenInputError

MAGIC = b"psbt\xff"
MAX_PSBT_BYTES = 4_000_000

# Global types.
GLOBAL_UNSIGNED_TX = 0x00
GLOBAL_XPUB = 0x01
GLOBAL_VERSION = 0xFB
# Input types.
IN_NON_WITNESS_UTXO = 0x00
IN_WITNESS_UTXO = 0x01
IN_PARTIAL_SIG = 0x02
IN_SIGHASH_TYPE = 0x03
IN_REDEEM_SCRIPT = 0x04
IN_WITNESS_SCRIPT = 0x05
IN_BIP32_DERIVATION = 0x06
IN_FINAL_SCRIPTSIG = 0x07
IN_FINAL_SCRIPTWITNESS = 0x08
IN_POR_COMMITMENT = 0x09
IN_TAP_KEY_SIG = 0x13
# Output types.
OUT_REDEEM_SCRIPT = 0x00
OUT_WITNESS_SCRIPT = 0x01
OUT_BIP32_DERIVATION = 0x02
OUT_TAP_INTERNAL_KEY = 0x05

# Types that BIP-370 defines for version 2 only; a version 0 PSBT must not hold them.
_V2_ONLY_GLOBAL = frozenset({0x02, 0x03, 0x04, 0x05, 0x06})
_V2_ONLY_INPUT = frozenset({0x0E, 0x0F, 0x10, 0x11, 0x12})
_V2_ONLY_OUTPUT = frozenset({0x03, 0x04})
# Types whose key is the type byte alone.
_BARE_GLOBAL = frozenset({GLOBAL_UNSIGNED_TX, GLOBAL_VERSION})
_BARE_INPUT = frozenset(
    {
        IN_NON_WITNESS_UTXO,
        IN_WITNESS_UTXO,
        IN_SIGHASH_TYPE,
        IN_REDEEM_SCRIPT,
        IN_WITNESS_SCRIPT,
        IN_FINAL_SCRIPTSIG,
        IN_FINAL_SCRIPTWITNESS,
        IN_POR_COMMITMENT,
        IN_TAP_KEY_SIG,
    }
)
_BARE_OUTPUT = frozenset({OUT_REDEEM_SCRIPT, OUT_WITNESS_SCRIPT, OUT_TAP_INTERNAL_KEY})


def _hash160(data: bytes) -> bytes:
    return bytes(RIPEMD160.new(hashlib.sha256(data).digest()).digest())


def _ripemd160(data: bytes) -> bytes:
    return bytes(RIPEMD160.new(data).digest())


# PSBT_IN_RIPEMD160 .. PSBT_IN_HASH256: key data is the hash of the value.
_PREIMAGES = {
    0x0A: (20, _ripemd160),
    0x0B: (32, lambda d: hashlib.sha256(d).digest()),
    0x0C: (20, _hash160),
    0x0D: (32, btc.sha256d),
}

Pair = tuple[bytes, bytes]  # (key = type + key data, value)


def _fail(message: str) -> InvalidTransactionError:
    return InvalidTransactionError(f"PSBT: {message}")


class _Bytes:
    """A cursor over PSBT bytes; every read is bounded by what is left."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise _fail("truncated")
        self.pos += n
        return self._data[self.pos - n : self.pos]

    def compact_size(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        value = int.from_bytes(self.take(size), "little")
        if value < {2: 0xFD, 4: 0x1_0000, 8: 0x1_0000_0000}[size]:
            raise _fail("non-minimal compact size")
        return value


def key_type(key: bytes) -> tuple[int, bytes]:
    """Split a key into its compact-size type and its key data."""
    cur = _Bytes(key)
    kind = cur.compact_size()
    return kind, key[cur.pos :]


def _read_map(cur: _Bytes, where: str) -> tuple[Pair, ...]:
    pairs: list[Pair] = []
    seen: set[bytes] = set()
    while True:
        key_len = cur.compact_size()
        if key_len == 0:
            return tuple(pairs)
        key = cur.take(key_len)
        value = cur.take(cur.compact_size())
        if key in seen:
            raise _fail(f"duplicate key {key.hex()} in {where}")
        seen.add(key)
        key_type(key)  # a malformed type is refused here
        pairs.append((key, value))


def _write_map(pairs: Sequence[Pair]) -> bytes:
    out = [btc.var_bytes(k) + btc.var_bytes(v) for k, v in pairs]
    return b"".join(out) + b"\x00"


@dataclass(frozen=True)
class UnsignedTx:
    """The global unsigned transaction. Unlike :class:`btc.Transaction` it may have no
    inputs or outputs: BIP-174 lets a creator start from an empty one."""

    version: int
    inputs: tuple[btc.TxInput, ...]
    outputs: tuple[btc.TxOutput, ...]
    locktime: int

    def serialize(self) -> bytes:
        parts = [self.version.to_bytes(4, "little"), btc.compact_size(len(self.inputs))]
        for i in self.inputs:
            script_sig = btc.var_bytes(i.script_sig)
            parts += [i.outpoint, script_sig, i.sequence.to_bytes(4, "little")]
        parts.append(btc.compact_size(len(self.outputs)))
        parts += [o.serialize() for o in self.outputs]
        parts.append(self.locktime.to_bytes(4, "little"))
        return b"".join(parts)


def _parse_unsigned_tx(raw: bytes) -> UnsignedTx:
    # Old serialisation only: read without the segwit marker, so a witness-serialised
    # transaction fails on its stated size instead of being silently accepted.
    cur = _Bytes(raw)
    version = int.from_bytes(cur.take(4), "little")
    inputs = []
    for _ in range(_count(cur, 41, "inputs")):
        txid = cur.take(32)[::-1].hex()
        vout = int.from_bytes(cur.take(4), "little")
        script_sig = cur.take(cur.compact_size())
        sequence = int.from_bytes(cur.take(4), "little")
        if script_sig:
            raise _fail("the unsigned transaction has a non-empty scriptSig")
        inputs.append(btc.TxInput(txid, vout, b"", sequence))
    outputs = []
    for _ in range(_count(cur, 9, "outputs")):
        amount = int.from_bytes(cur.take(8), "little")
        script = cur.take(cur.compact_size())
        try:
            outputs.append(btc.TxOutput(amount, script))
        except InvalidTransactionError as exc:
            raise _fail(exc.message) from None
    locktime = int.from_bytes(cur.take(4), "little")
    if cur.remaining:
        raise _fail("the unsigned transaction is not the size its value states")
    return UnsignedTx(version, tuple(inputs), tuple(outputs), locktime)


def _count(cur: _Bytes, min_item: int, what: str) -> int:
    n = cur.compact_size()
    if n * min_item > cur.remaining:
        raise _fail(f"the unsigned transaction declares more {what} than it holds")
    return n


def _read_tx_output(value: bytes, where: str) -> btc.TxOutput:
    cur = _Bytes(value)
    amount = int.from_bytes(cur.take(8), "little")
    script = cur.take(cur.compact_size())
    if cur.remaining:
        raise _fail(f"{where} is not the size its value states")
    try:
        return btc.TxOutput(amount, script)
    except InvalidTransactionError as exc:
        raise _fail(f"{where}: {exc.message}") from None


def _read_witness(value: bytes, where: str) -> tuple[bytes, ...]:
    cur = _Bytes(value)
    items = tuple(cur.take(cur.compact_size()) for _ in range(cur.compact_size()))
    if cur.remaining:
        raise _fail(f"{where} is not the size its value states")
    return items


def _check_pubkey(data: bytes, where: str) -> None:
    if not ((len(data) == 33 and data[0] in (2, 3)) or (len(data) == 65 and data[0] == 4)):
        raise _fail(f"{where} key data is not a public key")


def _check_keypath(value: bytes, where: str) -> None:
    if len(value) < 4 or len(value) % 4:
        raise _fail(f"{where} value is not a fingerprint and 32-bit path elements")


def _typed_pairs(
    pairs: Sequence[Pair], bare: frozenset[int], v2_only: frozenset[int], where: str
) -> Iterator[tuple[int, bytes, bytes]]:
    """Each pair of one map as (key type, key data, value), refusing key data on a type
    that takes none and a type that belongs to PSBT version 2."""
    for key, value in pairs:
        kind, data = key_type(key)
        if kind in bare and data:
            raise _fail(f"{where} key type {kind:#04x} takes no key data")
        if kind in v2_only:
            raise _fail(f"{where} type {kind:#04x} belongs to PSBT version 2")
        yield kind, data, value


def _check_global(pairs: Sequence[Pair]) -> UnsignedTx:
    tx: UnsignedTx | None = None
    for kind, data, value in _typed_pairs(pairs, _BARE_GLOBAL, _V2_ONLY_GLOBAL, "global"):
        if kind == GLOBAL_UNSIGNED_TX:
            tx = _parse_unsigned_tx(value)
        elif kind == GLOBAL_XPUB:
            if len(data) != 78:
                raise _fail("a global xpub key holds a 78-byte extended key")
            _check_keypath(value, "global xpub")
            if (len(value) - 4) // 4 != data[4]:
                raise _fail("the global xpub path length is not the key's depth")
        elif kind == GLOBAL_VERSION:
            if len(value) != 4:
                raise _fail("the PSBT version is a 32-bit number")
            if int.from_bytes(value, "little") != 0:
                raise _fail(f"PSBT version {int.from_bytes(value, 'little')} is not supported (only 0)")
    if tx is None:
        raise _fail("no unsigned transaction (PSBT_GLOBAL_UNSIGNED_TX)")
    return tx


def _check_input(pairs: Sequence[Pair], index: int, txin: btc.TxInput) -> None:
    where = f"input {index}"
    for kind, data, value in _typed_pairs(pairs, _BARE_INPUT, _V2_ONLY_INPUT, where):
        if kind == IN_NON_WITNESS_UTXO:
            prev = btc.parse_transaction(value)
            if prev.txid != txin.txid:
                raise UnprovenInputError(
                    f"PSBT {where}: its previous transaction hashes to {prev.txid}, "
                    f"but the input spends {txin.txid}"
                )
        elif kind == IN_WITNESS_UTXO:
            _read_tx_output(value, f"{where} witness UTXO")
        elif kind == IN_PARTIAL_SIG:
            _check_pubkey(data, f"{where} partial signature")
            if not value:
                raise _fail(f"{where} partial signature is empty")
        elif kind == IN_SIGHASH_TYPE:
            if len(value) != 4:
                raise _fail(f"{where} sighash type is a 32-bit number")
        elif kind == IN_BIP32_DERIVATION:
            _check_pubkey(data, f"{where} BIP-32 derivation")
            _check_keypath(value, f"{where} BIP-32 derivation")
        elif kind == IN_FINAL_SCRIPTWITNESS:
            _read_witness(value, f"{where} final script witness")
        elif kind in _PREIMAGES:
            size, digest = _PREIMAGES[kind]
            if len(data) != size or digest(value) != data:
                raise _fail(f"{where} hash preimage does not hash to its key")
        elif kind == IN_TAP_KEY_SIG and len(value) not in (64, 65):
            raise _fail(f"{where} taproot key signature is 64 or 65 bytes")


def _check_output(pairs: Sequence[Pair], index: int) -> None:
    where = f"output {index}"
    for kind, data, value in _typed_pairs(pairs, _BARE_OUTPUT, _V2_ONLY_OUTPUT, where):
        if kind == OUT_BIP32_DERIVATION:
            _check_pubkey(data, f"{where} BIP-32 derivation")
            _check_keypath(value, f"{where} BIP-32 derivation")
        elif kind == OUT_TAP_INTERNAL_KEY and len(value) != 32:
            raise _fail(f"{where} taproot internal key is 32 bytes")


@dataclass(frozen=True)
class Psbt:
    """A version 0 PSBT as its key-value maps, in the order they were read."""

    global_map: tuple[Pair, ...]
    inputs: tuple[tuple[Pair, ...], ...]
    outputs: tuple[tuple[Pair, ...], ...]

    @property
    def tx(self) -> UnsignedTx:
        return _check_global(self.global_map)

    def serialize(self) -> bytes:
        maps = [self.global_map, *self.inputs, *self.outputs]
        return MAGIC + b"".join(_write_map(m) for m in maps)

    def to_base64(self) -> str:
        return base64.b64encode(self.serialize()).decode("ascii")

    def input_value(self, index: int, kind: int) -> bytes | None:
        for key, value in self.inputs[index]:
            if key == bytes([kind]):
                return value
        return None


def parse_psbt(data: bytes) -> Psbt:
    """Decode and validate a version 0 PSBT."""
    if len(data) > MAX_PSBT_BYTES:
        raise _fail(f"larger than {MAX_PSBT_BYTES} bytes")
    if not data.startswith(MAGIC):
        raise _fail("does not start with the magic bytes 'psbt' 0xff")
    cur = _Bytes(data)
    cur.take(len(MAGIC))
    global_map = _read_map(cur, "the global map")
    tx = _check_global(global_map)
    inputs = []
    for i, txin in enumerate(tx.inputs):
        pairs = _read_map(cur, f"input {i}")
        _check_input(pairs, i, txin)
        inputs.append(pairs)
    outputs = []
    for i in range(len(tx.outputs)):
        pairs = _read_map(cur, f"output {i}")
        _check_output(pairs, i)
        outputs.append(pairs)
    if cur.remaining:
        raise _fail(f"{cur.remaining} bytes after the last output map")
    return Psbt(global_map, tuple(inputs), tuple(outputs))


def decode_psbt_text(text: str) -> Psbt:
    """A PSBT as base64 (what wallets export) or as raw bytes that are not text."""
    if not isinstance(text, str) or len(text) > MAX_PSBT_BYTES * 4 // 3 + 4:
        raise _fail("must be base64 text")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _fail("is not valid base64") from None
    return parse_psbt(raw)


def psbt_for_unsigned(raw_unsigned: bytes, prev_txs: Sequence[bytes]) -> Psbt:
    """The PSBT of an unsigned P2WPKH spend, each input with its full previous
    transaction (``NON_WITNESS_UTXO``, which standard signers now require against the
    segwit fee attack) and the output it spends (``WITNESS_UTXO``)."""
    tx = btc.parse_transaction(raw_unsigned)
    if tx.witnesses or any(i.script_sig for i in tx.inputs):
        raise InvalidTransactionError("a PSBT is made from an unsigned transaction")
    if len(prev_txs) != len(tx.inputs):
        raise InvalidTransactionError(f"{len(prev_txs)} previous transactions for {len(tx.inputs)} inputs")
    inputs = []
    for txin, prev in zip(tx.inputs, prev_txs, strict=True):
        prevout = btc.prevout_from_tx(prev, txin.txid, txin.vout)
        spent = btc.TxOutput(prevout.amount, prevout.script_pubkey).serialize()
        inputs.append(
            (
                (bytes([IN_NON_WITNESS_UTXO]), btc.strip_witness(prev)),
                (bytes([IN_WITNESS_UTXO]), spent),
            )
        )
    psbt = Psbt(
        ((bytes([GLOBAL_UNSIGNED_TX]), tx.serialize(include_witness=False)),),
        tuple(inputs),
        tuple(() for _ in tx.outputs),
    )
    return parse_psbt(psbt.serialize())  # what we write, we can read


@dataclass(frozen=True)
class ProvenInput:
    txid: str
    vout: int
    prev_tx: bytes  # legacy serialisation


def proven_inputs(psbt: Psbt) -> list[ProvenInput]:
    """The outputs a PSBT spends, each with the previous transaction that proves it.

    An input without ``NON_WITNESS_UTXO`` is refused: a ``WITNESS_UTXO`` alone is the
    sender's word for the amount. One that carries both must agree with itself.
    """
    tx = psbt.tx
    out = []
    for i, txin in enumerate(tx.inputs):
        prev = psbt.input_value(i, IN_NON_WITNESS_UTXO)
        if prev is None:
            raise UnprovenInputError(
                f"PSBT input {i} has no previous transaction (PSBT_IN_NON_WITNESS_UTXO); "
                "a witness UTXO alone does not prove the amount"
            )
        prevout = btc.prevout_from_tx(prev, txin.txid, txin.vout)
        claimed = psbt.input_value(i, IN_WITNESS_UTXO)
        if claimed is not None and _read_tx_output(claimed, f"input {i} witness UTXO") != btc.TxOutput(
            prevout.amount, prevout.script_pubkey
        ):
            raise UnprovenInputError(
                f"PSBT input {i}: the witness UTXO differs from the output its previous transaction holds"
            )
        out.append(ProvenInput(txin.txid, txin.vout, btc.strip_witness(prev)))
    return out
