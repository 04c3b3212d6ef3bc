"""Bitcoin: addresses, segwit v0 P2WPKH spends, and proof-of-control messages.

Pure functions over bytes. The transaction parser is what a custodian's client uses
to read an unsigned withdrawal for itself, so it accepts exactly one encoding of a
transaction and refuses everything else (truncation, trailing bytes, non-minimal
length prefixes, counts the bytes cannot hold, amounts above the supply).

Proofs of control use the formats standard wallets check: BIP-322 *simple* for
P2WPKH addresses and BIP-137 (Bitcoin Core ``signmessage``) for P2PKH; BIP-137 is also
verified for P2WPKH and P2SH-P2WPKH, under both its own segwit headers and the
compressed-P2PKH header Electrum signs segwit addresses with.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Protocol

import coincurve
from Crypto.Hash import RIPEMD160

from tandem.core.canonical import check_fields, parse_amount
from tandem.core.chains import secp256k1
from tandem.core.chains.base import BuiltTx, Curve, MessageProof, TxIntent, check_network
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.core.chains.bech32 import decode_segwit_address, encode_segwit_address
from tandem.core.policy import Fee
from tandem.errors import (
    CannotVerifyError,
    CryptoError,
    InputError,
    InsufficientFundsError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidTransactionError,
    UnprovenInputError,
    VerificationError,
)

# --- networks and hashes ---------------------------------------------------------------


@dataclass(frozen=True)
class NetworkParams:
    hrp: str
    p2pkh_version: int
    p2sh_version: int


NETWORKS: dict[str, NetworkParams] = {
    "mainnet": NetworkParams("bc", 0x00, 0x05),
    "testnet": NetworkParams("tb", 0x6F, 0xC4),
    "signet": NetworkParams("tb", 0x6F, 0xC4),
    "regtest": NetworkParams("bcrt", 0x6F, 0xC4),
}


_SEGWIT_HRPS = frozenset(p.hrp for p in NETWORKS.values())


def _params(network: str) -> NetworkParams:
    check_network(BITCOIN, network)
    return NETWORKS[network]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    return sha256(sha256(data))


def _ripemd160_hashlib(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


def _ripemd160_pycryptodome(data: bytes) -> bytes:
    return bytes(RIPEMD160.new(data).digest())


def _pick_ripemd160() -> Callable[[bytes], bytes]:
    """OpenSSL's RIPEMD-160 where this build has it (four times faster, and on every
    proof's path); pycryptodome's otherwise: OpenSSL 3 builds may leave it out."""
    try:
        if _ripemd160_hashlib(b"") == bytes.fromhex("9c1185a5c5e9fc54612808977ee8f548b2258d31"):
            return _ripemd160_hashlib
    except ValueError:
        pass
    return _ripemd160_pycryptodome


ripemd160 = _pick_ripemd160()


def hash160(data: bytes) -> bytes:
    return ripemd160(hashlib.sha256(data).digest())


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP-340 tagged hash."""
    tag_hash = sha256(tag.encode("utf-8"))
    return sha256(tag_hash + tag_hash + data)


def _utf8(message: str) -> bytes:
    try:
        return message.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("message is not valid Unicode text (lone surrogate)") from None


# --- base58check -------------------------------------------------------------------------

_MAX_BASE58_CHARS = 64  # bounds the big-integer work on hostile input


def base58check_encode(payload: bytes) -> str:
    return b58encode(payload + sha256d(payload)[:4])


def base58check_decode(text: str) -> bytes:
    if not 5 <= len(text) <= _MAX_BASE58_CHARS:
        raise InvalidAddressError("base58 address has an impossible length")
    try:
        data = b58decode(text)
    except InputError:
        raise InvalidAddressError("address contains a character that is not base58") from None
    payload, checksum = data[:-4], data[-4:]
    if len(data) < 5 or sha256d(payload)[:4] != checksum:
        raise InvalidAddressError("address checksum is wrong (mistyped address?)")
    return payload


# --- scripts and addresses ---------------------------------------------------------------

AddressKind = Literal["p2wpkh", "p2wsh", "p2tr", "p2pkh", "p2sh"]


def p2wpkh_script(key_hash: bytes) -> bytes:
    return b"\x00\x14" + key_hash


def p2pkh_script(key_hash: bytes) -> bytes:
    return b"\x76\xa9\x14" + key_hash + b"\x88\xac"


def p2sh_script(script_hash: bytes) -> bytes:
    return b"\xa9\x14" + script_hash + b"\x87"


def _witness_script(version: int, program: bytes) -> bytes:
    return bytes([0x50 + version if version else 0, len(program)]) + program


def _witness_program(script: bytes) -> tuple[int, bytes] | None:
    if 4 <= len(script) <= 42 and script[1] == len(script) - 2:
        if script[0] == 0:
            return 0, script[2:]
        if 0x51 <= script[0] <= 0x60:
            return script[0] - 0x50, script[2:]
    return None


def _is_p2wpkh(script: bytes) -> bool:
    return len(script) == 22 and script[:2] == b"\x00\x14"


def _require_compressed(public_key: bytes) -> bytes:
    if len(public_key) != 33 or public_key[0] not in (2, 3):
        raise CryptoError("expected a 33-byte compressed secp256k1 public key")
    return secp256k1.compressed(public_key)


@dataclass(frozen=True)
class DecodedAddress:
    kind: AddressKind
    address: str  # normalised: bech32 in lower case, base58 as given
    script_pubkey: bytes
    payload: bytes  # the key hash, script hash or witness program


def _network_names(matches: Iterable[str]) -> str:
    return "/".join(matches) or "an unknown network"


def decode_address(address: str, network: str) -> DecodedAddress:
    """Decode a P2WPKH, P2WSH, P2TR, P2PKH or P2SH address for ``network``."""
    params = _params(network)
    if not address:
        raise InvalidAddressError("address is empty")
    hrp = address.lower().rpartition("1")[0]
    if hrp in _SEGWIT_HRPS:
        if hrp != params.hrp:
            others = (n for n, p in NETWORKS.items() if p.hrp == hrp)
            raise InvalidAddressError(f"address is for {_network_names(others)}, not {network}")
        return _decode_segwit(address, hrp)
    return _decode_base58(address, params, network)


def _decode_segwit(address: str, hrp: str) -> DecodedAddress:
    version, program = decode_segwit_address(hrp, address)
    kind: AddressKind
    if version == 0:
        kind = "p2wpkh" if len(program) == 20 else "p2wsh"
    elif version == 1 and len(program) == 32:
        try:
            coincurve.PublicKeyXOnly(program)
        except ValueError:
            raise InvalidAddressError(
                "taproot output key is not on the curve; coins sent there are lost"
            ) from None
        kind = "p2tr"
    else:
        # Valid per BIP-350 but not a defined output type: paying it burns the coins.
        raise InvalidAddressError(
            f"witness version {version} with a {len(program)}-byte program is not a spendable output type"
        )
    return DecodedAddress(kind, address.lower(), _witness_script(version, program), program)


def _decode_base58(address: str, params: NetworkParams, network: str) -> DecodedAddress:
    payload = base58check_decode(address)
    if len(payload) != 21:
        raise InvalidAddressError("base58 address does not carry a 20-byte hash")
    version, digest = payload[0], payload[1:]
    if version == params.p2pkh_version:
        return DecodedAddress("p2pkh", address, p2pkh_script(digest), digest)
    if version == params.p2sh_version:
        return DecodedAddress("p2sh", address, p2sh_script(digest), digest)
    others = [n for n, p in NETWORKS.items() if version in (p.p2pkh_version, p.p2sh_version)]
    if others:
        raise InvalidAddressError(f"address is for {_network_names(others)}, not {network}")
    raise InvalidAddressError(f"unknown base58 address version {version}")


def address_to_script(address: str, network: str) -> bytes:
    return decode_address(address, network).script_pubkey


def script_to_address(script_pubkey: bytes, network: str) -> str | None:
    """The address paying ``script_pubkey``, or None for a script with no address."""
    params = _params(network)
    witness = _witness_program(script_pubkey)
    if witness is not None:
        version, program = witness
        if (version, len(program)) in ((0, 20), (0, 32), (1, 32)):
            return encode_segwit_address(params.hrp, version, program)
        return None
    if len(script_pubkey) == 25 and script_pubkey == p2pkh_script(script_pubkey[3:23]):
        return base58check_encode(bytes([params.p2pkh_version]) + script_pubkey[3:23])
    if len(script_pubkey) == 23 and script_pubkey == p2sh_script(script_pubkey[2:22]):
        return base58check_encode(bytes([params.p2sh_version]) + script_pubkey[2:22])
    return None


def p2wpkh_address(public_key: bytes, network: str) -> str:
    hrp = _params(network).hrp
    return encode_segwit_address(hrp, 0, hash160(_require_compressed(public_key)))


def p2pkh_address(public_key: bytes, network: str) -> str:
    version = _params(network).p2pkh_version
    return base58check_encode(bytes([version]) + hash160(_require_compressed(public_key)))


def validate_address(address: str, network: str) -> str:
    return decode_address(address, network).address


# --- transaction encoding ----------------------------------------------------------------

MAX_MONEY = 21_000_000 * 100_000_000
MAX_TX_BYTES = 4_000_000  # nothing larger fits in a block
TX_VERSION = 2
SEQUENCE_RBF = 0xFFFFFFFD
SIGHASH_ALL = 0x01
MAX_FEE_RATE = 10_000  # sat/vB; anything above is a typo, not a fee market
MAX_STANDARD_VSIZE = 100_000  # nodes do not relay larger transactions
# Largest P2WPKH witness: item count, a 72-byte signature (71-byte low-S DER plus the
# sighash byte) and a 33-byte key, each behind a one-byte length.
_P2WPKH_WITNESS_BYTES = 1 + 1 + 72 + 1 + 33
_TXID_RE = re.compile(r"[0-9a-fA-F]{64}")


def compact_size(n: int) -> bytes:
    """``n`` as Bitcoin's CompactSize (the minimal varint of lengths and counts)."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def var_bytes(data: bytes) -> bytes:
    """``data`` after its CompactSize length."""
    return compact_size(len(data)) + data


def _check_int(value: object, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidTransactionError(f"{what} must be an integer in [{low}, {high}]")
    return value


def _check_txid(txid: object) -> str:
    if not isinstance(txid, str) or not _TXID_RE.fullmatch(txid):
        raise InvalidTransactionError("txid must be 64 hexadecimal characters")
    return txid.lower()


class _Reader:
    _VARINT_MIN: ClassVar[dict[int, tuple[int, int]]] = {
        0xFD: (2, 0xFD),
        0xFE: (4, 0x1_0000),
        0xFF: (8, 0x1_0000_0000),
    }

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def peek(self) -> int:
        if not self.remaining:
            raise InvalidTransactionError(f"{self._what} is truncated")
        return self._data[self._pos]

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise InvalidTransactionError(f"{self._what} is truncated")
        self._pos += n
        return self._data[self._pos - n : self._pos]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def varint(self) -> int:
        first = self.uint(1)
        if first < 0xFD:
            return first
        size, minimum = self._VARINT_MIN[first]
        value = self.uint(size)
        if value < minimum:
            raise InvalidTransactionError(f"{self._what} has a non-minimal length prefix")
        return value

    def count(self, min_item_bytes: int, items: str) -> int:
        n = self.varint()
        if n * min_item_bytes > self.remaining:
            raise InvalidTransactionError(
                f"{self._what} declares {n} {items}, more than its {self.remaining} bytes hold"
            )
        return n

    def var_bytes(self) -> bytes:
        return self.take(self.varint())

    def end(self) -> None:
        if self.remaining:
            raise InvalidTransactionError(f"{self._what} has {self.remaining} trailing bytes")


@dataclass(frozen=True)
class TxInput:
    txid: str  # display order, as block explorers show it
    vout: int
    script_sig: bytes = b""
    sequence: int = SEQUENCE_RBF

    def __post_init__(self) -> None:
        object.__setattr__(self, "txid", _check_txid(self.txid))
        _check_int(self.vout, 0, 0xFFFFFFFF, "vout")
        _check_int(self.sequence, 0, 0xFFFFFFFF, "sequence")

    @property
    def outpoint(self) -> bytes:
        return bytes.fromhex(self.txid)[::-1] + self.vout.to_bytes(4, "little")


@dataclass(frozen=True)
class TxOutput:
    amount: int
    script_pubkey: bytes

    def __post_init__(self) -> None:
        _check_int(self.amount, 0, MAX_MONEY, "output amount")

    def serialize(self) -> bytes:
        return self.amount.to_bytes(8, "little") + var_bytes(self.script_pubkey)


@dataclass(frozen=True)
class Transaction:
    version: int
    inputs: tuple[TxInput, ...]
    outputs: tuple[TxOutput, ...]
    locktime: int
    # One stack per input, or () for none at all; all-empty stacks collapse to () so
    # that a transaction has a single value whichever way it was built.
    witnesses: tuple[tuple[bytes, ...], ...] = ()

    def __post_init__(self) -> None:
        _check_int(self.version, 0, 0xFFFFFFFF, "version")
        _check_int(self.locktime, 0, 0xFFFFFFFF, "locktime")
        if not self.inputs or not self.outputs:
            raise InvalidTransactionError("a transaction needs at least one input and output")
        if sum(o.amount for o in self.outputs) > MAX_MONEY:
            raise InvalidTransactionError("outputs add up to more than the bitcoin supply")
        if self.witnesses and len(self.witnesses) != len(self.inputs):
            raise InvalidTransactionError("there must be one witness stack per input")
        if not any(self.witnesses):
            object.__setattr__(self, "witnesses", ())

    def serialize(self, *, include_witness: bool = True) -> bytes:
        segwit = include_witness and bool(self.witnesses)
        parts = [self.version.to_bytes(4, "little")]
        if segwit:
            parts.append(b"\x00\x01")
        parts.append(compact_size(len(self.inputs)))
        for txin in self.inputs:
            parts += [
                txin.outpoint,
                var_bytes(txin.script_sig),
                txin.sequence.to_bytes(4, "little"),
            ]
        parts.append(compact_size(len(self.outputs)))
        parts += [o.serialize() for o in self.outputs]
        if segwit:
            parts += [_serialize_stack(stack) for stack in self.witnesses]
        parts.append(self.locktime.to_bytes(4, "little"))
        return b"".join(parts)

    @property
    def txid(self) -> str:
        return sha256d(self.serialize(include_witness=False))[::-1].hex()

    @property
    def vsize(self) -> int:
        weight = 3 * len(self.serialize(include_witness=False)) + len(self.serialize())
        return (weight + 3) // 4


def _serialize_stack(stack: Sequence[bytes]) -> bytes:
    return compact_size(len(stack)) + b"".join(var_bytes(item) for item in stack)


def _read_stack(reader: _Reader) -> tuple[bytes, ...]:
    return tuple(reader.var_bytes() for _ in range(reader.count(1, "witness items")))


def parse_transaction(raw: bytes) -> Transaction:
    """Decode a legacy- or segwit-serialised transaction, refusing anything ambiguous."""
    if len(raw) > MAX_TX_BYTES:
        raise InvalidTransactionError(f"transaction is larger than {MAX_TX_BYTES} bytes")
    reader = _Reader(raw, "transaction")
    version = reader.uint(4)
    # A zero where the input count belongs can only be the segwit marker, since a
    # transaction without inputs is invalid anyway.
    segwit = reader.peek() == 0
    if segwit:
        reader.take(1)
        if reader.uint(1) != 1:
            raise InvalidTransactionError("unknown segwit serialisation flag")
    inputs = tuple(
        TxInput(reader.take(32)[::-1].hex(), reader.uint(4), reader.var_bytes(), reader.uint(4))
        for _ in range(reader.count(41, "inputs"))
    )
    outputs = tuple(TxOutput(reader.uint(8), reader.var_bytes()) for _ in range(reader.count(9, "outputs")))
    witnesses = tuple(_read_stack(reader) for _ in inputs) if segwit else ()
    if segwit and not any(witnesses):
        raise InvalidTransactionError("segwit serialisation without any witness data")
    locktime = reader.uint(4)
    reader.end()
    return Transaction(version, inputs, outputs, locktime, witnesses)


# --- P2WPKH spends -----------------------------------------------------------------------


@dataclass(frozen=True)
class Prevout:
    """The output an input spends: what BIP-143 commits to besides the transaction."""

    txid: str  # display order, as block explorers show it
    vout: int
    amount: int  # sats
    script_pubkey: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "txid", _check_txid(self.txid))
        _check_int(self.vout, 0, 0xFFFFFFFF, "vout")
        _check_int(self.amount, 0, MAX_MONEY, "prevout amount")


@dataclass(frozen=True)
class UnsignedBitcoinTx:
    raw: bytes  # legacy serialisation, no witness
    prevouts: tuple[Prevout, ...]
    fee: int
    change: int

    @property
    def txid(self) -> str:
        """Final txid: segwit signatures do not change it."""
        return parse_transaction(self.raw).txid

    @property
    def vsize(self) -> int:
        return signed_p2wpkh_vsize(parse_transaction(self.raw))


def dust_threshold(script_pubkey: bytes) -> int:
    """Bitcoin Core's dust limit at its default 3 sat/vB dust relay fee.

    The cost of the output plus the input that would later spend it, with witness
    bytes discounted for witness programs (294 sats for P2WPKH, 546 for P2PKH).
    """
    output_size = 8 + len(var_bytes(script_pubkey))
    witness = _witness_program(script_pubkey) is not None
    spend_size = 32 + 4 + 1 + (107 // 4 if witness else 107) + 4
    return (output_size + spend_size) * 3


def signed_p2wpkh_vsize(tx: Transaction) -> int:
    """vsize once every input carries a P2WPKH witness of the largest possible size."""
    stripped = tx.serialize(include_witness=False)
    weight = 4 * len(stripped) + 2 + _P2WPKH_WITNESS_BYTES * len(tx.inputs)
    return (weight + 3) // 4


# A standard transaction weighs at most 400 000 WU, so its stripped form is at most this.
MAX_PREV_TX_BYTES = 100_000


def prevout_from_tx(prev_tx: bytes, txid: str, vout: int) -> Prevout:
    """The output ``txid:vout`` as the previous transaction itself states it.

    BIP-143 signs only the amount of its own input, so an amount taken on anyone's word
    lets two signings over swapped amounts combine into one transaction that burns the
    difference as fee. Reading amount and script from the transaction whose hash *is*
    the txid leaves no room for a lie: a different amount is a different txid.
    """
    want = _check_txid(txid)
    _check_int(vout, 0, 0xFFFFFFFF, "vout")
    tx = parse_transaction(prev_tx)
    if len(tx.serialize(include_witness=False)) > MAX_PREV_TX_BYTES:
        raise UnprovenInputError(
            f"previous transaction {want} is larger than a standard transaction ({MAX_PREV_TX_BYTES} bytes)"
        )
    if tx.txid != want:
        raise UnprovenInputError(
            f"the previous transaction given for {want}:{vout} hashes to {tx.txid}; "
            "its amount and script are not proven"
        )
    if vout >= len(tx.outputs):
        raise UnprovenInputError(f"transaction {want} has {len(tx.outputs)} outputs, no output {vout}")
    out = tx.outputs[vout]
    return Prevout(want, vout, out.amount, out.script_pubkey)


def strip_witness(raw_tx: bytes) -> bytes:
    """The legacy serialisation (what the txid hashes): one spelling of a previous transaction."""
    return parse_transaction(raw_tx).serialize(include_witness=False)


def build_p2wpkh_spend(
    *,
    from_pubkey: bytes,
    prevouts: Sequence[Prevout],
    destination: str,
    amount: int,
    fee_rate: int,
    network: str,
) -> UnsignedBitcoinTx:
    """Spend all of ``prevouts`` (the from-key's own P2WPKH outputs) to ``destination``.

    Each prevout's amount and script must come from its previous transaction
    (:func:`prevout_from_tx`); an output paid to any other script is refused.
    Change returns to the from-key's P2WPKH address unless it would be dust, in which
    case it goes to the fee. The fee is ``vsize * fee_rate`` for the largest signed size.
    """
    own_script = p2wpkh_script(hash160(_require_compressed(from_pubkey)))
    pay_script = address_to_script(destination, network)
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_MONEY:
        raise InvalidAmountError(f"amount must be a whole number of sats in [1, {MAX_MONEY}]")
    if amount < dust_threshold(pay_script):
        raise InvalidAmountError(
            f"amount {amount} sats is below the {dust_threshold(pay_script)}-sat dust limit"
        )
    if not isinstance(fee_rate, int) or isinstance(fee_rate, bool):
        raise InputError("fee rate must be a whole number of sat/vB")
    if not 1 <= fee_rate <= MAX_FEE_RATE:
        raise InputError(f"fee rate {fee_rate} sat/vB is outside [1, {MAX_FEE_RATE}]")
    if not prevouts:
        raise InvalidTransactionError("at least one UTXO is required")
    prevouts = tuple(prevouts)
    seen: set[tuple[str, int]] = set()
    for i, p in enumerate(prevouts):
        if p.script_pubkey != own_script:
            raise InvalidTransactionError(
                f"input {i} ({p.txid}:{p.vout}) is not paid to the wallet's P2WPKH address"
            )
        if p.amount == 0:
            raise InvalidTransactionError(f"UTXO {p.txid}:{p.vout} holds no sats")
        if (p.txid, p.vout) in seen:
            raise InvalidTransactionError(f"UTXO {p.txid}:{p.vout} is listed twice")
        seen.add((p.txid, p.vout))
    total_in = sum(p.amount for p in prevouts)
    if total_in > MAX_MONEY:
        raise InvalidTransactionError("UTXOs add up to more than the bitcoin supply")

    inputs = tuple(TxInput(p.txid, p.vout) for p in prevouts)
    payment = TxOutput(amount, pay_script)

    def unsigned(*outputs: TxOutput) -> Transaction:
        return Transaction(TX_VERSION, inputs, outputs, 0)

    fee = signed_p2wpkh_vsize(unsigned(payment, TxOutput(0, own_script))) * fee_rate
    change = total_in - amount - fee
    if change >= dust_threshold(own_script):
        tx = unsigned(payment, TxOutput(change, own_script))
    else:
        tx = unsigned(payment)
        needed = amount + signed_p2wpkh_vsize(tx) * fee_rate
        if total_in < needed:
            raise InsufficientFundsError(
                f"UTXOs hold {total_in} sats; amount plus fee at {fee_rate} sat/vB needs {needed} sats"
            )
        fee, change = total_in - amount, 0
    if signed_p2wpkh_vsize(tx) > MAX_STANDARD_VSIZE:
        raise InvalidTransactionError(
            f"{len(inputs)} inputs make a transaction above the {MAX_STANDARD_VSIZE}-vB "
            "relay limit; spend fewer UTXOs"
        )
    return UnsignedBitcoinTx(raw=tx.serialize(), prevouts=prevouts, fee=fee, change=change)


def _parse_unsigned(raw_unsigned: bytes, prevouts: Sequence[Prevout]) -> Transaction:
    tx = parse_transaction(raw_unsigned)
    if tx.witnesses or any(txin.script_sig for txin in tx.inputs):
        raise InvalidTransactionError("transaction is already (partly) signed")
    if len(prevouts) != len(tx.inputs):
        raise InvalidTransactionError(f"{len(prevouts)} prevouts given for {len(tx.inputs)} inputs")
    for i, (txin, prev) in enumerate(zip(tx.inputs, prevouts, strict=True)):
        if (txin.txid, txin.vout) != (prev.txid, prev.vout):
            raise InvalidTransactionError(f"prevout {i} is not the output input {i} spends")
        if not _is_p2wpkh(prev.script_pubkey):
            raise InvalidTransactionError(f"input {i} does not spend a P2WPKH output")
    if sum(o.amount for o in tx.outputs) > sum(p.amount for p in prevouts):
        raise InvalidTransactionError("outputs spend more than the inputs hold")
    return tx


def decode_for_review(
    raw_unsigned: bytes,
    prevouts: Sequence[Prevout],
    network: str,
    change_address: str | None = None,
) -> dict[str, Any]:
    """A JSON-able account of what an unsigned P2WPKH spend does, from its bytes alone.

    Input amounts come from ``prevouts``, which callers take from the previous
    transactions (:func:`prevout_from_tx`), never from anyone's say-so: a BIP-143
    signature commits to its own input's amount only, so a fee computed from an unproven
    amount is not the fee the transaction pays. Amounts are decimal strings of sats;
    ``vsize`` is the signed size the fee was computed for (an upper bound).
    """
    tx = _parse_unsigned(raw_unsigned, prevouts)
    change_script = address_to_script(change_address, network) if change_address else None
    fee = sum(p.amount for p in prevouts) - sum(o.amount for o in tx.outputs)
    return {
        "txid": tx.txid,
        "version": tx.version,
        "locktime": tx.locktime,
        "inputs": [
            {"txid": p.txid, "vout": p.vout, "amount": str(p.amount), "sequence": i.sequence}
            for i, p in zip(tx.inputs, prevouts, strict=True)
        ],
        "outputs": [
            {
                "address": script_to_address(o.script_pubkey, network),
                "script_pubkey": o.script_pubkey.hex(),
                "amount": str(o.amount),
                "is_change": o.script_pubkey == change_script,
            }
            for o in tx.outputs
        ],
        "fee": str(fee),
        "vsize": signed_p2wpkh_vsize(tx),
    }


def _bip143_digest(tx: Transaction, index: int, prevout: Prevout, sighash_type: int = SIGHASH_ALL) -> bytes:
    if sighash_type != SIGHASH_ALL:
        raise InvalidTransactionError("only SIGHASH_ALL is supported")
    if not 0 <= index < len(tx.inputs):
        raise InvalidTransactionError(f"no input {index} in a transaction of {len(tx.inputs)}")
    txin = tx.inputs[index]
    if (txin.txid, txin.vout) != (prevout.txid, prevout.vout):
        raise InvalidTransactionError(f"prevout is not the output input {index} spends")
    if not _is_p2wpkh(prevout.script_pubkey):
        raise InvalidTransactionError(f"input {index} does not spend a P2WPKH output")
    script_code = var_bytes(p2pkh_script(prevout.script_pubkey[2:]))
    preimage = b"".join(
        [
            tx.version.to_bytes(4, "little"),
            sha256d(b"".join(i.outpoint for i in tx.inputs)),
            sha256d(b"".join(i.sequence.to_bytes(4, "little") for i in tx.inputs)),
            txin.outpoint,
            script_code,
            prevout.amount.to_bytes(8, "little"),
            txin.sequence.to_bytes(4, "little"),
            sha256d(b"".join(o.serialize() for o in tx.outputs)),
            tx.locktime.to_bytes(4, "little"),
            sighash_type.to_bytes(4, "little"),
        ]
    )
    return sha256d(preimage)


def bip143_sighash(
    raw_unsigned: bytes, input_index: int, prevout: Prevout, sighash_type: int = SIGHASH_ALL
) -> bytes:
    """BIP-143 signature hash of a P2WPKH input (scriptCode from ``prevout``)."""
    return _bip143_digest(parse_transaction(raw_unsigned), input_index, prevout, sighash_type)


def _sign_checked(private_key: bytes, public_key: bytes, digest: bytes) -> bytes:
    der = secp256k1.sign_digest_der(private_key, digest)
    # A signature corrupted by a fault can leak a deterministic-nonce key, and would
    # be refused by the network anyway: check it before it leaves.
    secp256k1.verify_digest_der(public_key, der, digest)
    return der + bytes([SIGHASH_ALL])


def sign_p2wpkh_spend(
    raw_unsigned: bytes, prevouts: Sequence[Prevout], private_key: bytes
) -> tuple[bytes, str]:
    """Sign every input; returns the segwit-serialised transaction and its txid."""
    public_key = secp256k1.public_key(private_key)
    own_script = p2wpkh_script(hash160(public_key))
    tx = _parse_unsigned(raw_unsigned, prevouts)
    for i, prev in enumerate(prevouts):
        if prev.script_pubkey != own_script:
            raise InvalidTransactionError(f"input {i} is not paid to this key; refusing to sign")
    witnesses = tuple(
        (_sign_checked(private_key, public_key, _bip143_digest(tx, i, prev)), public_key)
        for i, prev in enumerate(prevouts)
    )
    signed = replace(tx, witnesses=witnesses)
    return signed.serialize(), signed.txid


def _verify_p2wpkh_witness(tx: Transaction, index: int, prevout: Prevout, stack: Sequence[bytes]) -> None:
    if len(stack) != 2:
        raise VerificationError("a P2WPKH witness is exactly a signature and a public key")
    signature, public_key = stack
    if len(public_key) != 33 or public_key[0] not in (2, 3):
        raise VerificationError("witness public key is not a compressed key")
    if hash160(public_key) != prevout.script_pubkey[2:]:
        raise VerificationError("witness public key is not the one the address commits to")
    if not signature or signature[-1] != SIGHASH_ALL:
        raise VerificationError("signature does not use SIGHASH_ALL")
    der = signature[:-1]
    try:
        secp256k1.decode_der(der)
    except (ValueError, IndexError):
        raise VerificationError("malformed DER signature") from None
    secp256k1.verify_digest_der(public_key, der, _bip143_digest(tx, index, prevout))


def verify_p2wpkh_input(signed_raw: bytes, input_index: int, prevout: Prevout) -> None:
    """Raise unless input ``input_index`` carries a valid P2WPKH signature for ``prevout``."""
    tx = parse_transaction(signed_raw)
    if not 0 <= input_index < len(tx.inputs):
        raise InvalidTransactionError(f"no input {input_index} in a transaction of {len(tx.inputs)}")
    if not _is_p2wpkh(prevout.script_pubkey):
        raise CannotVerifyError(f"input {input_index} does not spend a P2WPKH output")
    if tx.inputs[input_index].script_sig:
        raise VerificationError("a native P2WPKH input must have an empty scriptSig")
    stack = tx.witnesses[input_index] if tx.witnesses else ()
    if stack and stack[0] and stack[0][-1] != SIGHASH_ALL:
        raise CannotVerifyError("only SIGHASH_ALL signatures are checked")
    _verify_p2wpkh_witness(tx, input_index, prevout, stack)


# --- proofs of control -------------------------------------------------------------------

BIP322_TAG = "BIP0322-signed-message"
BIP137_MAGIC = b"Bitcoin Signed Message:\n"
_MAX_SIGNATURE_CHARS = 4096
_NULL_TXID = "00" * 32


# The tagged hash's first block (the tag's hash, twice) is the same for every message:
# absorbed once, copied per message.
_BIP322_TAG_HASH = sha256(BIP322_TAG.encode("ascii"))
_BIP322_MIDSTATE = hashlib.sha256(_BIP322_TAG_HASH + _BIP322_TAG_HASH)


def bip322_message_hash(message: str) -> bytes:
    """``tagged_hash(BIP322_TAG, message)``, from the precomputed midstate."""
    state = _BIP322_MIDSTATE.copy()
    state.update(_utf8(message))
    return state.digest()


def bip322_to_spend(message_challenge: bytes, message: str) -> Transaction:
    script_sig = b"\x00\x20" + bip322_message_hash(message)
    return Transaction(
        version=0,
        inputs=(TxInput(_NULL_TXID, 0xFFFFFFFF, script_sig, 0),),
        outputs=(TxOutput(0, message_challenge),),
        locktime=0,
    )


def bip322_to_sign(to_spend_txid: str, witness: tuple[bytes, ...] = ()) -> Transaction:
    return Transaction(
        version=0,
        inputs=(TxInput(to_spend_txid, 0, b"", 0),),
        outputs=(TxOutput(0, b"\x6a"),),
        locktime=0,
        witnesses=(witness,),
    )


# The parts of the BIP-322 "to_sign" BIP-143 preimage that never change: version 0, one
# input with sequence 0 spending output 0 of to_spend, one OP_RETURN output of 0, locktime 0.
_BIP322_HASH_SEQUENCE = sha256d(bytes(4))
_BIP322_HASH_OUTPUTS = sha256d(bytes(8) + b"\x01\x6a")
_BIP322_TO_SPEND_HEAD = bytes(4) + b"\x01" + bytes(32) + b"\xff\xff\xff\xff" + b"\x22\x00\x20"
_BIP322_TO_SPEND_TAIL = bytes(4) + b"\x01" + bytes(8)
# Amount, sequence, hashOutputs, locktime and sighash type of the to_sign preimage.
_BIP322_PREIMAGE_END = bytes(12) + _BIP322_HASH_OUTPUTS + bytes(4) + SIGHASH_ALL.to_bytes(4, "little")


def _bip322_script_parts(script_pubkey: bytes) -> tuple[bytes, bytes]:
    """What a P2WPKH script contributes to its BIP-322 digest, whatever the message: the
    end of the to_spend transaction and the BIP-143 scriptCode."""
    return (
        _BIP322_TO_SPEND_TAIL + var_bytes(script_pubkey) + bytes(4),
        b"\x19\x76\xa9\x14" + script_pubkey[2:] + b"\x88\xac",
    )


def bip322_simple_digest(script_pubkey: bytes, message: str) -> bytes:
    """The BIP-143 digest a BIP-322 simple signature of a P2WPKH address signs, written out
    directly: the same bytes :func:`_bip322_virtual` and :func:`_bip143_digest` produce
    through transaction objects (a test holds the two equal), at a fraction of the cost,
    since every proof of ownership computes one."""
    if not _is_p2wpkh(script_pubkey):
        raise InvalidTransactionError("BIP-322 simple digests are for P2WPKH scripts")
    return _bip322_digest(bip322_message_hash(message), *_bip322_script_parts(script_pubkey))


def _bip322_digest(message_hash: bytes, to_spend_tail: bytes, script_code: bytes) -> bytes:
    h = hashlib.sha256
    outpoint = h(h(_BIP322_TO_SPEND_HEAD + message_hash + to_spend_tail).digest()).digest() + bytes(4)
    preimage = b"".join(
        (
            bytes(4),
            h(h(outpoint).digest()).digest(),
            _BIP322_HASH_SEQUENCE,
            outpoint,
            script_code,
            _BIP322_PREIMAGE_END,
        )
    )
    return h(h(preimage).digest()).digest()


def _bip322_virtual(decoded: DecodedAddress, message: str) -> tuple[Transaction, Prevout]:
    to_spend = bip322_to_spend(decoded.script_pubkey, message)
    return bip322_to_sign(to_spend.txid), Prevout(to_spend.txid, 0, 0, decoded.script_pubkey)


def _decode_base64(signature: str) -> bytes:
    if len(signature) > _MAX_SIGNATURE_CHARS:
        raise VerificationError("signature is too long")
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise VerificationError("signature is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != signature:
        raise VerificationError("signature is not canonical base64")
    return raw


def _require_kind(decoded: DecodedAddress, kinds: tuple[AddressKind, ...], what: str) -> None:
    if decoded.kind not in kinds:
        raise CannotVerifyError(f"{what} is not supported for {decoded.kind} addresses")


def _controlling_key(private_key: bytes, decoded: DecodedAddress) -> bytes:
    public_key = secp256k1.public_key(private_key)
    if hash160(public_key) != decoded.payload:
        raise CryptoError("the private key does not control this address")
    return public_key


def sign_bip322_simple(private_key: bytes, address: str, message: str, network: str) -> str:
    """Base64 of the witness stack (no prefix) proving control of a P2WPKH address."""
    return _sign_bip322_decoded(private_key, decode_address(address, network), message)


@dataclass(frozen=True, eq=False)
class _P2wpkhKey:
    """What signing for one P2WPKH address with one public key needs, whatever the
    message: the key checked against the address, parsed once, and the script's parts
    of the BIP-322 digest."""

    public_key: bytes
    point: coincurve.PublicKey
    to_spend_tail: bytes
    script_code: bytes


# A key set signs the same addresses challenge after challenge; this many (address, key)
# pairs keep their decoded form. Only public data is held.
_SIGNING_CACHE_SIZE = 1 << 14


@functools.lru_cache(maxsize=_SIGNING_CACHE_SIZE)
def _decode_for_signing(address: str, network: str) -> DecodedAddress:
    return decode_address(address, network)


@functools.lru_cache(maxsize=_SIGNING_CACHE_SIZE)
def _p2wpkh_key(decoded: DecodedAddress, public_key: bytes) -> _P2wpkhKey:
    if hash160(public_key) != decoded.payload:
        raise CryptoError("the private key does not control this address")
    try:
        point = coincurve.PublicKey(public_key)
    except ValueError:
        raise CryptoError("not a valid secp256k1 public key") from None
    return _P2wpkhKey(public_key, point, *_bip322_script_parts(decoded.script_pubkey))


def _sign_bip322_decoded(
    private_key: bytes, decoded: DecodedAddress, message: str, public_key: bytes | None = None
) -> str:
    _require_kind(decoded, ("p2wpkh",), "BIP-322 simple signing")
    if public_key is None:
        public_key = secp256k1.public_key_fast(private_key)
    key = _p2wpkh_key(decoded, bytes(public_key))
    digest = _bip322_digest(bip322_message_hash(message), key.to_spend_tail, key.script_code)
    der = bytes(secp256k1.signing_key(private_key).sign(digest, hasher=None))
    # As in _sign_checked: a faulty signature must not leave the machine. Checked against
    # the address's own key, this also proves the private key is that key. libsecp256k1
    # signs low-S and verifies only low-S, so this is the whole check.
    try:
        ok = key.point.verify(der, digest, hasher=None)
    except ValueError:
        ok = False
    if not ok:
        raise CryptoError("the private key does not control this address")
    return base64.b64encode(_serialize_stack((der + bytes([SIGHASH_ALL]), key.public_key))).decode("ascii")


def verify_bip322_simple(address: str, message: str, signature: str, network: str) -> None:
    _verify_bip322_decoded(decode_address(address, network), message, signature)


def _given_key(decoded: DecodedAddress, public_key: bytes) -> tuple[bytes, coincurve.PublicKey]:
    """A public key handed in beside an address, parsed once: its compressed form and point,
    after checking the address commits to it (compressed, uncompressed for P2PKH, or as
    P2SH-P2WPKH)."""
    try:
        point = coincurve.PublicKey(public_key)
    except ValueError:
        raise CryptoError("not a valid secp256k1 public key") from None
    # A compressed key that parses is its own compressed form.
    is_compressed = len(public_key) == 33 and public_key[0] in (2, 3)
    compressed = bytes(public_key) if is_compressed else bytes(point.format(compressed=True))
    key_hash = hash160(compressed)
    if decoded.kind == "p2sh":
        forms = {hash160(p2wpkh_script(key_hash))}
    elif decoded.kind == "p2pkh":
        forms = {key_hash, hash160(bytes(point.format(compressed=False)))}
    else:
        forms = {key_hash}
    if decoded.payload not in forms:
        raise VerificationError("the public key given is not the one of this address")
    return compressed, point


def _p2wpkh_stack(raw: bytes) -> tuple[bytes, ...]:
    """The witness stack a BIP-322 simple signature serialises. The usual shape (two items,
    a signature of under 253 bytes and a 33-byte key) is read in place; anything else goes
    through the strict reader, which names what is wrong."""
    if len(raw) > 2 and raw[0] == 2 and raw[1] < 0xFD:
        end = 2 + raw[1]
        if len(raw) == end + 34 and raw[end] == 33:
            return raw[2:end], raw[end + 1 :]
    reader = _Reader(raw, "BIP-322 signature")
    try:
        stack = _read_stack(reader)
        reader.end()
    except InvalidTransactionError as exc:
        raise VerificationError(f"malformed witness: {exc.message}") from None
    return stack


def _verify_bip322_decoded(
    decoded: DecodedAddress,
    message: str,
    signature: str,
    given: tuple[bytes, coincurve.PublicKey] | None = None,
) -> None:
    _require_kind(decoded, ("p2wpkh",), "BIP-322 simple verification")
    stack = _p2wpkh_stack(_decode_base64(signature))
    if len(stack) != 2:
        raise VerificationError("a P2WPKH witness is exactly a signature and a public key")
    sig, public_key = stack
    if len(public_key) != 33 or public_key[0] not in (2, 3):
        raise VerificationError("witness public key is not a compressed key")
    # The key given beside the address was checked against it already (and parsed).
    point = given[1] if given is not None and given[0] == public_key else None
    if point is None and hash160(public_key) != decoded.payload:
        raise VerificationError("witness public key is not the one the address commits to")
    if not sig or sig[-1] != SIGHASH_ALL:
        raise VerificationError("signature does not use SIGHASH_ALL")
    digest = bip322_simple_digest(decoded.script_pubkey, message)
    secp256k1.verify_digest_der(public_key, sig[:-1], digest, point=point)


def bip137_message_hash(message: str) -> bytes:
    return sha256d(var_bytes(BIP137_MAGIC) + var_bytes(_utf8(message)))


# Header byte = base + recovery id; the base says which address type signed, and
# whether the key is compressed. BIP-137 gives 35-38 to P2SH-P2WPKH and 39-42 to
# P2WPKH, but Electrum (and Coinomi, Mycelium, Samourai, ...) sign segwit addresses
# under the compressed-P2PKH header 31-34 too. Either way the recovered key must be the
# one the address commits to, so accepting 31-34 on segwit widens nothing an attacker
# can use; a 27-30 (uncompressed) key can never be behind a segwit address.
_BIP137_HEADERS: dict[int, tuple[tuple[AddressKind, ...], bool]] = {
    27: (("p2pkh",), False),
    31: (("p2pkh", "p2wpkh", "p2sh"), True),
    35: (("p2sh",), True),
    39: (("p2wpkh",), True),
}


def p2sh_p2wpkh_hash(public_key: bytes) -> bytes:
    """The script hash of a P2SH-wrapped P2WPKH address (BIP-141 nested segwit)."""
    return hash160(p2wpkh_script(hash160(secp256k1.compressed(public_key))))


def sign_bip137(private_key: bytes, address: str, message: str, network: str) -> str:
    """Bitcoin Core ``signmessage`` for a compressed-key P2PKH address (header 31-34)."""
    decoded = decode_address(address, network)
    if decoded.kind != "p2pkh":
        raise InputError("BIP-137 signing is done for P2PKH addresses only")
    _controlling_key(private_key, decoded)
    r, s, recovery_id = secp256k1.sign_digest_recoverable(private_key, bip137_message_hash(message))
    sig = bytes([31 + recovery_id]) + r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return base64.b64encode(sig).decode("ascii")


def verify_bip137(address: str, message: str, signature: str, network: str) -> None:
    """A BIP-137 signature for a P2PKH, P2WPKH or P2SH-P2WPKH address. A P2SH address
    verifies only when it is the P2SH-P2WPKH of the recovered key."""
    decoded = decode_address(address, network)
    _require_kind(decoded, ("p2pkh", "p2wpkh", "p2sh"), "BIP-137 verification")
    raw = _decode_base64(signature)
    if len(raw) != 65:
        raise VerificationError("a BIP-137 signature is 65 bytes")
    header = raw[0]
    base = header - (header - 27) % 4
    if base not in _BIP137_HEADERS:
        raise VerificationError(f"BIP-137 header {header} is not one this address can use")
    kinds, compressed = _BIP137_HEADERS[base]
    if decoded.kind not in kinds:
        raise VerificationError(
            f"BIP-137 header {header} is for {'/'.join(kinds)}, address is {decoded.kind}"
        )
    r, s = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    public_key = secp256k1.recover_public_key(bip137_message_hash(message), r, s, header - base)
    if not compressed:
        public_key = secp256k1.uncompressed(public_key)
    committed = p2sh_p2wpkh_hash(public_key) if decoded.kind == "p2sh" else hash160(public_key)
    if committed != decoded.payload:
        raise VerificationError("signature was not made by the key of this address")


# --- withdrawals -----------------------------------------------------------------------


@dataclass(frozen=True)
class Utxo:
    """An output to spend, with the previous transaction whose hash is ``txid``: the only
    source of its amount and script (see :func:`prevout_from_tx`)."""

    txid: str
    vout: int
    prev_tx: bytes = field(repr=False)  # kept in the legacy serialisation the txid hashes
    prevout: Prevout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stripped = strip_witness(self.prev_tx)
        object.__setattr__(self, "prev_tx", stripped)
        object.__setattr__(self, "prevout", prevout_from_tx(stripped, self.txid, self.vout))

    @property
    def amount(self) -> int:
        return self.prevout.amount


class BitcoinIntent(TxIntent, Protocol):
    """What Bitcoin spends read of a withdrawal intent, besides the fields every chain reads."""

    @property
    def utxos(self) -> tuple[Utxo, ...]: ...

    @property
    def fee_rate(self) -> int | None: ...


def prevouts_from_json(items: Any) -> list[Prevout]:
    if not isinstance(items, list):
        raise InputError("prevouts must be a list")
    out = []
    for i, p in enumerate(items):
        check_fields(p, required=("txid", "vout", "amount", "script_pubkey"), where=f"prevouts[{i}]")
        if not isinstance(p["script_pubkey"], str):
            raise InputError(f"prevouts[{i}].script_pubkey must be hex")
        out.append(
            Prevout(
                p["txid"],
                p["vout"],
                parse_amount(p["amount"], where=f"prevouts[{i}].amount"),
                bytes.fromhex(p["script_pubkey"]),
            )
        )
    return out


def prevouts_to_json(prevouts: Iterable[Prevout]) -> list[dict[str, Any]]:
    return [
        {"txid": p.txid, "vout": p.vout, "amount": str(p.amount), "script_pubkey": p.script_pubkey.hex()}
        for p in prevouts
    ]


class BitcoinTx:
    """P2WPKH spends of the outputs an intent proves by their previous transactions."""

    def own_address(self, public_key: bytes, network: str) -> str:
        return p2wpkh_address(public_key, network)

    def token(self, asset: str) -> str | None:
        return None if asset == Bitcoin.native_asset else asset

    def token_key(self, token: str) -> str:
        return token

    def build(self, intent: BitcoinIntent, public_key: bytes) -> BuiltTx:
        assert intent.fee_rate is not None  # noqa: S101 - parse_intent guarantees it
        u = build_p2wpkh_spend(
            from_pubkey=public_key,
            prevouts=[x.prevout for x in intent.utxos],
            destination=intent.destination,
            amount=intent.amount,
            fee_rate=intent.fee_rate,
            network=intent.network,
        )
        return BuiltTx(u.raw, tuple(prevouts_to_json(u.prevouts)), u.fee, u.change)

    def decode(
        self, intent: BitcoinIntent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        # Amounts and scripts come from the intent's previous transactions; prevouts given
        # beside the bytes (by the server, say) must agree with them or nothing is shown.
        proven = [u.prevout for u in intent.utxos]
        given = prevouts_from_json(list(prevouts))
        if len(given) != len(proven):
            raise VerificationError(f"{len(given)} prevouts shown for {len(proven)} inputs the intent proves")
        for i, (g, p) in enumerate(zip(given, proven, strict=True)):
            if g != p:
                raise VerificationError(
                    f"prevout {i} ({g.txid}:{g.vout}) says {g.amount} sats to {g.script_pubkey.hex()}; "
                    f"its previous transaction holds {p.amount} sats to {p.script_pubkey.hex()}"
                )
        review = decode_for_review(unsigned, proven, intent.network, change_address=intent.from_address)
        pay = [o for o in review["outputs"] if not o["is_change"]]
        change = sum(int(o["amount"]) for o in review["outputs"] if o["is_change"])
        return {
            "chain": "bitcoin",
            "network": intent.network,
            "chain_id": None,
            "from": intent.from_address,
            "to": pay[0]["address"] if len(pay) == 1 else [o["address"] for o in pay],
            "amount": str(sum(int(o["amount"]) for o in pay)),
            "asset": "BTC",
            "token": None,
            "fee": review["fee"],
            "change": str(change),
            "txid": review["txid"],
            "inputs": review["inputs"],
            "outputs": review["outputs"],
            "vsize": review["vsize"],
        }

    def mismatches(self, intent: BitcoinIntent, view: Mapping[str, Any]) -> list[str]:
        problems = []
        pay = [o for o in view["outputs"] if not o["is_change"]]
        if len(pay) != 1:
            problems.append(
                f"the transaction pays {len(pay)} outputs outside the wallet; the intent names one"
            )
        elif pay[0]["address"] != intent.destination:
            problems.append(f"destination is {pay[0]['address']}, the intent says {intent.destination}")
        if view["amount"] != str(intent.amount):
            problems.append(f"amount is {view['amount']}, the intent says {intent.amount}")
        spent = [(i["txid"], i["vout"]) for i in view["inputs"]]
        if spent != [(u.txid, u.vout) for u in intent.utxos]:
            problems.append("the transaction spends other outputs than the intent lists")
        return problems

    def fee(self, intent: BitcoinIntent, view: Mapping[str, Any]) -> Fee:
        """Inputs - outputs (input amounts from the prevouts the signatures commit to), at
        the higher of the stated and the effective sat/vB."""
        amount = int(view["fee"])
        vsize = int(view["vsize"])
        effective = -(-amount // vsize) if vsize > 0 else amount
        return Fee(amount=amount, asset=Bitcoin.native_asset, rate=max(intent.fee_rate or 0, effective))

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]:
        return sign_p2wpkh_spend(unsigned, prevouts_from_json(list(prevouts)), private_key)

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        tx = parse_transaction(signed)
        if tx.serialize(include_witness=False) != unsigned:
            raise VerificationError("the signed transaction is not the approved unsigned transaction")
        for i, prev in enumerate(prevouts_from_json(list(prevouts))):
            verify_p2wpkh_input(signed, i, prev)
        return tx.txid


class Bitcoin:
    name: ClassVar[str] = "bitcoin"
    native_asset: ClassVar[str] = "BTC"
    curve: ClassVar[Curve] = "secp256k1"
    networks: ClassVar[frozenset[str]] = frozenset(NETWORKS)

    @property
    def tx(self) -> BitcoinTx:
        return _BITCOIN_TX

    def address(self, public_key: bytes, network: str) -> str:
        return p2wpkh_address(public_key, network)

    def validate_address(self, address: str, network: str) -> str:
        return validate_address(address, network)

    def sign_message(
        self, private_key: bytes, address: str, message: str, network: str, *, public_key: bytes | None = None
    ) -> MessageProof:
        decoded = _decode_for_signing(address, network)
        kind = decoded.kind
        if kind == "p2wpkh":
            signature = _sign_bip322_decoded(private_key, decoded, message, public_key)
            return MessageProof("bip322-simple", signature)
        if kind == "p2pkh":
            return MessageProof("bip137", sign_bip137(private_key, address, message, network))
        raise InputError(f"message signing is not supported for {kind} addresses")

    def verify_message(
        self,
        address: str,
        message: str,
        proof: MessageProof,
        network: str,
        public_key: bytes | None = None,
    ) -> None:
        decoded = decode_address(address, network)
        _require_kind(decoded, ("p2wpkh", "p2pkh", "p2sh"), "message verification")
        given = None if public_key is None else _given_key(decoded, public_key)
        if proof.format == "bip322-simple":
            _verify_bip322_decoded(decoded, message, proof.signature, given)
        elif proof.format == "bip137":
            verify_bip137(address, message, proof.signature, network)
        else:
            raise CannotVerifyError(f"{proof.format!r} proofs are not checked for bitcoin")


_BITCOIN_TX = BitcoinTx()
BITCOIN = Bitcoin()
