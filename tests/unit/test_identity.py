"""Member identities: keystore confidentiality and integrity, identity-card
proof of possession, and private keys that never show in a repr."""

from __future__ import annotations

import base64
import json
import os
import pickle

import pytest

from tandem.core.canonical import canonical
from tandem.core.identity import (
    KEYSTORE_FORMAT,
    MIN_SCRYPT_LOG2_N,
    IdentityCard,
    MemberSecrets,
    _scrypt,
    b64,
    card_from_keystore,
    member_id_for,
)
from tandem.core.roles import Role
from tandem.core.service_key import ServiceKey
from tandem.errors import Error, KeystoreError

PASSPHRASE = "correct horse battery staple"
FAST = MIN_SCRYPT_LOG2_N


@pytest.fixture(scope="module")
def member() -> MemberSecrets:
    return MemberSecrets.generate(name="alice", role=Role.MANAGER)


@pytest.fixture(scope="module")
def keystore(member: MemberSecrets) -> bytes:
    return member.to_keystore(PASSPHRASE, log2_n=FAST)


def _secret_strings(m: MemberSecrets) -> list[str]:
    seed = bytes(m._sign)
    seal = bytes(m.seal_private_key)
    out = [m.totp_secret]
    for raw in (seed, seal):
        out += [
            raw.hex(),
            raw.hex().upper(),
            b64(raw),
            base64.urlsafe_b64encode(raw).decode(),
            base64.b32encode(raw).decode(),
        ]
    return out


# --- keystore ---------------------------------------------------------------------------


def test_keystore_round_trip(member: MemberSecrets, keystore: bytes) -> None:
    back = MemberSecrets.from_keystore(keystore, PASSPHRASE)
    assert back.sign_public == member.sign_public
    assert back.seal_public == member.seal_public
    assert back.totp_secret == member.totp_secret
    assert back.member_id == member.member_id
    assert back.name == "alice"
    assert back.role is Role.MANAGER


def test_keystore_file_holds_no_plaintext_secret(member: MemberSecrets, keystore: bytes) -> None:
    text = keystore.decode("ascii")
    for s in _secret_strings(member):
        assert s not in text
    assert PASSPHRASE not in text


def test_wrong_passphrase_refused(keystore: bytes) -> None:
    with pytest.raises(KeystoreError) as err:
        MemberSecrets.from_keystore(keystore, PASSPHRASE + "!")
    assert err.value.code == "keystore_error"
    assert PASSPHRASE not in str(err.value)


def _tampered(keystore: bytes, edit: str) -> bytes:
    doc = json.loads(keystore)
    if edit == "ciphertext":
        raw = bytearray(base64.b64decode(doc["ciphertext"]))
        raw[5] ^= 0x01
        doc["ciphertext"] = b64(bytes(raw))
    elif edit == "tag":
        raw = bytearray(base64.b64decode(doc["ciphertext"]))
        raw[-1] ^= 0x80
        doc["ciphertext"] = b64(bytes(raw))
    elif edit == "truncated_ciphertext":
        doc["ciphertext"] = b64(base64.b64decode(doc["ciphertext"])[:-17])
    elif edit == "nonce":
        raw = bytearray(base64.b64decode(doc["cipher"]["nonce"]))
        raw[0] ^= 0x01
        doc["cipher"]["nonce"] = b64(bytes(raw))
    elif edit == "salt":
        raw = bytearray(base64.b64decode(doc["kdf"]["salt"]))
        raw[0] ^= 0x01
        doc["kdf"]["salt"] = b64(bytes(raw))
    elif edit == "card_name":
        doc["card"]["name"] = "mallory"
    elif edit == "card_role":
        doc["card"]["role"] = "custodian"
    elif edit == "cost_down":
        doc["kdf"]["log2_n"] = MIN_SCRYPT_LOG2_N - 1
    elif edit == "cost_up":
        doc["kdf"]["log2_n"] = 30
    elif edit == "format":
        doc["format"] = "tandem-keystore/0"
    elif edit == "extra_field":
        doc["comment"] = "hi"
    elif edit == "kdf_r":
        doc["kdf"]["r"] = 1
    return canonical(doc)


@pytest.mark.parametrize(
    "edit",
    [
        "ciphertext",
        "tag",
        "truncated_ciphertext",
        "nonce",
        "salt",
        "card_name",
        "card_role",
        "cost_down",
        "cost_up",
        "format",
        "extra_field",
        "kdf_r",
    ],
)
def test_tampered_keystore_refused(keystore: bytes, edit: str) -> None:
    with pytest.raises(Error) as err:
        MemberSecrets.from_keystore(_tampered(keystore, edit), PASSPHRASE)
    assert err.value.code in {"keystore_error", "bad_signature", "unknown_field"}
    assert err.value.status < 500


@pytest.mark.parametrize(
    "data", [b"", b"{", b"[]", b'{"format":"tandem-keystore/1","format":"x"}', b"\xff" * 10]
)
def test_garbage_keystore_refused_with_a_code(data: bytes) -> None:
    with pytest.raises(Error) as err:
        MemberSecrets.from_keystore(data, PASSPHRASE)
    assert err.value.status < 500


def test_keystore_whose_secrets_do_not_match_its_card_refused(member: MemberSecrets) -> None:
    """A correctly encrypted file carrying someone else's card: the keys must match."""
    other = MemberSecrets.generate(name="alice", role=Role.MANAGER)
    salt, nonce = os.urandom(16), os.urandom(12)
    header = {
        "format": KEYSTORE_FORMAT,
        "kdf": {"name": "scrypt", "log2_n": FAST, "r": 8, "p": 1, "salt": b64(salt)},
        "cipher": {"name": "aes-256-gcm", "nonce": b64(nonce)},
        "card": other.card().to_json(),
    }
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plaintext = canonical(
        {
            "sign_seed": bytes(member._sign).hex(),
            "seal_private": bytes(member.seal_private_key).hex(),
            "totp_secret": member.totp_secret,
        }
    )
    ct = AESGCM(_scrypt(PASSPHRASE, salt, FAST)).encrypt(nonce, plaintext, canonical(header))
    forged = canonical({**header, "ciphertext": b64(ct)})
    with pytest.raises(KeystoreError, match="do not match"):
        MemberSecrets.from_keystore(forged, PASSPHRASE)


@pytest.mark.parametrize("passphrase", ["", "short", "1234567"])
def test_short_passphrase_refused(member: MemberSecrets, passphrase: str) -> None:
    with pytest.raises(KeystoreError):
        member.to_keystore(passphrase, log2_n=FAST)


@pytest.mark.parametrize("log2_n", [MIN_SCRYPT_LOG2_N - 1, 21])
def test_scrypt_cost_outside_bounds_refused_when_writing(member: MemberSecrets, log2_n: int) -> None:
    with pytest.raises(KeystoreError):
        member.to_keystore(PASSPHRASE, log2_n=log2_n)


def test_card_readable_without_passphrase_and_holds_only_public_keys(
    member: MemberSecrets, keystore: bytes
) -> None:
    card = card_from_keystore(keystore)
    assert card == member.card()
    text = json.dumps(card.to_json())
    for s in _secret_strings(member):
        assert s not in text


# --- identity cards ---------------------------------------------------------------------


def test_card_is_self_signed_and_round_trips(member: MemberSecrets) -> None:
    card = member.card()
    card.verify()
    assert IdentityCard.from_json(card.to_json()) == card
    assert card.member_id == member_id_for(member.sign_public) == member.member_id
    assert card.member_id.startswith("mem_")


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "mallory"), ("role", "custodian"), ("seal_public", "00" * 32)],
)
def test_card_edited_after_signing_refused(member: MemberSecrets, field: str, value: str) -> None:
    doc = member.card().to_json()
    doc[field] = value
    with pytest.raises(Error) as err:
        IdentityCard.from_json(doc)
    assert err.value.code == "bad_signature"


def test_card_naming_a_key_its_presenter_does_not_hold_refused(member: MemberSecrets) -> None:
    victim = MemberSecrets.generate(name="bob", role=Role.CUSTODIAN)
    doc = member.card().to_json()
    doc["sign_public"] = victim.sign_public.hex()
    with pytest.raises(Error) as err:
        IdentityCard.from_json(doc)
    assert err.value.code == "bad_signature"


@pytest.mark.parametrize(
    "name",
    [
        "",
        " alice",
        "a" * 65,
        "Zoe\u0301",
        "Zo\u00e9",
        "al\x00ice",
        "<script>",
        "'; DROP TABLE member; --",
        "{{7*7}}",
        "../../etc/passwd",
        "alice\n",
        "\u202eecila",
    ],
)
def test_card_names_outside_the_allowed_alphabet_refused(name: str) -> None:
    m = MemberSecrets.generate(name="placeholder", role=Role.MANAGER)
    m.name = name
    with pytest.raises(Error) as err:
        IdentityCard.from_json(m.card().to_json())
    assert err.value.code == "invalid_input"


def test_card_with_unknown_field_or_role_refused(member: MemberSecrets) -> None:
    doc = {**member.card().to_json(), "admin": True}
    with pytest.raises(Error) as err:
        IdentityCard.from_json(doc)
    assert err.value.code == "unknown_field"
    m = MemberSecrets.generate(name="root", role=Role.MANAGER)
    doc = m.card().to_json()
    doc["role"] = "superuser"
    with pytest.raises(Error) as err:
        IdentityCard.from_json(doc)
    assert err.value.code == "invalid_input"


# --- secrets never in a repr --------------------------------------------------------------


def test_member_secrets_repr_and_str_hide_keys(member: MemberSecrets) -> None:
    for text in (repr(member), str(member), f"{member}", f"{member!r}", repr([member]), repr({"m": member})):
        assert "hidden" in text or "MemberSecrets" in text
        for s in _secret_strings(member):
            assert s not in text


def test_member_secrets_have_no_instance_dict(member: MemberSecrets) -> None:
    assert not hasattr(member, "__dict__")


def test_service_key_repr_hides_keys() -> None:
    key = ServiceKey.generate()
    secrets = [bytes(key._sign), bytes(key._seal)]
    for text in (repr(key), str(key)):
        for raw in secrets:
            for form in (raw.hex(), b64(raw), base64.urlsafe_b64encode(raw).decode()):
                assert form not in text


def test_member_secrets_cannot_be_pickled(member: MemberSecrets) -> None:
    """Secrets go to disk only through the passphrase-encrypted keystore ("never
    serialised except into a keystore"); pickle would write all three in clear."""
    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(member)


def test_service_key_cannot_be_pickled() -> None:
    with pytest.raises((TypeError, pickle.PicklingError)):
        pickle.dumps(ServiceKey.generate())
