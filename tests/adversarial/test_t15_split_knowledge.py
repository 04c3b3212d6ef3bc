"""THREATS 15: with the database, the service key and one side's shares, no key comes out.

The attacker gets the full sealed key-set JSON, the resealed shares of a finished
operation (its one-time key is gone), the service Ed25519 key and *every* X25519
private key of one side. It opens every box it can with every key it has, then tries
as DEK every 32-byte value it holds and every XOR of two such values, against every
encrypted key. A positive control runs the same search with one key from each side,
so a search that could never succeed would not pass for a proof.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass

import nacl.exceptions
import nacl.public
import nacl.signing
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tandem.core.canonical import domain_bytes
from tandem.core.chains.base import Curve
from tandem.core.keygen import derive_private_keys, public_key_for
from tandem.core.split import (
    OperationKey,
    Side,
    open_operation_shares,
    reseal_share,
    seal_keyset,
)

KEYSET = "ks-cold-1"


@dataclass
class Deployment:
    manager_keys: dict[str, bytes]  # member id -> X25519 private key
    custodian_keys: dict[str, bytes]
    service_key: nacl.signing.SigningKey
    private_keys: dict[str, bytes]  # key id -> private key (the attacker's target)
    database: dict[str, object]  # what the server stores, as JSON


def build() -> Deployment:
    managers = {m: bytes(nacl.public.PrivateKey.generate()) for m in ("mia", "max")}
    custodians = {c: bytes(nacl.public.PrivateKey.generate()) for c in ("cora", "cyd")}

    def public(private: bytes) -> bytes:
        return bytes(nacl.public.PrivateKey(private).public_key)

    entries = []
    plan: tuple[tuple[Curve, int], ...] = (("secp256k1", 2), ("ed25519", 1))
    for curve, count in plan:
        for i, priv in enumerate(
            derive_private_keys(
                curve=curve,
                count=count,
                os_entropy=os.urandom(32),
                contributions={"mia": os.urandom(32), "cora": os.urandom(32)},
                ceremony_id=f"cer-{curve}",
            )
        ):
            entries.append((f"{curve}-{i}", public_key_for(curve, priv), bytes(priv)))
    sealed = seal_keyset(
        keyset_id=KEYSET,
        private_keys=entries,
        manager_x25519_publics={m: public(k) for m, k in managers.items()},
        custodian_x25519_publics={c: public(k) for c, k in custodians.items()},
    )
    # A finished operation left its resealed shares in the database; its key is gone.
    with OperationKey() as op:
        contributors: tuple[tuple[Side, str, bytes], ...] = (
            ("manager", "mia", managers["mia"]),
            ("custodian", "cyd", custodians["cyd"]),
        )
        resealed = {
            side: reseal_share(
                sealed.shares(side)[member],
                key,
                op.public_key,
                keyset_id=KEYSET,
                side=side,
                operation_id="op-done",
            )
            for side, member, key in contributors
        }
        with open_operation_shares(
            op,
            keyset_id=KEYSET,
            operation_id="op-done",
            sealed_manager=resealed["manager"],
            sealed_custodian=resealed["custodian"],
            commitments=sealed.commitments,
            dek_check=sealed.dek_check,
        ):
            pass
        op_public = op.public_key
    database = {
        "keyset": json.loads(sealed.to_json()),
        "operations": [
            {
                "id": "op-done",
                "operation_public_key": op_public.hex(),
                "resealed": {s: base64.b64encode(b).decode() for s, b in resealed.items()},
            }
        ],
    }
    return Deployment(
        managers,
        custodians,
        nacl.signing.SigningKey.generate(),
        {key_id: priv for key_id, _, priv in entries},
        json.loads(json.dumps(database)),
    )


# --- the attacker: knows the formats, holds keys, has no access to the other side --------


def binary_fields(value: object, *, text: bool = True) -> Iterable[bytes]:
    """Every string in the database decoded every way it could be binary (and, with
    ``text``, its raw UTF-8 too)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from binary_fields(v, text=text)
    elif isinstance(value, list):
        for v in value:
            yield from binary_fields(v, text=text)
    elif isinstance(value, str):
        if text:
            yield value.encode()
        with contextlib.suppress(ValueError):
            yield bytes.fromhex(value)
        with contextlib.suppress(ValueError):
            yield base64.b64decode(value, validate=True)


def windows(blob: bytes, size: int = 32) -> Iterable[bytes]:
    for i in range(max(0, len(blob) - size + 1)):
        yield blob[i : i + size]


_OPENED: dict[tuple[bytes, bytes], bytes | None] = {}


def try_open(box: bytes, private: bytes) -> bytes | None:
    # Memoised: the search over database-derived keys is the same in every test.
    if (box, private) not in _OPENED:
        try:
            opened = nacl.public.SealedBox(nacl.public.PrivateKey(private)).decrypt(box)
            _OPENED[box, private] = bytes(opened)
        except (nacl.exceptions.CryptoError, ValueError, TypeError):
            _OPENED[box, private] = None
    return _OPENED[box, private]


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def attack(database: dict[str, object], x25519_keys: list[bytes], service_seed: bytes) -> set[str]:
    """Return the ids of every private key the attacker manages to decrypt."""
    keyset = database["keyset"]
    assert isinstance(keyset, dict)
    fields = [b for b in binary_fields(database) if b]
    decoded = [b for b in binary_fields(database, text=False) if b]

    # 1. Open every box with every private key we hold, including the service key in
    #    its X25519 form and raw, and every 32 bytes of binary data in the database.
    service = nacl.signing.SigningKey(service_seed)
    private_candidates = [
        *x25519_keys,
        bytes(service.to_curve25519_private_key()),
        service_seed,
        *(w for f in decoded for w in windows(f)),
    ]
    opened: list[bytes] = []
    boxes = [f for f in decoded if len(f) >= 48]
    for private, box in itertools.product(set(private_candidates), boxes):
        plaintext = try_open(box, private)
        if plaintext is not None:
            opened.append(plaintext)
    opened_values = {w for p in opened for w in windows(p)}

    # 2. Every 32-byte value we hold is a DEK candidate, and so is every XOR of an opened
    #    value with anything, and every XOR of two short-field values.
    held = {w for f in fields for w in windows(f)} | set(private_candidates) | opened_values
    short = {f for f in fields if len(f) == 32} | opened_values | {service_seed}
    candidates = set(held)
    candidates |= {xor(a, b) for a in opened_values for b in held}
    candidates |= {xor(a, b) for a, b in itertools.combinations(short, 2)}

    # 3. Try each candidate on each encrypted key, with and without the right AD.
    recovered: set[str] = set()
    for entry in keyset["keys"]:
        assert isinstance(entry, dict)
        blob = base64.b64decode(entry["ciphertext"])
        nonce, body = blob[:12], blob[12:]
        aad = domain_bytes(
            "keyset-key-aad",
            {
                "keyset": keyset["keyset"],
                "key_id": entry["key_id"],
                "public_key": entry["public_key"],
            },
        )
        for dek in candidates:
            for ad in (aad, None):
                try:
                    AESGCM(dek).decrypt(nonce, body, ad)
                except InvalidTag:
                    continue
                recovered.add(entry["key_id"])
    return recovered


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return build()


@pytest.mark.parametrize("side", ["manager", "custodian"])
def test_one_side_with_database_and_service_key_recovers_nothing(deployment: Deployment, side: str) -> None:
    keys = deployment.manager_keys if side == "manager" else deployment.custodian_keys
    recovered = attack(deployment.database, list(keys.values()), deployment.service_key.encode())
    assert recovered == set()


def test_database_and_service_key_alone_recover_nothing(deployment: Deployment) -> None:
    assert attack(deployment.database, [], deployment.service_key.encode()) == set()


def test_positive_control_one_key_from_each_side_recovers_everything(
    deployment: Deployment,
) -> None:
    keys = [deployment.manager_keys["max"], deployment.custodian_keys["cora"]]
    recovered = attack(deployment.database, keys, deployment.service_key.encode())
    assert recovered == set(deployment.private_keys)


def test_no_private_key_appears_anywhere_in_the_database(deployment: Deployment) -> None:
    text = json.dumps(deployment.database)
    blobs = list(binary_fields(deployment.database))
    for priv in deployment.private_keys.values():
        assert priv.hex() not in text.lower()
        assert base64.b64encode(priv).decode() not in text
        assert not any(priv in blob for blob in blobs)
