"""Split knowledge: key-set encryption under ``DEK = S_m XOR S_c`` and share handling.

The private keys of a key set are AES-256-GCM encrypted under a data key (DEK). The DEK
itself is never stored: it is split into a manager share ``S_m`` (uniformly random)
and a custodian share ``S_c = DEK XOR S_m``. Each share is sealed (libsodium sealed box)
to every member of its side. Either share alone is a uniformly random string and says
nothing about the DEK, so the database, the server, a manager or a custodian alone
cannot decrypt a key.

To use a key set, one manager's client and one custodian's client each unseal their
share locally and re-seal it (:func:`reseal_share`) to a one-time X25519 *operation
key* that lives only in the signer's memory (:class:`OperationKey`, ADR 0003). The
signer opens both (:func:`open_operation_shares`), checks each against its public
commitment so it can say which side sent a wrong share, rebuilds the DEK and wipes it
when the operation ends.

Wiping: plaintext DEKs, shares and keys are held in ``bytearray`` and zeroed after use.
In CPython this is best effort only: PyNaCl and cryptography take immutable ``bytes``
copies we cannot reach, and the allocator may have copied buffers. It shortens the
time secrets sit in memory; it does not guarantee erasure.

Nothing here reads the clock; randomness comes in as ``randbytes`` so tests can be
deterministic (libsodium's sealed boxes draw their ephemeral keys internally).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

import nacl.exceptions
import nacl.public
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tandem.core.canonical import JSON, canonical, check_fields, domain_bytes, loads_strict
from tandem.core.identity import b64, unb64, verify_ed25519
from tandem.core.keygen import public_key_for
from tandem.errors import CryptoError, DecryptionError, InputError

__all__ = [
    "DEK_BYTES",
    "SEALED_KEYSET_FORMAT",
    "SHARE_BYTES",
    "SIDES",
    "EncryptedKey",
    "OperationKey",
    "RandBytes",
    "SealedKeyset",
    "Side",
    "combine_shares",
    "decrypt_private_key",
    "dek_check",
    "encrypt_private_key",
    "new_dek",
    "open_operation_shares",
    "reseal_share",
    "reshare",
    "seal_keyset",
    "seal_share",
    "share_commitment",
    "split_dek",
    "unseal_share",
    "wipe",
]

RandBytes = Callable[[int], bytes]
Side = Literal["manager", "custodian"]
SIDES: tuple[Side, ...] = get_args(Side)

DEK_BYTES = 32
SHARE_BYTES = 32
PRIVATE_KEY_BYTES = 32
NONCE_BYTES = 12
X25519_KEY_BYTES = 32
SEALED_KEYSET_FORMAT = "tandem-sealed-keyset/1"

_GCM_TAG_BYTES = 16
_SEALBOX_OVERHEAD = 48  # ephemeral X25519 public key (32) + Poly1305 tag (16)
_SEALED_SHARE_BYTES = _SEALBOX_OVERHEAD + SHARE_BYTES
_CIPHERTEXT_BYTES = NONCE_BYTES + PRIVATE_KEY_BYTES + _GCM_TAG_BYTES
_MAX_ID_LEN = 128
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")


# --- the DEK and its shares ------------------------------------------------------------


def wipe(buf: bytearray) -> None:
    """Zero ``buf`` in place (best effort in CPython; see the module docstring)."""
    buf[:] = bytes(len(buf))


def new_dek(*, randbytes: RandBytes = secrets.token_bytes) -> bytearray:
    return _random(DEK_BYTES, randbytes)


def split_dek(
    dek: bytes | bytearray, *, randbytes: RandBytes = secrets.token_bytes
) -> tuple[bytearray, bytearray]:
    """``(S_m, S_c)`` with ``S_m`` uniformly random and ``S_m XOR S_c == dek``."""
    _require_len(dek, DEK_BYTES, "DEK")
    s_m = _random(SHARE_BYTES, randbytes)
    return s_m, _xor(dek, s_m)


def combine_shares(s_m: bytes | bytearray, s_c: bytes | bytearray) -> bytearray:
    _require_len(s_m, SHARE_BYTES, "manager share")
    _require_len(s_c, SHARE_BYTES, "custodian share")
    return _xor(s_m, s_c)


def share_commitment(side: Side, keyset_id: str, share: bytes | bytearray) -> str:
    """Public hex commitment to one side's share of one key set.

    It lets the signer say *which* side supplied a wrong share. Publishing it costs
    nothing: a share is 32 uniformly random bytes, so its hash cannot be inverted or
    guessed, and the header binds it to one side of one key set.
    """
    _check_side(side)
    _check_id(keyset_id, "keyset_id")
    _require_len(share, SHARE_BYTES, f"{side} share")
    h = hashlib.sha256(domain_bytes("keyset-share-commitment", {"keyset": keyset_id, "side": side}))
    h.update(share)
    return h.hexdigest()


def dek_check(dek: bytes | bytearray, keyset_id: str) -> str:
    """Key-check value: HMAC-SHA256 keyed by the DEK over a per-key-set constant.

    It detects a DEK that does not belong to the key set before any key is touched,
    and (being a MAC, not a hash of the DEK) reveals nothing usable about the DEK.
    """
    _require_len(dek, DEK_BYTES, "DEK")
    _check_id(keyset_id, "keyset_id")
    msg = domain_bytes("keyset-dek-check", {"keyset": keyset_id})
    return hmac.new(dek, msg, hashlib.sha256).hexdigest()


_dek_check = dek_check  # open_operation_shares has a parameter of the same name


# --- sealing to members ---------------------------------------------------------------


def seal_share(share: bytes | bytearray, recipient_x25519_public: bytes) -> bytes:
    """A libsodium sealed box of ``share`` that only the recipient can open."""
    _require_len(share, SHARE_BYTES, "share")
    return _seal(share, recipient_x25519_public)


def unseal_share(sealed: bytes, x25519_private: bytes | bytearray) -> bytearray:
    """Open a member-sealed share; :class:`DecryptionError` if this key cannot."""
    plaintext = _unseal(sealed, x25519_private)
    if plaintext is None:
        raise DecryptionError("the sealed share cannot be opened with this key")
    if len(plaintext) != SHARE_BYTES:
        wipe(plaintext)
        raise DecryptionError("the sealed share does not hold a share of the expected size")
    return plaintext


# --- private keys under the DEK --------------------------------------------------------


def encrypt_private_key(
    dek: bytes | bytearray,
    *,
    keyset_id: str,
    key_id: str,
    public_key: bytes,
    private_key: bytes | bytearray,
    randbytes: RandBytes = secrets.token_bytes,
) -> bytes:
    """``nonce || AES-256-GCM(private_key)`` with the key set, key id and public key as AD.

    The associated data stops a ciphertext being moved to another key id, key set or
    public key in the database: it would no longer decrypt.
    """
    _require_len(dek, DEK_BYTES, "DEK")
    _require_len(private_key, PRIVATE_KEY_BYTES, f"private key {key_id!r}")
    nonce = _random(NONCE_BYTES, randbytes)
    aad = _key_aad(keyset_id, key_id, public_key)
    return bytes(nonce) + AESGCM(dek).encrypt(bytes(nonce), private_key, aad)


def decrypt_private_key(
    dek: bytes | bytearray, *, keyset_id: str, key_id: str, public_key: bytes, blob: bytes
) -> bytearray:
    """The private key as a ``bytearray`` the caller should :func:`wipe` after use."""
    _require_len(dek, DEK_BYTES, "DEK")
    aad = _key_aad(keyset_id, key_id, public_key)
    if len(blob) < NONCE_BYTES + _GCM_TAG_BYTES + 1:
        raise DecryptionError(f"the ciphertext of key {key_id!r} is truncated")
    nonce, body = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
    out = bytearray(len(body) - _GCM_TAG_BYTES)
    aead = AESGCM(dek)
    try:
        decrypt_into = getattr(aead, "decrypt_into", None)
        if decrypt_into is not None:
            # Decrypting into our own buffer avoids an immutable copy of the key.
            decrypt_into(nonce, body, aad, out)
        else:
            out[:] = aead.decrypt(nonce, body, aad)
    except InvalidTag:
        wipe(out)
        raise DecryptionError(
            f"key {key_id!r} of key set {keyset_id!r} does not decrypt under this DEK",
            details={"keyset": keyset_id, "key_id": key_id},
        ) from None
    return out


def _key_aad(keyset_id: str, key_id: str, public_key: bytes) -> bytes:
    _check_id(keyset_id, "keyset_id")
    _check_id(key_id, "key_id")
    return domain_bytes(
        "keyset-key-aad", {"keyset": keyset_id, "key_id": key_id, "public_key": public_key.hex()}
    )


# --- one-time operation keys -----------------------------------------------------------


class OperationKey:
    """A one-time X25519 key pair of the signer for a single operation.

    The private half exists only in this object's memory: it cannot be pickled,
    copied or printed, and :meth:`close` zeroes it. :func:`open_operation_shares`
    closes the key when its operation ends, so shares resealed to it are useless
    afterwards.
    """

    __slots__ = ("_closed", "_private", "_public")

    def __init__(self, *, randbytes: RandBytes = secrets.token_bytes) -> None:
        self._private = _random(X25519_KEY_BYTES, randbytes)
        self._public = bytes(nacl.public.PrivateKey(bytes(self._private)).public_key.encode())
        self._closed = False

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def public_hex(self) -> str:
        return self._public.hex()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        wipe(self._private)

    def __enter__(self) -> OperationKey:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"OperationKey(public={self.public_hex}, {state})"

    def __reduce__(self) -> Any:
        raise TypeError("an operation key is never serialised")

    def __copy__(self) -> OperationKey:
        raise TypeError("an operation key is never copied")

    def __deepcopy__(self, memo: object) -> OperationKey:
        raise TypeError("an operation key is never copied")

    def _open(self, sealed: bytes) -> bytearray | None:
        if self.closed:
            raise CryptoError("the operation key has been used or closed; start a new operation")
        return _unseal(sealed, self._private)


def _operation_header(keyset_id: str, side: Side, operation_id: str) -> bytes:
    return domain_bytes("operation-share", {"keyset": keyset_id, "side": side, "operation": operation_id})


def reseal_share(
    sealed_to_member: bytes,
    member_x25519_private: bytes | bytearray,
    operation_public: bytes,
    *,
    keyset_id: str,
    side: Side,
    operation_id: str,
    expected_commitment: str | None = None,
) -> bytes:
    """What a member's client does: unseal its share and reseal it to an operation key.

    The resealed plaintext is ``len(header) || header || share`` where the header names
    the key set, side and operation the member meant to contribute to. A server that
    shows the client another operation's key therefore gets a share the signer refuses
    for that other operation. ``expected_commitment`` (from the public key-set record)
    lets the client refuse to contribute a share it was handed for another key set.

    The client must only call this with an operation key it has authenticated as the
    signer's for this operation; see ADR 0003.
    """
    _check_side(side)
    _check_id(keyset_id, "keyset_id")
    _check_id(operation_id, "operation_id")
    header = _operation_header(keyset_id, side, operation_id)
    share = unseal_share(sealed_to_member, member_x25519_private)
    plaintext = bytearray()
    try:
        if expected_commitment is not None and not _hex_equal(
            share_commitment(side, keyset_id, share), expected_commitment
        ):
            raise DecryptionError(
                f"the {side} share held for this member does not match key set "
                f"{keyset_id!r}'s {side} commitment",
                details={"side": side, "keyset": keyset_id},
            )
        plaintext += len(header).to_bytes(2, "big") + header
        plaintext += share
        return _seal(plaintext, operation_public)
    finally:
        wipe(share)
        wipe(plaintext)


@contextmanager
def open_operation_shares(
    op_key: OperationKey,
    *,
    keyset_id: str,
    operation_id: str,
    sealed_manager: bytes,
    sealed_custodian: bytes,
    commitments: Mapping[str, str],
    dek_check: str,
) -> Iterator[bytearray]:
    """Yield the key set's DEK rebuilt from both resealed shares; wipe it on exit.

    Each share must open with ``op_key``, carry this key set, side and operation in its
    header, and match its side's commitment. Otherwise :class:`DecryptionError` names
    every side that failed (``details["sides"]``) so only that side is asked again; the
    operation key stays usable for the retry. Once a DEK has been yielded the operation
    key is closed when the block exits, whatever happens inside it.
    """
    _check_id(keyset_id, "keyset_id")
    _check_id(operation_id, "operation_id")
    expected_check = dek_check
    sealed = {"manager": sealed_manager, "custodian": sealed_custodian}
    shares: dict[Side, bytearray] = {}
    reasons: dict[str, str] = {}
    try:
        for side in SIDES:
            commitment = commitments.get(side)
            if not isinstance(commitment, str):
                raise InputError(f"no {side} commitment given for key set {keyset_id!r}")
            opened = _open_operation_share(
                op_key,
                sealed[side],
                keyset_id=keyset_id,
                side=side,
                operation_id=operation_id,
                commitment=commitment,
            )
            if isinstance(opened, str):
                reasons[side] = opened
            else:
                shares[side] = opened
        if reasons:
            raise DecryptionError(
                "; ".join(f"{side} share refused: {why}" for side, why in reasons.items()),
                details={
                    "keyset": keyset_id,
                    "operation": operation_id,
                    "sides": list(reasons),
                    "reasons": dict(reasons),
                },
            )
        dek = combine_shares(shares["manager"], shares["custodian"])
    finally:
        for share in shares.values():
            wipe(share)
    try:
        if not _hex_equal(_dek_check(dek, keyset_id), expected_check):
            # Both shares matched their commitments, so the record itself is inconsistent.
            raise DecryptionError(
                f"the shares match their commitments but not key set {keyset_id!r}'s DEK "
                "check; the key-set record is inconsistent",
                details={"keyset": keyset_id, "operation": operation_id, "sides": []},
            )
        yield dek
    finally:
        wipe(dek)
        op_key.close()


def _open_operation_share(
    op_key: OperationKey,
    sealed: bytes,
    *,
    keyset_id: str,
    side: Side,
    operation_id: str,
    commitment: str,
) -> bytearray | str:
    """The share, or a reason (naming no secret) why it is refused."""
    plaintext = op_key._open(sealed)
    if plaintext is None:
        return "it cannot be opened with this operation's key"
    try:
        if len(plaintext) < 2:
            return "it is malformed"
        header_len = int.from_bytes(plaintext[:2], "big")
        header = bytes(plaintext[2 : 2 + header_len])
        share = bytearray(plaintext[2 + header_len :])
        if len(header) != header_len or len(share) != SHARE_BYTES:
            wipe(share)
            return "it is malformed"
        expected = _operation_header(keyset_id, side, operation_id)
        if not hmac.compare_digest(header, expected):
            wipe(share)
            return _header_mismatch(header, keyset_id, side, operation_id)
        if not _hex_equal(share_commitment(side, keyset_id, share), commitment):
            wipe(share)
            return f"it does not match the key set's {side} share commitment"
        return share
    finally:
        wipe(plaintext)


def _header_mismatch(header: bytes, keyset_id: str, side: Side, operation_id: str) -> str:
    """Say which binding differs, without echoing values chosen by someone else."""
    prefix = b"TANDEM/1/operation-share\x00"
    if not header.startswith(prefix):
        return "its header is malformed"
    try:
        fields = check_fields(
            loads_strict(header[len(prefix) :]),
            required=("keyset", "side", "operation"),
            where="operation share header",
        )
    except InputError:
        return "its header is malformed"
    wrong = [
        label
        for label, name, want in (
            ("key set", "keyset", keyset_id),
            ("side", "side", side),
            ("operation", "operation", operation_id),
        )
        if fields[name] != want
    ]
    return f"it was resealed for a different {' and '.join(wrong) or 'context'}"


# --- sealed key sets -------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedKey:
    """One private key of a key set, encrypted under the key set's DEK."""

    key_id: str
    public_key: bytes
    ciphertext: bytes = field(repr=False)  # nonce || AES-256-GCM ciphertext and tag

    def __post_init__(self) -> None:
        _check_id(self.key_id, "key_id")
        if len(self.public_key) not in (32, 33):
            raise InputError(f"key {self.key_id!r}: public key must be 32 or 33 bytes")
        if len(self.ciphertext) != _CIPHERTEXT_BYTES:
            raise InputError(f"key {self.key_id!r}: ciphertext must be {_CIPHERTEXT_BYTES} bytes")


@dataclass(frozen=True, repr=False)
class SealedKeyset:
    """Everything the database holds for a key set; none of it decrypts a key alone.

    ``manager_shares`` / ``custodian_shares`` map member id to that member's sealed box
    of ``S_m`` / ``S_c``; the commitments and ``dek_check`` are public check values.
    """

    keyset_id: str
    keys: tuple[EncryptedKey, ...]
    manager_shares: Mapping[str, bytes]
    custodian_shares: Mapping[str, bytes]
    manager_commitment: str
    custodian_commitment: str
    dek_check: str

    def __post_init__(self) -> None:
        _check_id(self.keyset_id, "keyset_id")
        object.__setattr__(self, "keys", tuple(self.keys))
        if not self.keys:
            raise InputError(f"key set {self.keyset_id!r} holds no keys")
        key_ids = [k.key_id for k in self.keys]
        if len(set(key_ids)) != len(key_ids):
            raise InputError(f"key set {self.keyset_id!r} repeats a key id")
        for side in SIDES:
            shares = dict(getattr(self, f"{side}_shares"))
            if not shares:
                raise InputError(f"key set {self.keyset_id!r} has no {side} recipients")
            for member_id, box in shares.items():
                _check_id(member_id, "member_id")
                if not isinstance(box, bytes) or len(box) != _SEALED_SHARE_BYTES:
                    raise InputError(
                        f"the sealed {side} share of member {member_id!r} must be {_SEALED_SHARE_BYTES} bytes"
                    )
            object.__setattr__(self, f"{side}_shares", MappingProxyType(shares))
        both = set(self.manager_shares) & set(self.custodian_shares)
        if both:
            raise InputError(
                f"member(s) {', '.join(sorted(both))} would hold both shares of key set {self.keyset_id!r}"
            )
        for name in ("manager_commitment", "custodian_commitment", "dek_check"):
            if not isinstance(getattr(self, name), str) or not _HEX64.fullmatch(getattr(self, name)):
                raise InputError(f"{name} must be 64 lowercase hex digits")

    @property
    def commitments(self) -> Mapping[str, str]:
        return {"manager": self.manager_commitment, "custodian": self.custodian_commitment}

    def shares(self, side: Side) -> Mapping[str, bytes]:
        _check_side(side)
        return self.manager_shares if side == "manager" else self.custodian_shares

    def members(self, side: Side) -> frozenset[str]:
        return frozenset(self.shares(side))

    def sealed_share_for(self, member_id: str) -> tuple[Side, bytes]:
        """The side and sealed share of ``member_id``; :class:`InputError` if none."""
        for side in SIDES:
            box = self.shares(side).get(member_id)
            if box is not None:
                return side, box
        raise InputError(
            f"member {member_id!r} holds no share of key set {self.keyset_id!r}",
            details={"keyset": self.keyset_id, "member": member_id},
        )

    def key(self, key_id: str) -> EncryptedKey:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        raise InputError(f"key set {self.keyset_id!r} has no key {key_id!r}")

    def to_dict(self) -> dict[str, JSON]:
        return {
            "format": SEALED_KEYSET_FORMAT,
            "keyset": self.keyset_id,
            "keys": [
                {
                    "key_id": k.key_id,
                    "public_key": k.public_key.hex(),
                    "ciphertext": _b64(k.ciphertext),
                }
                for k in self.keys
            ],
            "shares": {
                side: {m: _b64(box) for m, box in sorted(self.shares(side).items())} for side in SIDES
            },
            "commitments": dict(self.commitments),
            "dek_check": self.dek_check,
        }

    def to_json(self) -> str:
        """RFC 8785 canonical JSON; binary fields are hex (public) or base64 (sealed)."""
        return canonical(self.to_dict()).decode("utf-8")

    @classmethod
    def from_dict(cls, value: JSON) -> SealedKeyset:
        where = "sealed key set"
        top = check_fields(
            value,
            required=("format", "keyset", "keys", "shares", "commitments", "dek_check"),
            where=where,
        )
        if top["format"] != SEALED_KEYSET_FORMAT:
            raise InputError(f"{where}.format must be {SEALED_KEYSET_FORMAT!r}")
        keyset_id = _str(top["keyset"], f"{where}.keyset")
        if not isinstance(top["keys"], list):
            raise InputError(f"{where}.keys must be an array")
        keys = []
        for i, entry in enumerate(top["keys"]):
            k = check_fields(
                entry, required=("key_id", "public_key", "ciphertext"), where=f"{where}.keys[{i}]"
            )
            keys.append(
                EncryptedKey(
                    key_id=_str(k["key_id"], f"{where}.keys[{i}].key_id"),
                    public_key=_unhex(k["public_key"], f"{where}.keys[{i}].public_key"),
                    ciphertext=_unb64(k["ciphertext"], f"{where}.keys[{i}].ciphertext"),
                )
            )
        shares = check_fields(top["shares"], required=SIDES, where=f"{where}.shares")
        sealed: dict[str, dict[str, bytes]] = {}
        for side in SIDES:
            if not isinstance(shares[side], dict):
                raise InputError(f"{where}.shares.{side} must be an object")
            sealed[side] = {
                _str(m, f"{where}.shares.{side} member id"): _unb64(box, f"{where}.shares.{side}.{m}")
                for m, box in shares[side].items()
            }
        commitments = check_fields(top["commitments"], required=SIDES, where=f"{where}.commitments")
        return cls(
            keyset_id=keyset_id,
            keys=tuple(keys),
            manager_shares=sealed["manager"],
            custodian_shares=sealed["custodian"],
            manager_commitment=_str(commitments["manager"], f"{where}.commitments.manager"),
            custodian_commitment=_str(commitments["custodian"], f"{where}.commitments.custodian"),
            dek_check=_str(top["dek_check"], f"{where}.dek_check"),
        )

    @classmethod
    def from_json(cls, data: str | bytes) -> SealedKeyset:
        return cls.from_dict(loads_strict(data))

    def __repr__(self) -> str:
        return (
            f"SealedKeyset(keyset_id={self.keyset_id!r}, "
            f"keys={[k.key_id for k in self.keys]!r}, "
            f"managers={sorted(self.manager_shares)!r}, "
            f"custodians={sorted(self.custodian_shares)!r})"
        )


PrivateKeyEntry = tuple[str, bytes, bytes | bytearray]


def seal_keyset(
    *,
    keyset_id: str,
    private_keys: Sequence[PrivateKeyEntry],
    manager_x25519_publics: Mapping[str, bytes],
    custodian_x25519_publics: Mapping[str, bytes],
    randbytes: RandBytes = secrets.token_bytes,
) -> SealedKeyset:
    """Encrypt ``(key_id, public_key, private_key)`` entries under a fresh DEK and seal
    its two shares to every member of each side.

    Each public key must be the one of its private key (33-byte compressed secp256k1
    or 32-byte Ed25519), so a key set never records an address it cannot sign for.
    """
    _check_id(keyset_id, "keyset_id")
    _check_recipients(keyset_id, manager_x25519_publics, custodian_x25519_publics)
    if not private_keys:
        raise InputError(f"key set {keyset_id!r} must hold at least one key")
    seen: set[str] = set()
    for key_id, public_key, private_key in private_keys:
        _check_id(key_id, "key_id")
        if key_id in seen:
            raise InputError(f"key id {key_id!r} appears twice in key set {keyset_id!r}")
        seen.add(key_id)
        _check_key_pair(key_id, public_key, private_key)
    dek = new_dek(randbytes=randbytes)
    try:
        return _seal_under(
            dek,
            keyset_id=keyset_id,
            private_keys=private_keys,
            manager_publics=manager_x25519_publics,
            custodian_publics=custodian_x25519_publics,
            randbytes=randbytes,
        )
    finally:
        wipe(dek)


def reshare(
    sealed_keyset: SealedKeyset,
    *,
    dek: bytes | bytearray,
    new_manager_publics: Mapping[str, bytes],
    new_custodian_publics: Mapping[str, bytes],
    randbytes: RandBytes = secrets.token_bytes,
) -> SealedKeyset:
    """Rotate the DEK: decrypt every key with ``dek`` (from :func:`open_operation_shares`),
    re-encrypt under a new DEK and seal the new shares to the current members only.

    Re-sealing the old shares would not do: a removed member may have kept its old
    share, and with the other side's old share it would rebuild a DEK that still works.
    After rotation the old DEK and every old share decrypt nothing in the new record.
    """
    keyset_id = sealed_keyset.keyset_id
    _require_len(dek, DEK_BYTES, "DEK")
    if not _hex_equal(dek_check(dek, keyset_id), sealed_keyset.dek_check):
        raise DecryptionError(
            f"this DEK does not belong to key set {keyset_id!r}", details={"keyset": keyset_id}
        )
    _check_recipients(keyset_id, new_manager_publics, new_custodian_publics)
    plain: list[PrivateKeyEntry] = []
    decrypted: list[bytearray] = []
    new = bytearray()
    try:
        for k in sealed_keyset.keys:
            private = decrypt_private_key(
                dek,
                keyset_id=keyset_id,
                key_id=k.key_id,
                public_key=k.public_key,
                blob=k.ciphertext,
            )
            decrypted.append(private)
            plain.append((k.key_id, k.public_key, private))
        new = new_dek(randbytes=randbytes)
        if hmac.compare_digest(bytes(new), bytes(dek)):
            raise CryptoError("the randomness source repeated the old DEK; refusing to rotate")
        return _seal_under(
            new,
            keyset_id=keyset_id,
            private_keys=plain,
            manager_publics=new_manager_publics,
            custodian_publics=new_custodian_publics,
            randbytes=randbytes,
        )
    finally:
        wipe(new)
        for private in decrypted:
            wipe(private)


def _seal_under(
    dek: bytearray,
    *,
    keyset_id: str,
    private_keys: Sequence[PrivateKeyEntry],
    manager_publics: Mapping[str, bytes],
    custodian_publics: Mapping[str, bytes],
    randbytes: RandBytes,
) -> SealedKeyset:
    s_m, s_c = split_dek(dek, randbytes=randbytes)
    try:
        keys = tuple(
            EncryptedKey(
                key_id=key_id,
                public_key=bytes(public_key),
                ciphertext=encrypt_private_key(
                    dek,
                    keyset_id=keyset_id,
                    key_id=key_id,
                    public_key=bytes(public_key),
                    private_key=private_key,
                    randbytes=randbytes,
                ),
            )
            for key_id, public_key, private_key in private_keys
        )
        return SealedKeyset(
            keyset_id=keyset_id,
            keys=keys,
            manager_shares={m: seal_share(s_m, pub) for m, pub in manager_publics.items()},
            custodian_shares={m: seal_share(s_c, pub) for m, pub in custodian_publics.items()},
            manager_commitment=share_commitment("manager", keyset_id, s_m),
            custodian_commitment=share_commitment("custodian", keyset_id, s_c),
            dek_check=dek_check(dek, keyset_id),
        )
    finally:
        wipe(s_m)
        wipe(s_c)


def _check_recipients(keyset_id: str, managers: Mapping[str, bytes], custodians: Mapping[str, bytes]) -> None:
    for side, recipients in (("manager", managers), ("custodian", custodians)):
        if not recipients:
            raise InputError(f"key set {keyset_id!r} needs at least one {side} to seal the {side} share to")
        for member_id, public in recipients.items():
            _check_id(member_id, "member_id")
            if not isinstance(public, bytes) or len(public) != X25519_KEY_BYTES:
                raise InputError(f"the X25519 public key of member {member_id!r} must be 32 bytes")
    both = set(managers) & set(custodians)
    if both:
        raise InputError(
            f"member(s) {', '.join(sorted(both))} cannot receive both shares of key set {keyset_id!r}"
        )
    owners: dict[bytes, str] = {}
    for member_id, public in [*managers.items(), *custodians.items()]:
        if public in owners:
            # One key under two members would let one person open both shares.
            raise InputError(f"members {owners[public]!r} and {member_id!r} share one X25519 key")
        owners[public] = member_id


def _check_key_pair(key_id: str, public_key: bytes, private_key: bytes | bytearray) -> None:
    _require_len(private_key, PRIVATE_KEY_BYTES, f"private key {key_id!r}")
    if not isinstance(public_key, bytes) or len(public_key) not in (32, 33):
        raise InputError(f"key {key_id!r}: public key must be 33 (secp256k1) or 32 (Ed25519) bytes")
    curve: Literal["secp256k1", "ed25519"] = "secp256k1" if len(public_key) == 33 else "ed25519"
    try:
        derived = public_key_for(curve, private_key)
    except CryptoError:
        raise InputError(f"key {key_id!r}: not a valid {curve} private key") from None
    if not hmac.compare_digest(derived, public_key):
        raise InputError(f"key {key_id!r}: the public key does not belong to the private key")


# --- small helpers ---------------------------------------------------------------------


def _seal(plaintext: bytes | bytearray, recipient_public: bytes) -> bytes:
    if not isinstance(recipient_public, bytes) or len(recipient_public) != X25519_KEY_BYTES:
        raise InputError("an X25519 public key is 32 bytes")
    try:
        box = nacl.public.SealedBox(nacl.public.PublicKey(recipient_public))
        return bytes(box.encrypt(bytes(plaintext)))
    except nacl.exceptions.CryptoError:
        raise InputError("the recipient's X25519 public key is not usable") from None


def _unseal(sealed: object, private: bytes | bytearray) -> bytearray | None:
    if len(private) != X25519_KEY_BYTES:
        raise InputError("an X25519 private key is 32 bytes")
    if not isinstance(sealed, bytes | bytearray):
        return None
    try:
        box = nacl.public.SealedBox(nacl.public.PrivateKey(bytes(private)))
        return bytearray(box.decrypt(bytes(sealed)))
    except nacl.exceptions.CryptoError:
        return None


def _random(n: int, randbytes: RandBytes) -> bytearray:
    out = bytearray(randbytes(n))
    if len(out) != n:
        raise CryptoError("the randomness source returned the wrong number of bytes")
    return out


def _xor(a: bytes | bytearray, b: bytes | bytearray) -> bytearray:
    return bytearray(x ^ y for x, y in zip(a, b, strict=True))


def _require_len(value: bytes | bytearray, n: int, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != n:
        raise CryptoError(f"{what} must be {n} bytes")


def _hex_equal(a: str, b: str) -> bool:
    if not isinstance(b, str) or not b.isascii():
        return False
    return hmac.compare_digest(a.encode("ascii"), b.lower().encode("ascii"))


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise InputError(f"side must be 'manager' or 'custodian', not {side!r}")


def _check_id(value: Any, what: str) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID_LEN:
        raise InputError(f"{what} must be a non-empty string of at most {_MAX_ID_LEN} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InputError(f"{what} must not contain control characters")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} must be a string")
    return value


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value.isascii():
        raise InputError(f"{where} must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise InputError(f"{where} is not valid base64") from None
    if _b64(data) != value:
        raise InputError(f"{where} is not canonical base64")
    return data


def _unhex(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise InputError(f"{where} must be lowercase hex")
    return bytes.fromhex(value)


# --- operation keys, as a member's client sees them ----------------------------------


def operation_statement(
    *, operation: str, keyset: str, purpose: str, public_key: str, expires_at: int
) -> dict[str, Any]:
    return {
        "operation": operation,
        "keyset": keyset,
        "purpose": purpose,
        "public_key": public_key,
        "expires_at": expires_at,
    }


def verify_operation(doc: Any, service_sign_public: bytes) -> dict[str, Any]:
    """Client side: check an operation key was issued by this deployment's signer."""
    check_fields(doc, required=("statement", "signature"), where="operation")
    statement = check_fields(
        doc["statement"],
        required=("operation", "keyset", "purpose", "public_key", "expires_at"),
        where="operation.statement",
    )
    verify_ed25519(
        service_sign_public,
        domain_bytes("operation-key", statement),
        unb64(doc["signature"], what="operation signature"),
        what="operation key",
    )
    result: dict[str, Any] = statement
    return result


def operation_id(doc: Mapping[str, Any]) -> str:
    """The operation a signed operation-key document (``{statement, signature}``, one
    this signer issued or :func:`verify_operation` checked) names."""
    operation = doc["statement"]["operation"]
    if not isinstance(operation, str):
        raise InputError("operation.statement.operation must be text")
    return operation


def reseal_for_operation(
    member: Any,  # MemberSecrets: member_id and seal_private_key
    sealed_keyset_json: str | dict[str, Any],
    operation_doc: Any,
    service_sign_public: bytes,
) -> tuple[str, str]:
    """Client side: check the operation key, then re-seal this member's share to it.
    Returns ``(side, base64 re-sealed share)``."""
    statement = verify_operation(operation_doc, service_sign_public)
    sealed = (
        SealedKeyset.from_json(sealed_keyset_json)
        if isinstance(sealed_keyset_json, str)
        else SealedKeyset.from_dict(sealed_keyset_json)
    )
    if sealed.keyset_id != statement["keyset"]:
        raise InputError("operation is for another key set")
    side, box = sealed.sealed_share_for(member.member_id)
    resealed = reseal_share(
        box,
        bytes(member.seal_private_key),
        bytes.fromhex(statement["public_key"]),
        keyset_id=sealed.keyset_id,
        side=side,
        operation_id=statement["operation"],
        expected_commitment=sealed.commitments.get(side),
    )
    return side, b64(resealed)
