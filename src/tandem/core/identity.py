"""Member identities: an Ed25519 signing key, an X25519 sealing key, a TOTP seed.

The private half lives only on the member's machine, in a keystore file encrypted
with a passphrase (scrypt, then AES-256-GCM). The public half is the identity card
the deployment registers. The card is signed by its own key (proof of possession),
so a card cannot name a public key its presenter does not hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.public
import nacl.signing
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tandem.core.canonical import canonical, check_fields, domain_bytes, loads_strict
from tandem.core.roles import Role, parse_role
from tandem.errors import BadSignatureError, Error, InputError, KeystoreError

KEYSTORE_FORMAT = "tandem-keystore/1"
CARD_FORMAT = "tandem-identity/1"
# scrypt cost: 2^17 x 8 x 128 B = 128 MiB per derivation. Lower values are allowed
# only down to 2^14 (for test suites) and are written into the file, so a keystore
# always opens with the cost it was made with.
DEFAULT_SCRYPT_LOG2_N = 17
MIN_SCRYPT_LOG2_N = 14
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise InputError(f"{what} is not valid base64") from None


def canonical_signature(encoded: Any) -> bytes | None:
    """The 64 bytes of an Ed25519 signature given in its one canonical base64 form, or None.

    Only that one encoding is accepted, so a signed document has exactly one valid form."""
    if type(encoded) is not str:
        return None
    try:
        signature = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return None
    if len(signature) != 64 or base64.b64encode(signature).decode("ascii") != encoded:
        return None
    return signature


def verify_service_signature(
    public_key_raw32: bytes, domain: str, body: Any, encoded: Any, *, what: str, error: type[Error]
) -> None:
    """Check that ``encoded`` is the canonical base64 Ed25519 signature by the service key
    ``public_key_raw32`` over ``domain_bytes(domain, body)``; ``error`` naming ``what``
    otherwise."""
    signature = canonical_signature(encoded)
    if signature is None:
        raise error(f"{what} signature is not 64 bytes of canonical base64")
    try:
        nacl.signing.VerifyKey(public_key_raw32).verify(domain_bytes(domain, body), signature)
    except nacl.exceptions.BadSignatureError:
        raise error(f"{what} signature does not verify under the service key") from None


def unhex(text: Any, *, what: str, length: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{what} must be a hex string")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InputError(f"{what} is not valid hex") from None
    if length is not None and len(raw) != length:
        raise InputError(f"{what} must be {length} bytes")
    return raw


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InputError("name must be 1-64 characters: letters, digits, space, '.', '_', '@', '-'")
    return name


MEMBER_ID_RE = re.compile(r"^mem_[0-9a-f]{20}$")


def member_id_for(sign_public: bytes) -> str:
    """A member's stable id: derived from the signing key it was admitted with, and kept
    across key rotations (the log maps the id to the member's current key)."""
    return "mem_" + hashlib.sha256(b"tandem member id\x00" + sign_public).hexdigest()[:20]


@dataclass(frozen=True)
class IdentityCard:
    """The public identity of one person in one role."""

    name: str
    role: Role
    sign_public: bytes
    seal_public: bytes
    signature: bytes = field(default=b"", compare=False)

    def body(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "name": self.name,
            "role": self.role.value,
            "sign_public": self.sign_public.hex(),
            "seal_public": self.seal_public.hex(),
        }

    @property
    def fingerprint(self) -> str:
        """Short, comparable over a phone line: first 16 hex of the card body hash."""
        return hashlib.sha256(domain_bytes("identity-card", self.body())).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "signature": b64(self.signature)}

    @classmethod
    def from_json(cls, doc: Any) -> IdentityCard:
        check_fields(
            doc,
            required=("format", "name", "role", "sign_public", "seal_public", "signature"),
            where="identity card",
        )
        if doc["format"] != CARD_FORMAT:
            raise InputError(f"identity card format must be {CARD_FORMAT}")
        card = cls(
            name=check_name(doc["name"]),
            role=parse_role(doc["role"]),
            sign_public=unhex(doc["sign_public"], what="sign_public", length=32),
            seal_public=unhex(doc["seal_public"], what="seal_public", length=32),
            signature=unb64(doc["signature"], what="card signature"),
        )
        card.verify()
        return card

    def verify(self) -> None:
        try:
            nacl.signing.VerifyKey(self.sign_public).verify(
                domain_bytes("identity-card", self.body()), self.signature
            )
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            raise BadSignatureError(f"identity card of {self.name!r} is not signed by its own key") from None

    @property
    def member_id(self) -> str:
        return member_id_for(self.sign_public)


MIN_PASSPHRASE_LENGTH = 8


def check_passphrase(passphrase: str) -> None:
    """The rule a new keystore passphrase must meet (checked before it is typed twice)."""
    if not passphrase or len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise KeystoreError(f"passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")


class MemberSecrets:
    """A member's private keys. Never printed, never serialised except into a keystore."""

    __slots__ = ("_member_id", "_seal", "_sign", "name", "role", "totp_secret")

    def __init__(
        self,
        *,
        name: str,
        role: Role,
        sign_seed: bytes,
        seal_private: bytes,
        totp_secret: str,
        member_id: str | None = None,
    ) -> None:
        if len(sign_seed) != 32 or len(seal_private) != 32:
            raise KeystoreError("keystore holds keys of the wrong length")
        if member_id is not None and not MEMBER_ID_RE.fullmatch(member_id):
            raise KeystoreError("keystore names a malformed member id")
        self.name = check_name(name)
        self.role = role
        self._sign = nacl.signing.SigningKey(sign_seed)
        self._seal = nacl.public.PrivateKey(seal_private)
        self.totp_secret = totp_secret
        # The id fixed at admission. None: this key is the one the member was admitted
        # with, so the id is derived from it; after a key rotation the id stays the old one.
        self._member_id = None if member_id == member_id_for(self.sign_public) else member_id

    def __repr__(self) -> str:
        return f"MemberSecrets(name={self.name!r}, role={self.role.value!r}, <private keys hidden>)"

    def __reduce__(self) -> Any:
        # Secrets reach disk only through the passphrase-encrypted keystore.
        raise TypeError("MemberSecrets cannot be pickled; use to_keystore()")

    @classmethod
    def generate(cls, *, name: str, role: Role, totp_secret: str | None = None) -> MemberSecrets:
        import pyotp

        return cls(
            name=name,
            role=role,
            sign_seed=os.urandom(32),
            seal_private=os.urandom(32),
            totp_secret=totp_secret or pyotp.random_base32(32),
        )

    @property
    def sign_public(self) -> bytes:
        return bytes(self._sign.verify_key)

    @property
    def seal_public(self) -> bytes:
        return bytes(self._seal.public_key)

    @property
    def seal_private_key(self) -> nacl.public.PrivateKey:
        return self._seal

    @property
    def member_id(self) -> str:
        return self._member_id or member_id_for(self.sign_public)

    def rotated(self) -> MemberSecrets:
        """New signing and sealing keys for the same member (same id, name, role and
        TOTP seed): what a key rotation proposes, and what signs once it takes effect."""
        return MemberSecrets(
            name=self.name,
            role=self.role,
            sign_seed=os.urandom(32),
            seal_private=os.urandom(32),
            totp_secret=self.totp_secret,
            member_id=self.member_id,
        )

    def sign(self, message: bytes) -> bytes:
        return bytes(self._sign.sign(message).signature)

    def card(self) -> IdentityCard:
        unsigned = IdentityCard(
            name=self.name,
            role=self.role,
            sign_public=self.sign_public,
            seal_public=self.seal_public,
        )
        sig = self.sign(domain_bytes("identity-card", unsigned.body()))
        return IdentityCard(
            name=self.name,
            role=self.role,
            sign_public=self.sign_public,
            seal_public=self.seal_public,
            signature=sig,
        )

    def otpauth_uri(self, *, issuer: str = "Tandem") -> str:
        import pyotp

        return str(pyotp.TOTP(self.totp_secret).provisioning_uri(name=self.name, issuer_name=issuer))

    # --- keystore -------------------------------------------------------------------

    @property
    def holds_totp_seed(self) -> bool:
        """Whether these secrets include the TOTP seed (a keystore keeps it only when asked)."""
        return bool(self.totp_secret)

    def with_totp_seed(self, totp_secret: str) -> MemberSecrets:
        """The same keys with another TOTP seed ("" for none)."""
        return MemberSecrets(
            name=self.name,
            role=self.role,
            sign_seed=bytes(self._sign),
            seal_private=bytes(self._seal),
            totp_secret=totp_secret,
            member_id=self.member_id,
        )

    def to_keystore(
        self, passphrase: str, *, log2_n: int = DEFAULT_SCRYPT_LOG2_N, keep_totp_seed: bool = True
    ) -> bytes:
        """``keep_totp_seed=False``: the file holds no TOTP seed, so the keystore and its
        passphrase alone are one factor, not both."""
        check_passphrase(passphrase)
        if not MIN_SCRYPT_LOG2_N <= log2_n <= 20:
            raise KeystoreError(f"scrypt cost must be 2^{MIN_SCRYPT_LOG2_N}..2^20")
        salt = os.urandom(16)
        nonce = os.urandom(12)
        header = {
            "format": KEYSTORE_FORMAT,
            "kdf": {"name": "scrypt", "log2_n": log2_n, "r": 8, "p": 1, "salt": b64(salt)},
            "cipher": {"name": "aes-256-gcm", "nonce": b64(nonce)},
            "card": self.card().to_json(),
        }
        if self._member_id is not None:
            # Only a rotated key's keystore names its id (older keystores stay byte-identical).
            header["member"] = self._member_id
        key = _scrypt(passphrase, salt, log2_n)
        plaintext = canonical(
            {
                "sign_seed": bytes(self._sign).hex(),
                "seal_private": bytes(self._seal).hex(),
                "totp_secret": self.totp_secret if keep_totp_seed else "",
            }
        )
        ciphertext = AESGCM(key).encrypt(nonce, plaintext, canonical(header))
        return canonical({**header, "ciphertext": b64(ciphertext)}) + b"\n"

    @classmethod
    def from_keystore(cls, data: bytes, passphrase: str) -> MemberSecrets:
        doc = loads_strict(data)
        check_fields(
            doc,
            required=("format", "kdf", "cipher", "card", "ciphertext"),
            optional=("member",),
            where="keystore",
        )
        if doc["format"] != KEYSTORE_FORMAT:
            raise KeystoreError(f"not a {KEYSTORE_FORMAT} file")
        kdf = check_fields(doc["kdf"], required=("name", "log2_n", "r", "p", "salt"), where="kdf")
        if kdf["name"] != "scrypt" or kdf["r"] != 8 or kdf["p"] != 1:
            raise KeystoreError("unsupported keystore KDF parameters")
        log2_n = kdf["log2_n"]
        if not isinstance(log2_n, int) or not MIN_SCRYPT_LOG2_N <= log2_n <= 20:
            raise KeystoreError("unsupported scrypt cost")
        cipher = check_fields(doc["cipher"], required=("name", "nonce"), where="cipher")
        header = {k: doc[k] for k in ("format", "kdf", "cipher", "card", "member") if k in doc}
        key = _scrypt(passphrase, unb64(kdf["salt"], what="salt"), log2_n)
        try:
            plaintext = AESGCM(key).decrypt(
                unb64(cipher["nonce"], what="nonce"),
                unb64(doc["ciphertext"], what="ciphertext"),
                canonical(header),
            )
        except InvalidTag:
            raise KeystoreError("wrong passphrase, or the keystore file was altered") from None
        inner = check_fields(
            loads_strict(plaintext),
            required=("sign_seed", "seal_private", "totp_secret"),
            where="keystore secrets",
        )
        card = IdentityCard.from_json(doc["card"])
        secrets = cls(
            name=card.name,
            role=card.role,
            sign_seed=bytes.fromhex(inner["sign_seed"]),
            seal_private=bytes.fromhex(inner["seal_private"]),
            totp_secret=inner["totp_secret"],
            member_id=doc.get("member"),
        )
        if secrets.sign_public != card.sign_public or secrets.seal_public != card.seal_public:
            raise KeystoreError("keystore keys do not match its identity card")
        return secrets


def member_id_from_keystore(data: bytes) -> str:
    """The member id a keystore acts as (readable without the passphrase): the id it
    names after a key rotation, else the one derived from its card."""
    doc = loads_strict(data)
    card = card_from_keystore(data)
    named = doc.get("member")
    if named is None:
        return card.member_id
    if not isinstance(named, str) or not MEMBER_ID_RE.fullmatch(named):
        raise KeystoreError("keystore names a malformed member id")
    return named


def card_from_keystore(data: bytes) -> IdentityCard:
    """The public card, readable without the passphrase."""
    doc = loads_strict(data)
    if not isinstance(doc, dict) or "card" not in doc:
        raise KeystoreError("not a keystore file")
    return IdentityCard.from_json(doc["card"])


def _scrypt(passphrase: str, salt: bytes, log2_n: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=1 << log2_n, r=8, p=1).derive(passphrase.encode("utf-8"))


def verify_ed25519(public_key: bytes, message: bytes, signature: bytes, *, what: str) -> None:
    """libsodium's verifier: refuses non-canonical S and small-order keys."""
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise BadSignatureError(f"{what}: signature does not verify") from None
