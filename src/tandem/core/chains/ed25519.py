"""Ed25519 keys, signatures and the base58 addresses Solana names them by.

The private key handled here is always the 32-byte Ed25519 seed (RFC 8032's "secret
key"). :mod:`.solana` (message proofs) and :mod:`.solana_tx` (transactions) both build
on this module; ``solana`` names its functions too.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.signing

from tandem.core.chains.base58 import b58decode, b58encode
from tandem.errors import CryptoError, InputError, InvalidAddressError, VerificationError

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64
# Ed25519 group order; a signature whose S is not below it is malleable.
ED25519_L = 2**252 + 27742317777372353535851937790883648493


# --- keys and addresses ----------------------------------------------------------------


def check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise CryptoError("an Ed25519 private key is a 32-byte seed")


def public_key_from_seed(seed: bytes) -> bytes:
    check_seed(seed)
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def is_on_curve(public_key: bytes) -> bool:
    """Canonical encoding of a point of the prime-order subgroup, not of small order."""
    return len(public_key) == PUBLIC_KEY_LEN and bool(
        nacl.bindings.crypto_core_ed25519_is_valid_point(public_key)
    )


def address_from_public_key(public_key: bytes) -> str:
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_LEN:
        raise CryptoError("an Ed25519 public key is 32 bytes")
    return b58encode(public_key)


def public_key_from_address(address: str, *, require_on_curve: bool = False) -> bytes:
    """The 32 bytes an address encodes. ``require_on_curve`` is for addresses of our own
    keys: program-derived addresses are deliberately off the curve and have no key."""
    try:
        raw = b58decode(address)
    except InputError as exc:
        raise InvalidAddressError(f"Solana address is not base58: {exc.message}") from None
    if len(raw) != PUBLIC_KEY_LEN:
        raise InvalidAddressError(f"Solana address decodes to {len(raw)} bytes, not 32")
    if require_on_curve and not is_on_curve(raw):
        raise InvalidAddressError("Solana address is not an Ed25519 public key")
    return raw


def validate_address(address: str, *, require_on_curve: bool = False) -> str:
    return b58encode(public_key_from_address(address, require_on_curve=require_on_curve))


# --- Ed25519 ---------------------------------------------------------------------------


def sign_ed25519(seed: bytes, data: bytes) -> bytes:
    check_seed(seed)
    return bytes(nacl.signing.SigningKey(seed).sign(data).signature)


def verify_ed25519(public_key: bytes, data: bytes, signature: bytes) -> None:
    """Raise VerificationError unless ``signature`` is a canonical signature of ``data``."""
    if len(public_key) != PUBLIC_KEY_LEN:
        raise VerificationError("an Ed25519 public key is 32 bytes")
    if len(signature) != SIGNATURE_LEN:
        raise VerificationError(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    # libsodium refuses S >= L too; checking here gives the refusal its own message.
    if int.from_bytes(signature[32:], "little") >= ED25519_L:
        raise VerificationError("Ed25519 signature S is not reduced (non-canonical)")
    try:
        nacl.signing.VerifyKey(public_key).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        raise VerificationError("Ed25519 signature does not verify") from None
