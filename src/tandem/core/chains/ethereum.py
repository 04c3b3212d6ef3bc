"""Ethereum: EIP-55 addresses, EIP-1559 (type 2) transactions and EIP-191 proofs.

Tandem only ever releases two kinds of Ethereum transaction: a plain ether transfer and
an ERC-20 ``transfer(address,uint256)`` to a token contract the policy allows. The
decoder here is what a custodian's client runs on the raw unsigned bytes before it
approves, so it is deliberately narrow: strict RLP, no contract creation, no access
lists, no calldata other than that one call (the Bybit loss of February 2025 came from
approving a transaction whose calldata did something other than what the screen said).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from Crypto.Hash import keccak

from tandem.core.chains import rlp, secp256k1
from tandem.core.chains.base import BuiltTx, Curve, MessageProof, TxIntent, check_network
from tandem.core.policy import Fee
from tandem.errors import (
    CannotVerifyError,
    CryptoError,
    DisallowedContractCallError,
    InputError,
    InvalidAddressError,
    InvalidAmountError,
    InvalidTransactionError,
    VerificationError,
)

CHAIN_IDS: Mapping[str, int] = MappingProxyType({"mainnet": 1, "sepolia": 11155111, "holesky": 17000})
_NETWORK_BY_CHAIN_ID = {chain_id: name for name, chain_id in CHAIN_IDS.items()}

EIP1559_TX_TYPE = 0x02
ERC20_TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # keccak("transfer(address,uint256)")[:4]
ZERO_ADDRESS = b"\x00" * 20
UINT256_MAX = (1 << 256) - 1
# EIP-2681 bounds the nonce; gas is a 64-bit quantity in every client.
UINT64_MAX = (1 << 64) - 1
# The intrinsic cost of any transaction; less can never be mined.
MIN_GAS_LIMIT = 21_000
# Integers a JSON reader can hold exactly (RFC 8785 / I-JSON); larger ones go out as text.
_MAX_SAFE_INT = (1 << 53) - 1

EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
# An address as hex (any case): how an ERC-20 asset is named.
EVM_ADDRESS = re.compile(r"0[xX][0-9a-fA-F]{40}")
_SIGNATURE_HEX = re.compile(r"0x[0-9a-fA-F]{130}")


def _keccak256_pycryptodome(data: bytes) -> bytes:
    return bytes(keccak.new(digest_bits=256, data=data).digest())


def _keccak256_raw() -> Callable[[bytes], bytes] | None:
    """pycryptodome's Keccak core called directly through cffi: the same C code as
    :func:`_keccak256_pycryptodome` without its per-call object set-up, which costs as
    much as the hash on the short inputs every proof hashes (keys, addresses, messages).
    None where pycryptodome runs on another backend or the call does not give the
    known answer."""
    try:
        from Crypto.Hash.keccak import _raw_keccak_lib as lib  # type: ignore[attr-defined]
        from Crypto.Util import _raw_api

        if getattr(_raw_api, "backend", None) != "cffi":
            return None
        ffi = _raw_api.ffi
        # Capacity 512 bits (keccak-256), 24 rounds; padding byte 0x01 (Keccak, not SHA-3).
        init, absorb, digest = lib.keccak_init, lib.keccak_absorb, lib.keccak_digest
        destroy = lib.keccak_destroy
    except (ImportError, AttributeError):
        return None

    def keccak256_raw(data: bytes) -> bytes:
        state = ffi.new("void **")
        if init(state, 64, 24):
            raise CryptoError("keccak initialisation failed")
        try:
            out = ffi.new("uint8_t[32]")
            if absorb(state[0], bytes(data), len(data)) or digest(state[0], out, 32, 1):
                raise CryptoError("keccak failed")
            return bytes(ffi.buffer(out))
        finally:
            destroy(state[0])

    samples = (b"", b"abc", bytes(range(256)) * 3)
    try:
        known = all(keccak256_raw(d) == _keccak256_pycryptodome(d) for d in samples)
    except Exception:  # any surprise here means: use the public API
        known = False
    return keccak256_raw if known else None


keccak256: Callable[[bytes], bytes] = _keccak256_raw() or _keccak256_pycryptodome


# --- addresses -------------------------------------------------------------------------

# EIP-55 without a loop over the characters: a hex letter (a-f) is upper-cased where the
# hash's hex digit at its place is 8 or more. Both tests become byte masks (0x20 where
# true), ANDed as integers and subtracted from the lower-case text: 0x20 is the case bit.
_LETTER_MASK = bytes.maketrans(b"0123456789abcdef", b"\x00" * 10 + b"\x20" * 6)
_HIGH_NIBBLE_MASK = bytes.maketrans(b"0123456789abcdef", b"\x00" * 8 + b"\x20" * 8)


def _checksum(address20: bytes) -> str:
    lower = address20.hex().encode("ascii")
    digest = keccak256(lower).hex()[:40].encode("ascii")
    upper = int.from_bytes(lower.translate(_LETTER_MASK), "big") & int.from_bytes(
        digest.translate(_HIGH_NIBBLE_MASK), "big"
    )
    return "0x" + (int.from_bytes(lower, "big") - upper).to_bytes(40, "big").decode("ascii")


def parse_address(address: str) -> bytes:
    """The 20 bytes of a typed address, enforcing EIP-55 whenever the case is mixed.

    All-lowercase and all-uppercase addresses carry no checksum and are accepted as they
    are; a mixed-case one claims a checksum and must match it, because a single mistyped
    character is exactly what the checksum exists to catch.
    """
    if not isinstance(address, str) or not _HEX40.fullmatch(address):
        raise InvalidAddressError("an Ethereum address is 0x followed by 40 hex digits")
    body = address[2:]
    raw = bytes.fromhex(body)
    if body not in (body.lower(), body.upper()) and _checksum(raw) != address:
        raise InvalidAddressError("Ethereum address has a wrong EIP-55 checksum")
    return raw


def to_checksum_address(address: str | bytes) -> str:
    """EIP-55 form of 20 raw bytes or of a typed address (checked as :func:`parse_address`)."""
    if isinstance(address, bytes):
        if len(address) != 20:
            raise InvalidAddressError("an Ethereum address is 20 bytes")
        return _checksum(address)
    return _checksum(parse_address(address))


def validate_address(address: str) -> str:
    """Checksummed form of a destination address; the zero address is refused."""
    raw = parse_address(address)
    if raw == ZERO_ADDRESS:
        raise InvalidAddressError("the zero address is not a valid destination")
    return _checksum(raw)


def address_from_public_key(public_key: bytes) -> str:
    """EIP-55 address of a compressed (33-byte) or uncompressed (65-byte) secp256k1 key."""
    point = secp256k1.uncompressed(public_key)
    return _checksum(keccak256(point[1:])[12:])


def address_from_private_key(private_key: bytes) -> str:
    return address_from_public_key(secp256k1.public_key(private_key, compressed=False))


# --- transactions ----------------------------------------------------------------------


@dataclass(frozen=True)
class AccessListEntry:
    address: str
    storage_keys: tuple[bytes, ...]


@dataclass(frozen=True)
class Eip1559Transaction:
    """A decoded type-2 transaction; the signature fields are ``None`` when unsigned."""

    chain_id: int
    nonce: int
    max_priority_fee_per_gas: int
    max_fee_per_gas: int
    gas_limit: int
    to: str | None  # None is contract creation
    value: int
    data: bytes
    access_list: tuple[AccessListEntry, ...]
    y_parity: int | None = None
    r: int | None = None
    s: int | None = None

    @property
    def is_signed(self) -> bool:
        return self.r is not None

    def _unsigned_fields(self) -> list[rlp.RlpEncodable]:
        to = bytes.fromhex(self.to[2:]) if self.to is not None else b""
        access: list[rlp.RlpEncodable] = [
            [bytes.fromhex(entry.address[2:]), list(entry.storage_keys)] for entry in self.access_list
        ]
        return [
            self.chain_id,
            self.nonce,
            self.max_priority_fee_per_gas,
            self.max_fee_per_gas,
            self.gas_limit,
            to,
            self.value,
            self.data,
            access,
        ]

    def unsigned_bytes(self) -> bytes:
        """0x02 || rlp(the nine unsigned fields): the bytes whose keccak is signed."""
        return bytes([EIP1559_TX_TYPE]) + rlp.encode(self._unsigned_fields())

    def signed_bytes(self) -> bytes:
        if self.y_parity is None or self.r is None or self.s is None:
            raise InvalidTransactionError("transaction is not signed")
        fields = [*self._unsigned_fields(), self.y_parity, self.r, self.s]
        return bytes([EIP1559_TX_TYPE]) + rlp.encode(fields)


def _require_uint(value: int, name: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidTransactionError(f"{name} must be an integer in [0, {maximum}]")
    return value


def _check_fees(max_priority_fee_per_gas: int, max_fee_per_gas: int, gas_limit: int) -> None:
    if max_priority_fee_per_gas > max_fee_per_gas:
        raise InvalidTransactionError("max_priority_fee_per_gas exceeds max_fee_per_gas")
    if gas_limit < MIN_GAS_LIMIT:
        raise InvalidTransactionError(f"gas_limit below the intrinsic {MIN_GAS_LIMIT}")


def build_eip1559(
    *,
    chain_id: int,
    nonce: int,
    max_priority_fee_per_gas: int,
    max_fee_per_gas: int,
    gas_limit: int,
    to: str,
    value: int,
    data: bytes = b"",
) -> bytes:
    """Unsigned type-2 transaction bytes with an empty access list."""
    if chain_id not in _NETWORK_BY_CHAIN_ID:
        raise InvalidTransactionError(f"unknown chain id {chain_id!r}")
    _require_uint(nonce, "nonce", UINT64_MAX)
    _require_uint(max_priority_fee_per_gas, "max_priority_fee_per_gas", UINT256_MAX)
    _require_uint(max_fee_per_gas, "max_fee_per_gas", UINT256_MAX)
    _require_uint(gas_limit, "gas_limit", UINT64_MAX)
    _check_fees(max_priority_fee_per_gas, max_fee_per_gas, gas_limit)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT256_MAX:
        raise InvalidAmountError("value must be an integer number of wei in [0, 2^256-1]")
    if not isinstance(data, bytes):
        raise InvalidTransactionError("data must be bytes")
    tx = Eip1559Transaction(
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=max_priority_fee_per_gas,
        max_fee_per_gas=max_fee_per_gas,
        gas_limit=gas_limit,
        to=validate_address(to),
        value=value,
        data=data,
        access_list=(),
    )
    return tx.unsigned_bytes()


def erc20_transfer_calldata(recipient: str, amount: int) -> bytes:
    """ABI calldata of ``transfer(recipient, amount)``."""
    to = parse_address(validate_address(recipient))
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= UINT256_MAX:
        raise InvalidAmountError("token amount must be an integer in [1, 2^256-1] base units")
    return ERC20_TRANSFER_SELECTOR + to.rjust(32, b"\x00") + amount.to_bytes(32, "big")


def _as_bytes(item: rlp.RlpItem, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise InvalidTransactionError(f"{name}: expected a byte string, found a list")
    return item


def _as_list(item: rlp.RlpItem, name: str) -> list[rlp.RlpItem]:
    if not isinstance(item, list):
        raise InvalidTransactionError(f"{name}: expected a list")
    return item


def _decode_access_list(item: rlp.RlpItem) -> tuple[AccessListEntry, ...]:
    entries = []
    for raw_entry in _as_list(item, "access_list"):
        entry = _as_list(raw_entry, "access_list entry")
        if len(entry) != 2:
            raise InvalidTransactionError("access_list entry must be [address, storage_keys]")
        address = _as_bytes(entry[0], "access_list address")
        if len(address) != 20:
            raise InvalidTransactionError("access_list address must be 20 bytes")
        keys = []
        for raw_key in _as_list(entry[1], "access_list storage_keys"):
            key = _as_bytes(raw_key, "access_list storage key")
            if len(key) != 32:
                raise InvalidTransactionError("access_list storage key must be 32 bytes")
            keys.append(key)
        entries.append(AccessListEntry(address=_checksum(address), storage_keys=tuple(keys)))
    return tuple(entries)


def decode_transaction(raw: bytes) -> Eip1559Transaction:
    """Decode an unsigned (9 fields) or signed (12 fields) type-2 transaction, strictly."""
    if not isinstance(raw, bytes) or not raw:
        raise InvalidTransactionError("transaction must be non-empty bytes")
    if raw[0] != EIP1559_TX_TYPE:
        raise InvalidTransactionError(f"transaction type 0x{raw[0]:02x} is not EIP-1559 (0x02)")
    fields = _as_list(rlp.decode(raw[1:]), "transaction")
    if len(fields) not in (9, 12):
        raise InvalidTransactionError(
            f"type-2 transaction has {len(fields)} fields; expected 9 (unsigned) or 12 (signed)"
        )
    chain_id = rlp.decode_uint(_as_bytes(fields[0], "chain_id"), field="chain_id")
    nonce = rlp.decode_uint(_as_bytes(fields[1], "nonce"), field="nonce", max_bytes=8)
    priority = rlp.decode_uint(
        _as_bytes(fields[2], "max_priority_fee_per_gas"), field="max_priority_fee_per_gas"
    )
    max_fee = rlp.decode_uint(_as_bytes(fields[3], "max_fee_per_gas"), field="max_fee_per_gas")
    gas_limit = rlp.decode_uint(_as_bytes(fields[4], "gas_limit"), field="gas_limit", max_bytes=8)
    to_raw = _as_bytes(fields[5], "to")
    if len(to_raw) not in (0, 20):
        raise InvalidTransactionError("to must be empty (contract creation) or 20 bytes")
    value = rlp.decode_uint(_as_bytes(fields[6], "value"), field="value")
    data = _as_bytes(fields[7], "data")
    access_list = _decode_access_list(fields[8])
    y_parity = r = s = None
    if len(fields) == 12:
        y_parity = rlp.decode_uint(_as_bytes(fields[9], "y_parity"), field="y_parity")
        r = rlp.decode_uint(_as_bytes(fields[10], "r"), field="r")
        s = rlp.decode_uint(_as_bytes(fields[11], "s"), field="s")
        if y_parity not in (0, 1):
            raise InvalidTransactionError("y_parity must be 0 or 1")
        if not 0 < r < secp256k1.ORDER or not 0 < s < secp256k1.ORDER:
            raise InvalidTransactionError("signature r or s out of range")
    return Eip1559Transaction(
        chain_id=chain_id,
        nonce=nonce,
        max_priority_fee_per_gas=priority,
        max_fee_per_gas=max_fee,
        gas_limit=gas_limit,
        to=_checksum(to_raw) if to_raw else None,
        value=value,
        data=data,
        access_list=access_list,
        y_parity=y_parity,
        r=r,
        s=s,
    )


def _decode_unsigned(raw_unsigned: bytes) -> Eip1559Transaction:
    tx = decode_transaction(raw_unsigned)
    if tx.is_signed:
        raise InvalidTransactionError("expected an unsigned transaction, got a signed one")
    return tx


def _safe_int(value: int, name: str) -> int:
    if value > _MAX_SAFE_INT:
        raise InvalidTransactionError(f"{name} is beyond the range Tandem reviews (2^53-1)")
    return value


def review(raw_unsigned: bytes, *, allowed_tokens: Collection[str]) -> dict[str, Any]:
    """What an unsigned transaction does, or a refusal if it does anything Tandem won't sign.

    Wei and token quantities are decimal strings (they routinely exceed 2^53); chain id,
    nonce and gas limit are JSON integers.
    """
    tx = _decode_unsigned(raw_unsigned)
    network = _NETWORK_BY_CHAIN_ID.get(tx.chain_id)
    if network is None:
        raise InvalidTransactionError(f"unknown chain id {tx.chain_id}")
    _check_fees(tx.max_priority_fee_per_gas, tx.max_fee_per_gas, tx.gas_limit)
    if tx.to is None:
        raise DisallowedContractCallError("contract creation is not allowed")
    if tx.access_list:
        raise DisallowedContractCallError("transactions with an access list are not allowed")
    tokens = {parse_address(token) for token in allowed_tokens}
    to_raw = bytes.fromhex(tx.to[2:])
    if to_raw == ZERO_ADDRESS:
        raise InvalidAddressError("the zero address is not a valid destination")

    view: dict[str, Any] = {
        "chain_id": tx.chain_id,
        "network": network,
        "nonce": _safe_int(tx.nonce, "nonce"),
        "to": tx.to,
        "value": str(tx.value),
        "gas_limit": _safe_int(tx.gas_limit, "gas_limit"),
        "max_fee_per_gas": str(tx.max_fee_per_gas),
        "max_priority_fee_per_gas": str(tx.max_priority_fee_per_gas),
        "max_fee": str(tx.gas_limit * tx.max_fee_per_gas),
    }
    if to_raw in tokens and tx.value != 0:
        # Ether sent to a token contract is at best lost and at worst a call into its
        # fallback (WETH turns it into a deposit): never part of a withdrawal.
        raise DisallowedContractCallError("ether value sent to a token contract")
    if not tx.data:
        if tx.value == 0:
            raise InvalidAmountError("a native transfer of zero wei is not a withdrawal")
        view["kind"] = "native"
        return view

    selector = tx.data[:4].hex()
    if to_raw not in tokens:
        raise DisallowedContractCallError(
            f"calldata (selector 0x{selector}) to {tx.to}, which is not an allowed token"
        )
    if tx.data[:4] != ERC20_TRANSFER_SELECTOR:
        raise DisallowedContractCallError(
            f"only ERC-20 transfer(address,uint256) is allowed; selector is 0x{selector}"
        )
    if len(tx.data) != 68:
        raise DisallowedContractCallError(f"ERC-20 transfer calldata must be 68 bytes, got {len(tx.data)}")
    address_word, amount_word = tx.data[4:36], tx.data[36:68]
    if address_word[:12] != b"\x00" * 12:
        raise DisallowedContractCallError("ERC-20 recipient word has non-zero high bytes")
    recipient_raw = address_word[12:]
    if recipient_raw == ZERO_ADDRESS:
        raise InvalidAddressError("the zero address is not a valid destination")
    amount = int.from_bytes(amount_word, "big")
    if amount == 0:
        raise InvalidAmountError("an ERC-20 transfer of zero is not a withdrawal")
    view.update(
        kind="erc20-transfer",
        token=tx.to,
        recipient=_checksum(recipient_raw),
        token_amount=str(amount),
    )
    return view


def signing_hash(raw_unsigned: bytes) -> bytes:
    """keccak256 of the unsigned type-2 bytes (after checking they decode strictly)."""
    _decode_unsigned(raw_unsigned)
    return keccak256(raw_unsigned)


def _check_private_key(private_key: bytes) -> None:
    if not isinstance(private_key, bytes) or not secp256k1.is_valid_private_key(private_key):
        raise CryptoError("not a valid secp256k1 private key")


def sign_eip1559(raw_unsigned: bytes, private_key: bytes) -> tuple[bytes, str]:
    """Signed raw transaction and its hash (0x-hex), RFC 6979 and low-S."""
    _check_private_key(private_key)
    tx = _decode_unsigned(raw_unsigned)
    r, s, recovery_id = secp256k1.sign_digest_recoverable(private_key, keccak256(raw_unsigned))
    if recovery_id not in (0, 1):
        # Only possible when r overflowed the group order (probability ~2^-127); the
        # type-2 signature has no room to say so.
        raise CryptoError("signature needs a recovery id beyond y-parity; not encodable")
    signed = replace(tx, y_parity=recovery_id, r=r, s=s).signed_bytes()
    return signed, "0x" + keccak256(signed).hex()


def transaction_hash(signed_raw: bytes) -> str:
    if not decode_transaction(signed_raw).is_signed:
        raise InvalidTransactionError("transaction is not signed")
    return "0x" + keccak256(signed_raw).hex()


def recover_sender(signed_raw: bytes) -> str:
    """Checksum address that signed a type-2 transaction; high-S is refused."""
    tx = decode_transaction(signed_raw)
    if tx.y_parity is None or tx.r is None or tx.s is None:
        raise InvalidTransactionError("transaction is not signed")
    digest = keccak256(tx.unsigned_bytes())
    public_key = secp256k1.recover_public_key(digest, tx.r, tx.s, tx.y_parity)
    return address_from_public_key(public_key)


# --- EIP-191 personal_sign ---------------------------------------------------------------


def eip191_hash(message: bytes) -> bytes:
    """keccak256("\\x19Ethereum Signed Message:\\n" + decimal length + message)."""
    return keccak256(EIP191_PREFIX + str(len(message)).encode("ascii") + message)


def sign_personal_message(private_key: bytes, message: bytes) -> str:
    """65-byte r || s || v (v in {27, 28}) as 0x-hex, as wallets' personal_sign returns."""
    _check_private_key(private_key)
    r, s, recovery_id = secp256k1.sign_digest_recoverable(private_key, eip191_hash(message))
    if recovery_id not in (0, 1):
        raise CryptoError("signature needs a recovery id beyond 27/28; not encodable")
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + recovery_id])
    return "0x" + signature.hex()


def recover_personal_signer(message: bytes, signature: str) -> str:
    """Checksum address that made an EIP-191 signature; raises VerificationError if none."""
    return _checksum(_recover_personal_signer_raw(message, signature))


def _address20(public_key: bytes) -> bytes:
    return keccak256(secp256k1.uncompressed(public_key)[1:])[12:]


# A key set signs the same addresses challenge after challenge: this many keys and
# addresses keep their 20 bytes. Only public data is held.
_SIGNING_CACHE_SIZE = 1 << 14


@functools.lru_cache(maxsize=_SIGNING_CACHE_SIZE)
def _key_address20(public_key: bytes) -> bytes:
    return _address20(public_key)


@functools.lru_cache(maxsize=_SIGNING_CACHE_SIZE)
def _signing_address20(address: str) -> bytes:
    return parse_address(address)


def _recover_personal_signer_raw(message: bytes, signature: str) -> bytes:
    return _address20(_recover_personal_key(message, signature))


def _recover_personal_key(message: bytes, signature: str) -> bytes:
    """Compressed public key that made an EIP-191 signature; raises VerificationError if none."""
    if not isinstance(signature, str) or not _SIGNATURE_HEX.fullmatch(signature):
        raise VerificationError("an EIP-191 signature is 0x followed by 130 hex digits")
    raw = bytes.fromhex(signature[2:])
    v = raw[64]
    if v not in (27, 28):
        raise VerificationError(f"EIP-191 signature v must be 27 or 28, got {v}")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:64], "big")
    return secp256k1.recover_public_key(eip191_hash(message), r, s, v - 27)


# --- the Chain implementation ----------------------------------------------------------


# --- withdrawals -----------------------------------------------------------------------


@dataclass(frozen=True)
class EthParams:
    chain_id: int
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    gas_limit: int


class EthereumIntent(TxIntent, Protocol):
    """What Ethereum transactions read of a withdrawal intent, besides the fields every chain reads."""

    @property
    def eth(self) -> EthParams | None: ...


class EthereumTx:
    """EIP-1559 transfers of ETH, or ``transfer()`` calls of the intent's own ERC-20."""

    def own_address(self, public_key: bytes, network: str) -> str:
        return address_from_public_key(public_key)

    def token(self, asset: str) -> str | None:
        return asset if EVM_ADDRESS.fullmatch(asset) else None

    def token_key(self, token: str) -> str:
        return token.lower()  # hex: case is only a checksum

    def build(self, intent: EthereumIntent, public_key: bytes) -> BuiltTx:
        p = intent.eth
        assert p is not None  # noqa: S101 - parse_intent guarantees it
        token = intent.token
        to, value, data = (
            (token, 0, erc20_transfer_calldata(intent.destination, intent.amount))
            if token
            else (intent.destination, intent.amount, b"")
        )
        raw = build_eip1559(
            chain_id=p.chain_id,
            nonce=p.nonce,
            max_priority_fee_per_gas=p.max_priority_fee_per_gas,
            max_fee_per_gas=p.max_fee_per_gas,
            gas_limit=p.gas_limit,
            to=to,
            value=value,
            data=data,
        )
        return BuiltTx(raw, (), p.gas_limit * p.max_fee_per_gas, 0)

    def decode(
        self, intent: EthereumIntent, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        if prevouts:
            raise InputError("an Ethereum transaction has no prevouts")
        # Only the intent's own token may be called, and only with transfer(); review()
        # refuses every other call, contract creation and access lists.
        r = review(unsigned, allowed_tokens=[intent.token] if intent.token else [])
        token = r.get("token")
        return {
            "chain": "ethereum",
            "network": r["network"],
            "chain_id": r["chain_id"],
            "from": intent.from_address,
            "to": r["recipient"] if token else r["to"],
            "amount": r["token_amount"] if token else r["value"],
            "asset": token or "ETH",
            "token": token,
            "fee": r["max_fee"],
            "change": None,
            "kind": r["kind"],
            "nonce": r["nonce"],
            "gas_limit": r["gas_limit"],
            "max_fee_per_gas": r["max_fee_per_gas"],
            "max_priority_fee_per_gas": r["max_priority_fee_per_gas"],
            "value": r["value"],
            "contract": r["to"] if token else None,
        }

    def mismatches(self, intent: EthereumIntent, view: Mapping[str, Any]) -> list[str]:
        p = intent.eth
        assert p is not None  # noqa: S101
        problems = []
        if view["network"] != intent.network or view["chain_id"] != p.chain_id:
            problems.append(
                f"chain id is {view['chain_id']}, the intent says {p.chain_id} ({intent.network})"
            )
        if (view["to"] or "").lower() != intent.destination.lower():
            problems.append(f"destination is {view['to']}, the intent says {intent.destination}")
        if view["amount"] != str(intent.amount):
            problems.append(f"amount is {view['amount']}, the intent says {intent.amount}")
        if (view["token"] or "ETH").lower() != intent.asset.lower():
            problems.append(f"asset is {view['token'] or 'ETH'}, the intent says {intent.asset}")
        for key in ("nonce", "gas_limit"):
            if view[key] != getattr(p, key):
                problems.append(f"{key} is {view[key]}, the intent says {getattr(p, key)}")
        for key in ("max_fee_per_gas", "max_priority_fee_per_gas"):
            if view[key] != str(getattr(p, key)):
                problems.append(f"{key} is {view[key]}, the intent says {getattr(p, key)}")
        return problems

    def fee(self, intent: EthereumIntent, view: Mapping[str, Any]) -> Fee:
        """gas_limit x max_fee_per_gas, at max_fee_per_gas, with the priority fee beside it."""
        return Fee(
            amount=int(view["fee"]),
            asset=Ethereum.native_asset,
            rate=int(view["max_fee_per_gas"]),
            priority_rate=int(view["max_priority_fee_per_gas"]),
        )

    def sign(
        self, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], private_key: bytes
    ) -> tuple[bytes, str]:
        return sign_eip1559(unsigned, private_key)

    def check_signed(
        self, signed: bytes, unsigned: bytes, prevouts: Sequence[Mapping[str, Any]], from_address: str
    ) -> str:
        tx = decode_transaction(signed)
        if not tx.is_signed or tx.unsigned_bytes() != unsigned:
            raise VerificationError("the signed transaction is not the approved unsigned transaction")
        sender = recover_sender(signed)
        if sender.lower() != from_address.lower():
            raise VerificationError(f"the transaction is signed by {sender}, not by {from_address}")
        return transaction_hash(signed)


class Ethereum:
    name: ClassVar[str] = "ethereum"
    native_asset: ClassVar[str] = "ETH"
    curve: ClassVar[Curve] = "secp256k1"
    networks: ClassVar[frozenset[str]] = frozenset(CHAIN_IDS)

    @property
    def tx(self) -> EthereumTx:
        return _ETHEREUM_TX

    def address(self, public_key: bytes, network: str) -> str:
        check_network(self, network)
        return address_from_public_key(public_key)

    def validate_address(self, address: str, network: str) -> str:
        check_network(self, network)
        return validate_address(address)

    def sign_message(
        self, private_key: bytes, address: str, message: str, network: str, *, public_key: bytes | None = None
    ) -> MessageProof:
        check_network(self, network)
        # A key set's private key is decrypted under an AEAD binding its public key (and
        # was checked against it when sealed), so a public key handed in with it is the
        # key's own; without one it is derived here.
        if public_key is None:
            public_key = secp256k1.public_key_fast(private_key, compressed=False)
        if _key_address20(bytes(public_key)) != _signing_address20(address):
            raise CryptoError(f"the signing key does not control {address}")
        key = secp256k1.signing_key(private_key)
        sig = key.sign_recoverable(eip191_hash(message.encode("utf-8")), hasher=None)
        if sig[64] not in (0, 1):
            raise CryptoError("signature needs a recovery id beyond 27/28; not encodable")
        return MessageProof(format="eip191", signature="0x" + (sig[:64] + bytes([27 + sig[64]])).hex())

    def verify_message(
        self,
        address: str,
        message: str,
        proof: MessageProof,
        network: str,
        public_key: bytes | None = None,
    ) -> None:
        check_network(self, network)
        if proof.format != "eip191":
            raise CannotVerifyError(f"Ethereum proofs are eip191, not {proof.format!r}")
        # Raw 20-byte comparisons; checksummed spellings only for the messages.
        expected = parse_address(address)
        given: bytes | None = None
        if public_key is not None:
            try:
                point = secp256k1.uncompressed(public_key)
            except CryptoError:
                raise VerificationError("the public key given is not a secp256k1 key") from None
            if keccak256(point[1:])[12:] != expected:
                raise VerificationError(f"the public key given is not the key of {_checksum(expected)}")
            given = bytes([2 + (point[64] & 1)]) + point[1:33]  # its compressed form
        recovered_key = _recover_personal_key(message.encode("utf-8"), proof.signature)
        # The key given is the address's: recovering that same key proves the address.
        if recovered_key == given:
            return
        recovered = _address20(recovered_key)
        if recovered != expected:
            raise VerificationError(f"signature is by {_checksum(recovered)}, not {_checksum(expected)}")


_ETHEREUM_TX = EthereumTx()
ETHEREUM = Ethereum()
