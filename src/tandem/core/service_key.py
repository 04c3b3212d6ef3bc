"""The service key: signs audit checkpoints (Ed25519) and receives members' TOTP seeds
(X25519 sealed boxes). It is created by ``tandem init`` and kept in a file beside, not
inside, the database. It can never open a key-set share: those are sealed to members.
"""

from __future__ import annotations

import os
from typing import Any

import nacl.public
import nacl.signing

from tandem.core.canonical import canonical, check_fields, loads_strict
from tandem.core.identity import b64, unb64
from tandem.errors import ConfigurationError, DecryptionError

FORMAT = "tandem-service-key/1"


class ServiceKey:
    __slots__ = ("_seal", "_sign")

    def __init__(self, sign_seed: bytes, seal_private: bytes) -> None:
        self._sign = nacl.signing.SigningKey(sign_seed)
        self._seal = nacl.public.PrivateKey(seal_private)

    def __repr__(self) -> str:
        return f"ServiceKey(sign_public={self.sign_public.hex()}, <private keys hidden>)"

    def __reduce__(self) -> Any:
        raise TypeError("ServiceKey cannot be pickled; it lives only in its key file")

    @classmethod
    def generate(cls) -> ServiceKey:
        return cls(os.urandom(32), os.urandom(32))

    @property
    def sign_seed(self) -> bytes:
        return bytes(self._sign)

    @property
    def sign_public(self) -> bytes:
        return bytes(self._sign.verify_key)

    @property
    def seal_public(self) -> bytes:
        return bytes(self._seal.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._sign.sign(message).signature)

    def unseal(self, sealed: bytes) -> bytes:
        try:
            return bytes(nacl.public.SealedBox(self._seal).decrypt(sealed))
        except Exception:
            raise DecryptionError("sealed value cannot be opened with the service key") from None

    def public_json(self) -> dict[str, Any]:
        return {"sign_public": self.sign_public.hex(), "seal_public": self.seal_public.hex()}

    def to_file_bytes(self) -> bytes:
        return (
            canonical(
                {
                    "format": FORMAT,
                    "sign_seed": b64(bytes(self._sign)),
                    "seal_private": b64(bytes(self._seal)),
                }
            )
            + b"\n"
        )

    @classmethod
    def from_file_bytes(cls, data: bytes) -> ServiceKey:
        doc = check_fields(
            loads_strict(data),
            required=("format", "sign_seed", "seal_private"),
            where="service key",
        )
        if doc["format"] != FORMAT:
            raise ConfigurationError(f"service key file is not {FORMAT}")
        return cls(unb64(doc["sign_seed"], what="sign_seed"), unb64(doc["seal_private"], what="seal"))


def seal_to(public_key: bytes, plaintext: bytes) -> bytes:
    return bytes(nacl.public.SealedBox(nacl.public.PublicKey(public_key)).encrypt(plaintext))
