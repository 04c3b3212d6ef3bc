"""secp256k1 primitives shared by Bitcoin and Ethereum (coincurve / libsecp256k1).

libsecp256k1 signs with RFC 6979 deterministic nonces and always emits low-S
signatures; its verifier refuses high-S ones. We still check low-S explicitly on
signatures that come from outside, so the refusal carries our own error code.
"""

from __future__ import annotations

import coincurve
from coincurve.context import GLOBAL_CONTEXT

from tandem.errors import CryptoError, VerificationError

ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = ORDER // 2


def is_valid_private_key(private_key: bytes) -> bool:
    if len(private_key) != 32:
        return False
    k = int.from_bytes(private_key, "big")
    return 0 < k < ORDER


class _Signer(coincurve.PrivateKey):
    """A private key that only signs. coincurve's constructor derives two public keys (the
    ECDSA and the x-only one), two scalar multiplications that signing never uses; its
    ``sign`` methods read only ``secret`` and ``context``."""

    def __init__(self, secret: bytes) -> None:  # skips the derivations on purpose
        self.secret = secret
        self.context = GLOBAL_CONTEXT


def signing_key(private_key: bytes) -> coincurve.PrivateKey:
    """A key to sign with, without deriving its public keys (see :func:`public_key`)."""
    if not is_valid_private_key(private_key):
        raise CryptoError("not a valid secp256k1 private key")
    return _Signer(private_key)


def public_key_fast(private_key: bytes, *, compressed: bool = True) -> bytes:
    """:func:`public_key` with one scalar multiplication instead of coincurve's two."""
    if not is_valid_private_key(private_key):
        raise CryptoError("not a valid secp256k1 private key")
    return bytes(coincurve.PublicKey.from_valid_secret(private_key).format(compressed=compressed))


def public_key(private_key: bytes, *, compressed: bool = True) -> bytes:
    if not is_valid_private_key(private_key):
        raise CryptoError("not a valid secp256k1 private key")
    return bytes(coincurve.PrivateKey(private_key).public_key.format(compressed=compressed))


def uncompressed(public_key_bytes: bytes) -> bytes:
    try:
        return bytes(coincurve.PublicKey(public_key_bytes).format(compressed=False))
    except ValueError:
        raise CryptoError("not a valid secp256k1 public key") from None


def compressed(public_key_bytes: bytes) -> bytes:
    try:
        return bytes(coincurve.PublicKey(public_key_bytes).format(compressed=True))
    except ValueError:
        raise CryptoError("not a valid secp256k1 public key") from None


def sign_digest_der(private_key: bytes, digest32: bytes) -> bytes:
    """DER ECDSA signature over a 32-byte digest (RFC 6979 nonce, low-S)."""
    if len(digest32) != 32:
        raise CryptoError("digest must be 32 bytes")
    return bytes(coincurve.PrivateKey(private_key).sign(digest32, hasher=None))


def sign_digest_recoverable(private_key: bytes, digest32: bytes) -> tuple[int, int, int]:
    """``(r, s, recovery_id)`` over a 32-byte digest (RFC 6979 nonce, low-S)."""
    if len(digest32) != 32:
        raise CryptoError("digest must be 32 bytes")
    sig = coincurve.PrivateKey(private_key).sign_recoverable(digest32, hasher=None)
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    return r, s, sig[64]


def require_low_s(s: int) -> None:
    if not 0 < s <= HALF_ORDER:
        raise VerificationError("ECDSA signature has a high or zero S value (not canonical)")


def recover_public_key(digest32: bytes, r: int, s: int, recovery_id: int) -> bytes:
    """Compressed public key that made ``(r, s)`` over ``digest32``; raises if none."""
    require_low_s(s)
    if recovery_id not in (0, 1, 2, 3) or not 0 < r < ORDER:
        raise VerificationError("malformed recoverable signature")
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([recovery_id])
    try:
        pub = coincurve.PublicKey.from_signature_and_message(sig, digest32, hasher=None)
    except ValueError:
        raise VerificationError("signature does not recover to a public key") from None
    return bytes(pub.format(compressed=True))


def verify_digest_der(
    public_key_bytes: bytes, der: bytes, digest32: bytes, *, point: coincurve.PublicKey | None = None
) -> None:
    """Raise unless ``der`` is a strict, low-S signature of ``digest32`` by the key;
    ``point`` is that key already parsed, when the caller has it."""
    try:
        _r, s = decode_der(der)
    except ValueError:
        raise VerificationError("malformed DER signature") from None
    require_low_s(s)
    try:
        key = point if point is not None else coincurve.PublicKey(public_key_bytes)
        ok = key.verify(der, digest32, hasher=None)
    except ValueError:
        ok = False
    if not ok:
        raise VerificationError("ECDSA signature does not verify")


def decode_der(der: bytes) -> tuple[int, int]:
    """Strict DER (BIP-66) ``(r, s)``; raises ValueError on anything non-canonical."""
    if len(der) < 8 or len(der) > 72 or der[0] != 0x30 or der[1] != len(der) - 2:
        raise ValueError("bad DER envelope")
    pos = 2
    values = []
    for _ in range(2):
        if pos + 2 > len(der) or der[pos] != 0x02:
            raise ValueError("bad DER integer tag")
        n = der[pos + 1]
        body = der[pos + 2 : pos + 2 + n]
        if n == 0 or len(body) != n or body[0] & 0x80:
            raise ValueError("bad DER integer")
        if n > 1 and body[0] == 0 and not body[1] & 0x80:
            raise ValueError("non-minimal DER integer")
        values.append(int.from_bytes(body, "big"))
        pos += 2 + n
    if pos != len(der):
        raise ValueError("trailing bytes in DER")
    return values[0], values[1]
