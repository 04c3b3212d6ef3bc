"""Solana: Ed25519 keys, base58 addresses and off-chain message proofs.

Proofs of control use the off-chain message format of the Agave proposal
``docs/src/proposals/off-chain-message-signing.md``, header version 0: the signing
domain ``b"\\xffsolana offchain"`` (a first byte no transaction message can start with,
so the signature can never be replayed as a transaction), the version, a 32-byte
application domain, the message format, the signer public keys, a little-endian u16
length and the message. Naming the signer inside the signed bytes ties the proof to
the address it speaks for. ``docs/adr/0005-solana-offchain-format.md`` explains why
this layout and not the shorter one the ``solana-offchain-message`` crate ships; that
one is available as :func:`serialize_offchain_message_legacy` for interoperability.

The private key handled here is always the 32-byte Ed25519 seed (RFC 8032's "secret
key"), never the 64-byte seed-and-public-key form that Solana keypair files hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

import nacl.bindings
import nacl.exceptions
import nacl.signing

from tandem.core.chains.base import Curve, MessageProof, check_network
from tandem.core.chains.base58 import b58decode, b58encode
from tandem.core.chains.ed25519 import (
    ED25519_L,
    PUBLIC_KEY_LEN,
    SIGNATURE_LEN,
    address_from_public_key,
    check_seed,
    is_on_curve,
    public_key_from_address,
    public_key_from_seed,
    sign_ed25519,
    validate_address,
    verify_ed25519,
)
from tandem.core.chains.solana_tx import SOLANA_TX, SolanaTx
from tandem.errors import (
    CannotVerifyError,
    CryptoError,
    InputError,
    VerificationError,
)

# The key functions are ed25519's, named here too: callers reach them as ``solana.*``.
__all__ = [
    "APPLICATION_DOMAIN_LEN",
    "ED25519_L",
    "HEADER_VERSION",
    "MAX_TOTAL_LEN_EXTENDED",
    "MAX_TOTAL_LEN_LEDGER",
    "PROOF_FORMAT",
    "PUBLIC_KEY_LEN",
    "SIGNATURE_LEN",
    "SIGNING_DOMAIN",
    "SOLANA",
    "MessageFormat",
    "OffchainMessage",
    "Solana",
    "SolanaTx",
    "address_from_public_key",
    "check_seed",
    "is_on_curve",
    "message_format_for",
    "parse_offchain_message",
    "public_key_from_address",
    "public_key_from_seed",
    "serialize_offchain_message",
    "serialize_offchain_message_legacy",
    "sign_ed25519",
    "validate_address",
    "verify_ed25519",
]

SIGNING_DOMAIN = b"\xffsolana offchain"
HEADER_VERSION = 0
APPLICATION_DOMAIN_LEN = 32
# Formats 0 and 1 must fit, preamble included, in the 1232 bytes a hardware wallet
# takes in one packet (the IPv6 minimum MTU less headers); format 2 in a u16.
MAX_TOTAL_LEN_LEDGER = 1232
MAX_TOTAL_LEN_EXTENDED = 0xFFFF

PROOF_FORMAT = "solana-offchain-v0"


class MessageFormat(IntEnum):
    RESTRICTED_ASCII = 0
    LIMITED_UTF8 = 1
    EXTENDED_UTF8 = 2


def _preamble_len(signer_count: int) -> int:
    """Signing domain, version, application domain, format, signer count, signers, length."""
    return len(SIGNING_DOMAIN) + 1 + APPLICATION_DOMAIN_LEN + 1 + 1 + 32 * signer_count + 2


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def _is_restricted_ascii(message: bytes) -> bool:
    # Header version 0 admits only isprint(3) characters; the newline was added in
    # version 1 and a version-0 verifier must refuse it in format 0.
    return not message.translate(None, _PRINTABLE_ASCII)


def _is_utf8(message: bytes) -> bool:
    try:
        message.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def message_format_for(message: bytes, *, signer_count: int = 1) -> MessageFormat:
    """The format a version-0 message of these bytes must declare.

    The narrowest that fits: restricted ASCII, else UTF-8 while the whole serialised
    message stays within the hardware-wallet limit, else extended UTF-8.
    """
    if not message:
        raise InputError("an off-chain message must not be empty")
    total = _preamble_len(signer_count) + len(message)
    if total <= MAX_TOTAL_LEN_LEDGER:
        if _is_restricted_ascii(message):
            return MessageFormat.RESTRICTED_ASCII
        if _is_utf8(message):
            return MessageFormat.LIMITED_UTF8
    elif total <= MAX_TOTAL_LEN_EXTENDED:
        if _is_utf8(message):
            return MessageFormat.EXTENDED_UTF8
    else:
        raise InputError(
            f"off-chain message of {len(message)} bytes exceeds the "
            f"{MAX_TOTAL_LEN_EXTENDED}-byte limit of format 2"
        )
    raise InputError("off-chain message is not valid UTF-8")


def _check_application_domain(application_domain: bytes) -> None:
    if not isinstance(application_domain, bytes) or len(application_domain) != 32:
        raise InputError("the application domain is exactly 32 bytes")


def _check_signers(signers: Sequence[bytes]) -> None:
    if not 1 <= len(signers) <= 255:
        raise InputError("an off-chain message names between 1 and 255 signers")
    for signer in signers:
        if not isinstance(signer, bytes) or len(signer) != PUBLIC_KEY_LEN:
            raise InputError("each off-chain message signer is a 32-byte public key")


def serialize_offchain_message(
    message: bytes,
    *,
    signers: Sequence[bytes],
    application_domain: bytes = bytes(APPLICATION_DOMAIN_LEN),
) -> bytes:
    """The bytes signed for a header-version-0 off-chain message (proposal layout)."""
    _check_application_domain(application_domain)
    _check_signers(signers)
    fmt = message_format_for(message, signer_count=len(signers))
    return b"".join(
        [
            SIGNING_DOMAIN,
            bytes([HEADER_VERSION]),
            application_domain,
            bytes([fmt]),
            bytes([len(signers)]),
            *signers,
            len(message).to_bytes(2, "little"),
            message,
        ]
    )


@dataclass(frozen=True)
class OffchainMessage:
    application_domain: bytes
    format: MessageFormat
    signers: tuple[bytes, ...]
    message: bytes


def parse_offchain_message(data: bytes) -> OffchainMessage:
    """Strictly parse proposal-layout version-0 bytes.

    The declared format must be the one :func:`message_format_for` picks, so that each
    message has one serialisation and a payload can be compared byte for byte.
    """
    fixed = _preamble_len(0)
    if len(data) < fixed:
        raise InputError("off-chain message shorter than its preamble")
    if data[: len(SIGNING_DOMAIN)] != SIGNING_DOMAIN:
        raise InputError("off-chain message does not start with the signing domain")
    pos = len(SIGNING_DOMAIN)
    if data[pos] != HEADER_VERSION:
        raise InputError(f"off-chain message header version {data[pos]} is not supported")
    pos += 1
    application_domain = data[pos : pos + APPLICATION_DOMAIN_LEN]
    pos += APPLICATION_DOMAIN_LEN
    declared = data[pos]
    signer_count = data[pos + 1]
    pos += 2
    if signer_count == 0:
        raise InputError("off-chain message names no signers")
    if len(data) < _preamble_len(signer_count):
        raise InputError("off-chain message shorter than its preamble")
    signers = tuple(
        data[pos + i * PUBLIC_KEY_LEN : pos + (i + 1) * PUBLIC_KEY_LEN] for i in range(signer_count)
    )
    pos += signer_count * PUBLIC_KEY_LEN
    length = int.from_bytes(data[pos : pos + 2], "little")
    pos += 2
    message = data[pos:]
    if length == 0 or len(message) != length:
        raise InputError(f"off-chain message length field says {length} bytes, body has {len(message)}")
    expected = message_format_for(message, signer_count=signer_count)
    if declared != expected:
        raise InputError(
            f"off-chain message declares format {declared}; its content requires {int(expected)}"
        )
    return OffchainMessage(
        application_domain=application_domain, format=expected, signers=signers, message=message
    )


# The ``solana-offchain-message`` crate up to 3.0.0 (and ``solana sign-offchain-message``
# built on it) writes version 0 without the application domain and signers.
_LEGACY_MAX_LEN_LEDGER = MAX_TOTAL_LEN_LEDGER - len(SIGNING_DOMAIN) - 1 - 3
_LEGACY_MAX_LEN = MAX_TOTAL_LEN_EXTENDED - len(SIGNING_DOMAIN) - 1 - 3


def serialize_offchain_message_legacy(message: bytes) -> bytes:
    """Signing domain, version 0, format, u16 LE length, message: the crate's shipped layout."""
    if not message:
        raise InputError("an off-chain message must not be empty")
    if len(message) <= _LEGACY_MAX_LEN_LEDGER and _is_restricted_ascii(message):
        fmt = MessageFormat.RESTRICTED_ASCII
    elif len(message) <= _LEGACY_MAX_LEN_LEDGER and _is_utf8(message):
        fmt = MessageFormat.LIMITED_UTF8
    elif len(message) <= _LEGACY_MAX_LEN and _is_utf8(message):
        fmt = MessageFormat.EXTENDED_UTF8
    elif len(message) > _LEGACY_MAX_LEN:
        raise InputError(f"off-chain message longer than {_LEGACY_MAX_LEN} bytes")
    else:
        raise InputError("off-chain message is not valid UTF-8")
    return SIGNING_DOMAIN + bytes([HEADER_VERSION, fmt]) + len(message).to_bytes(2, "little") + message


# --- the Chain implementation ----------------------------------------------------------


class Solana:
    name: ClassVar[str] = "solana"
    native_asset: ClassVar[str] = "SOL"
    curve: ClassVar[Curve] = "ed25519"
    networks: ClassVar[frozenset[str]] = frozenset({"mainnet", "devnet", "testnet"})

    @property
    def tx(self) -> SolanaTx:
        return SOLANA_TX

    def address(self, public_key: bytes, network: str) -> str:
        check_network(self, network)
        if not isinstance(public_key, bytes) or not is_on_curve(public_key):
            raise CryptoError("not a valid Ed25519 public key")
        return address_from_public_key(public_key)

    def validate_address(self, address: str, network: str, *, require_on_curve: bool = False) -> str:
        check_network(self, network)
        return validate_address(address, require_on_curve=require_on_curve)

    def sign_message(
        self,
        private_key: bytes,
        address: str,
        message: str,
        network: str,
        *,
        application_domain: bytes = bytes(APPLICATION_DOMAIN_LEN),
        public_key: bytes | None = None,
    ) -> MessageProof:
        check_network(self, network)
        check_seed(private_key)
        key = nacl.signing.SigningKey(private_key)  # one key derivation for both uses
        public_key = bytes(key.verify_key)
        if public_key != public_key_from_address(address):
            raise CryptoError(f"the signing key does not control {address}")
        payload = serialize_offchain_message(
            _utf8(message), signers=[public_key], application_domain=application_domain
        )
        signature = bytes(key.sign(payload).signature)
        return MessageProof(format=PROOF_FORMAT, signature=b58encode(signature), payload_hex=payload.hex())

    def verify_message(
        self,
        address: str,
        message: str,
        proof: MessageProof,
        network: str,
        public_key: bytes | None = None,
    ) -> None:
        check_network(self, network)
        if proof.format != PROOF_FORMAT:
            raise CannotVerifyError(f"Solana proofs are {PROOF_FORMAT}, not {proof.format!r}")
        signer = public_key_from_address(address)
        if public_key is not None and public_key != signer:
            raise VerificationError(f"the public key given is not the key of {address}")
        # The application domain is the one part of the signed bytes not derived from
        # the message and the address, so it is read from the payload when one is given.
        application_domain = bytes(APPLICATION_DOMAIN_LEN)
        payload: bytes | None = None
        if proof.payload_hex is not None:
            try:
                payload = bytes.fromhex(proof.payload_hex)
            except ValueError:
                raise VerificationError("payload_hex is not an off-chain message") from None
            application_domain = _application_domain(payload)
        expected = serialize_offchain_message(
            _utf8(message), signers=[signer], application_domain=application_domain
        )
        if payload is not None and payload != expected:
            # Equal to a serialisation means well-formed; otherwise say which it is not.
            try:
                parse_offchain_message(payload)
            except InputError:
                raise VerificationError("payload_hex is not an off-chain message") from None
            raise VerificationError("payload_hex is not the serialisation of this message")
        try:
            signature = b58decode(proof.signature)
        except InputError:
            raise VerificationError("signature is not base58") from None
        verify_ed25519(signer, expected, signature)


_DOMAIN_AT = len(SIGNING_DOMAIN) + 1  # after the signing domain and the header version


def _application_domain(payload: bytes) -> bytes:
    """The application domain a payload carries (zeros if it is too short to carry one):
    read in place, since the payload is then compared whole with the serialisation."""
    domain = payload[_DOMAIN_AT : _DOMAIN_AT + APPLICATION_DOMAIN_LEN]
    return domain if len(domain) == APPLICATION_DOMAIN_LEN else bytes(APPLICATION_DOMAIN_LEN)


def _utf8(message: str) -> bytes:
    try:
        return message.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("message is not encodable as UTF-8 (lone surrogate)") from None


SOLANA = Solana()
