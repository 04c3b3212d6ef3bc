"""Ceremony key generation: the OS CSPRNG mixed with every participant's contribution.

Each participant commits to a 32-byte contribution before seeing anyone else's, then
reveals it. The keys are HKDF-SHA256 over the signer's OS entropy followed by every
revealed contribution, so a key is unpredictable as long as *any one* input was: a
backdoored CSPRNG on the signer does not let its author predict keys, and neither
does a participant who chose its contribution badly. The commit-then-reveal order
stops the last participant from picking a contribution after seeing the others'.

Randomness is an argument (``randbytes``) so tests can be deterministic; nothing here
reads the clock. Private keys are returned as ``bytearray`` so callers can zero them
after use; in CPython that is best effort only (libraries keep immutable copies we
cannot reach).
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from typing import get_args

import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tandem.core.canonical import digest, digest_hex
from tandem.core.chains import secp256k1
from tandem.core.chains.base import Curve
from tandem.errors import CommitmentMismatchError, CryptoError, InputError

__all__ = [
    "CONTRIBUTION_BYTES",
    "CURVES",
    "MAX_KEYS",
    "MIN_OS_ENTROPY_BYTES",
    "RandBytes",
    "check_reveal",
    "commit_contribution",
    "derive_private_keys",
    "make_contribution",
    "public_key_for",
]

RandBytes = Callable[[int], bytes]

CURVES: frozenset[str] = frozenset(get_args(Curve))
CONTRIBUTION_BYTES = 32
MIN_OS_ENTROPY_BYTES = 32
MAX_OS_ENTROPY_BYTES = 1024
MAX_KEYS = 100
# An HKDF output is outside [1, n-1] with probability about 2^-128, so needing more
# than a couple of retries means something is broken, not unlucky.
_SECP256K1_MAX_ATTEMPTS = 8
_MAX_ID_LEN = 128
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYGEN_INFO = b"tandem keygen"


def make_contribution(*, randbytes: RandBytes = secrets.token_bytes) -> bytes:
    """A participant's 32-byte entropy contribution."""
    contribution = randbytes(CONTRIBUTION_BYTES)
    if len(contribution) != CONTRIBUTION_BYTES:
        raise CryptoError("the randomness source returned the wrong number of bytes")
    return contribution


def commit_contribution(*, ceremony_id: str, member_id: str, contribution: bytes | bytearray) -> str:
    """Hex SHA-256 commitment binding a contribution to one member of one ceremony.

    Binding the ceremony and member stops a participant from replaying someone
    else's commitment (and then their reveal) as its own.
    """
    _check_id(ceremony_id, "ceremony_id")
    _check_id(member_id, "member_id")
    _check_contribution(contribution, member_id)
    return digest_hex(
        "ceremony-commitment",
        {"ceremony": ceremony_id, "member": member_id, "contribution": contribution.hex()},
    )


def check_reveal(
    *, ceremony_id: str, member_id: str, contribution: bytes | bytearray, commitment: str
) -> None:
    """Raise :class:`CommitmentMismatchError` naming the member unless the reveal matches."""
    expected = commit_contribution(ceremony_id=ceremony_id, member_id=member_id, contribution=contribution)
    given = commitment.lower() if isinstance(commitment, str) else ""
    if not _HEX64.fullmatch(given) or not hmac.compare_digest(
        expected.encode("ascii"), given.encode("ascii")
    ):
        raise CommitmentMismatchError(
            f"member {member_id!r} revealed a contribution that does not match its "
            f"commitment in ceremony {ceremony_id!r}",
            details={"ceremony": ceremony_id, "member": member_id},
        )


def derive_private_keys(
    *,
    curve: Curve,
    count: int,
    os_entropy: bytes | bytearray,
    contributions: Mapping[str, bytes | bytearray],
    ceremony_id: str,
) -> list[bytearray]:
    """``count`` private keys for ``curve`` from OS entropy and every contribution.

    ikm  = os_entropy || (len(member) member len(contribution) contribution)* in sorted
           member order, so the mapping's order never matters but swapping two members'
           contributions does;
    salt = digest of {ceremony, sorted members};
    info = "tandem keygen" 0x00 curve 0x00 index(4) [attempt(4) for secp256k1].

    secp256k1 outputs outside [1, n-1] are re-derived with the next attempt counter;
    Ed25519 takes any 32-byte seed.
    """
    if curve not in CURVES:
        raise InputError(f"unknown curve {curve!r}; known: {', '.join(sorted(CURVES))}")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_KEYS:
        raise InputError(f"count must be an integer between 1 and {MAX_KEYS}")
    if not MIN_OS_ENTROPY_BYTES <= len(os_entropy) <= MAX_OS_ENTROPY_BYTES:
        raise InputError(f"os_entropy must be {MIN_OS_ENTROPY_BYTES} to {MAX_OS_ENTROPY_BYTES} bytes")
    _check_id(ceremony_id, "ceremony_id")
    if not contributions:
        raise InputError("at least one contribution is required")
    members = sorted(contributions)
    for member in members:
        _check_id(member, "member_id")
        _check_contribution(contributions[member], member)

    ikm = bytearray(os_entropy)
    for member in members:
        name = member.encode("utf-8")
        ikm += len(name).to_bytes(2, "big") + name
        ikm += len(contributions[member]).to_bytes(2, "big")
        ikm += contributions[member]
    salt = digest("keygen-salt", {"ceremony": ceremony_id, "members": members})
    keys: list[bytearray] = []
    try:
        for index in range(count):
            keys.append(_derive_one(curve, ikm, salt, index))
    except BaseException:
        for key in keys:
            _wipe(key)
        raise
    finally:
        _wipe(ikm)
    return keys


def public_key_for(curve: Curve, private_key: bytes | bytearray) -> bytes:
    """Compressed SEC1 (33 bytes) for secp256k1; the raw 32-byte key for Ed25519."""
    if curve == "secp256k1":
        return secp256k1.public_key(bytes(private_key), compressed=True)
    if curve == "ed25519":
        if len(private_key) != 32:
            raise CryptoError("an Ed25519 seed is 32 bytes")
        return bytes(nacl.signing.SigningKey(bytes(private_key)).verify_key.encode())
    raise InputError(f"unknown curve {curve!r}; known: {', '.join(sorted(CURVES))}")


def _derive_one(curve: Curve, ikm: bytearray, salt: bytes, index: int) -> bytearray:
    base_info = _KEYGEN_INFO + b"\x00" + curve.encode("ascii") + b"\x00" + index.to_bytes(4, "big")
    if curve == "ed25519":
        return _hkdf(ikm, salt, base_info)
    for attempt in range(_SECP256K1_MAX_ATTEMPTS):
        candidate = _hkdf(ikm, salt, base_info + attempt.to_bytes(4, "big"))
        if secp256k1.is_valid_private_key(bytes(candidate)):
            return candidate
        _wipe(candidate)
    raise CryptoError("could not derive a valid secp256k1 key; the inputs are degenerate")


def _hkdf(ikm: bytearray, salt: bytes, info: bytes) -> bytearray:
    return bytearray(HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm))


def _check_contribution(contribution: bytes | bytearray, member_id: str) -> None:
    if not isinstance(contribution, bytes | bytearray) or len(contribution) != CONTRIBUTION_BYTES:
        raise InputError(
            f"the contribution of member {member_id!r} must be {CONTRIBUTION_BYTES} bytes",
            details={"member": member_id},
        )


def _check_id(value: str, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID_LEN:
        raise InputError(f"{what} must be a non-empty string of at most {_MAX_ID_LEN} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InputError(f"{what} must not contain control characters")


def _wipe(buf: bytearray) -> None:
    buf[:] = bytes(len(buf))
