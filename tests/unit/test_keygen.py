"""Key derivation from OS entropy mixed with every ceremony contribution."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import coincurve
import nacl.signing
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.canonical import digest
from tandem.core.chains import secp256k1
from tandem.core.chains.base import Curve
from tandem.core.keygen import (
    check_reveal,
    commit_contribution,
    derive_private_keys,
    make_contribution,
    public_key_for,
)
from tandem.errors import CommitmentMismatchError, CryptoError, InputError

CEREMONY = "cer-0001"
OS_ENTROPY = bytes(range(32))
CONTRIBUTIONS = {
    "mallory-manager": bytes([1]) * 32,
    "carol-custodian": bytes([2]) * 32,
    "cathy-custodian": bytes([3]) * 32,
}


def derive(curve: object = "secp256k1", **overrides: object) -> list[bytes]:
    args: dict[str, object] = {
        "curve": curve,
        "count": 3,
        "os_entropy": OS_ENTROPY,
        "contributions": CONTRIBUTIONS,
        "ceremony_id": CEREMONY,
    }
    args.update(overrides)
    return [bytes(k) for k in derive_private_keys(**args)]  # type: ignore[arg-type]


def counter_randbytes(start: int = 0) -> Callable[[int], bytes]:
    counter = itertools.count(start)

    def randbytes(n: int) -> bytes:
        return hashlib.sha256(next(counter).to_bytes(8, "big")).digest()[:n]

    return randbytes


# --- contributions and commitments -----------------------------------------------------


def test_make_contribution_is_32_bytes_from_the_given_source() -> None:
    assert len(make_contribution()) == 32
    assert make_contribution() != make_contribution()
    assert make_contribution(randbytes=counter_randbytes()) == make_contribution(
        randbytes=counter_randbytes()
    )


def test_make_contribution_refuses_a_short_source() -> None:
    with pytest.raises(CryptoError, match="wrong number of bytes"):
        make_contribution(randbytes=lambda n: b"\x00" * (n - 1))


def test_commitment_is_the_documented_digest() -> None:
    contribution = bytes(range(32))
    expected = digest(
        "ceremony-commitment",
        {"ceremony": CEREMONY, "member": "alice", "contribution": contribution.hex()},
    ).hex()
    assert commit_contribution(ceremony_id=CEREMONY, member_id="alice", contribution=contribution) == expected


def test_reveal_matching_the_commitment_is_accepted() -> None:
    c = make_contribution()
    commitment = commit_contribution(ceremony_id=CEREMONY, member_id="alice", contribution=c)
    check_reveal(ceremony_id=CEREMONY, member_id="alice", contribution=c, commitment=commitment)
    check_reveal(
        ceremony_id=CEREMONY,
        member_id="alice",
        contribution=bytearray(c),
        commitment=commitment.upper(),
    )


def test_reveal_mismatch_is_refused_naming_the_member() -> None:
    c = make_contribution()
    commitment = commit_contribution(ceremony_id=CEREMONY, member_id="bob", contribution=c)
    other = bytes([c[0] ^ 1]) + c[1:]
    with pytest.raises(CommitmentMismatchError, match="'bob'") as info:
        check_reveal(ceremony_id=CEREMONY, member_id="bob", contribution=other, commitment=commitment)
    assert info.value.details["member"] == "bob"
    assert c.hex() not in str(info.value)
    assert other.hex() not in str(info.value)


def test_commitment_is_bound_to_member_and_ceremony() -> None:
    c = make_contribution()
    commitment = commit_contribution(ceremony_id=CEREMONY, member_id="alice", contribution=c)
    # Bob cannot adopt Alice's commitment and reveal as his own.
    with pytest.raises(CommitmentMismatchError, match="'bob'"):
        check_reveal(ceremony_id=CEREMONY, member_id="bob", contribution=c, commitment=commitment)
    with pytest.raises(CommitmentMismatchError):
        check_reveal(ceremony_id="cer-0002", member_id="alice", contribution=c, commitment=commitment)


@pytest.mark.parametrize("bad", ["", "zz" * 32, "00" * 31, "ä" * 64])
def test_malformed_commitment_is_a_mismatch(bad: str) -> None:
    with pytest.raises(CommitmentMismatchError):
        check_reveal(ceremony_id=CEREMONY, member_id="a", contribution=bytes(32), commitment=bad)


def test_contribution_of_wrong_size_is_refused() -> None:
    with pytest.raises(InputError, match="'alice'"):
        commit_contribution(ceremony_id=CEREMONY, member_id="alice", contribution=bytes(31))


# --- derivation ------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ["secp256k1", "ed25519"])
def test_derivation_is_deterministic(curve: Curve) -> None:
    keys = derive(curve)
    assert keys == derive(curve)
    assert len(keys) == 3
    assert len(set(keys)) == 3
    assert all(len(k) == 32 for k in keys)


def test_derivation_returns_wipeable_bytearrays() -> None:
    keys = derive_private_keys(
        curve="secp256k1",
        count=1,
        os_entropy=OS_ENTROPY,
        contributions=CONTRIBUTIONS,
        ceremony_id=CEREMONY,
    )
    assert all(isinstance(k, bytearray) for k in keys)


def test_derivation_matches_the_documented_construction() -> None:
    members = sorted(CONTRIBUTIONS)
    ikm = OS_ENTROPY
    for m in members:
        ikm += len(m).to_bytes(2, "big") + m.encode() + (32).to_bytes(2, "big")
        ikm += CONTRIBUTIONS[m]
    salt = digest("keygen-salt", {"ceremony": CEREMONY, "members": members})

    def hkdf(info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)

    ed = [hkdf(b"tandem keygen\x00ed25519\x00" + i.to_bytes(4, "big")) for i in range(3)]
    assert derive("ed25519") == ed
    k1 = [hkdf(b"tandem keygen\x00secp256k1\x00" + i.to_bytes(4, "big") + bytes(4)) for i in range(3)]
    assert derive("secp256k1") == k1


@pytest.mark.parametrize("member", sorted(CONTRIBUTIONS))
def test_changing_any_one_contribution_changes_every_key(member: str) -> None:
    base = derive()
    changed = dict(CONTRIBUTIONS)
    changed[member] = bytes([changed[member][0] ^ 0x80]) + changed[member][1:]
    new = derive(contributions=changed)
    assert all(a != b for a, b in zip(base, new, strict=True))


def test_changing_os_entropy_changes_every_key() -> None:
    base = derive()
    new = derive(os_entropy=bytes([0xFF]) + OS_ENTROPY[1:])
    assert all(a != b for a, b in zip(base, new, strict=True))


def test_contributions_are_bound_to_their_members() -> None:
    swapped = dict(CONTRIBUTIONS)
    swapped["carol-custodian"], swapped["cathy-custodian"] = (
        swapped["cathy-custodian"],
        swapped["carol-custodian"],
    )
    assert derive(contributions=swapped)[0] != derive()[0]


def test_mapping_order_does_not_matter() -> None:
    for order in itertools.permutations(CONTRIBUTIONS):
        assert derive(contributions={m: CONTRIBUTIONS[m] for m in order}) == derive()


def test_ceremony_and_curve_separate_the_outputs() -> None:
    assert derive(ceremony_id="cer-0002")[0] != derive()[0]
    assert derive("ed25519")[0] != derive("secp256k1")[0]


def test_a_longer_count_extends_without_changing_earlier_keys() -> None:
    assert derive(count=5)[:3] == derive(count=3)


def test_out_of_range_secp256k1_output_is_rederived(monkeypatch: pytest.MonkeyPatch) -> None:
    real = secp256k1.is_valid_private_key
    calls: list[int] = []

    def reject_first(key: bytes) -> bool:
        calls.append(1)
        return len(calls) > 1 and real(key)

    monkeypatch.setattr(secp256k1, "is_valid_private_key", reject_first)
    first = derive(count=1)[0]
    assert len(calls) == 2
    monkeypatch.setattr(secp256k1, "is_valid_private_key", real)
    assert first != derive(count=1)[0]
    assert real(first)


def test_persistently_invalid_output_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secp256k1, "is_valid_private_key", lambda key: False)
    with pytest.raises(CryptoError, match="secp256k1"):
        derive(count=1)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"os_entropy": bytes(31)}, "os_entropy"),
        ({"count": 0}, "count"),
        ({"count": 101}, "count"),
        ({"count": True}, "count"),
        ({"curve": "p256"}, "unknown curve"),
        ({"contributions": {}}, "at least one contribution"),
        ({"contributions": {"alice": bytes(16)}}, "'alice'"),
        ({"ceremony_id": ""}, "ceremony_id"),
        ({"contributions": {"": bytes(32)}}, "member_id"),
    ],
)
def test_bad_derivation_inputs_are_refused(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        derive(**overrides)


# --- public keys -----------------------------------------------------------------------


def test_public_key_for_secp256k1_is_compressed_sec1() -> None:
    key = derive(count=1)[0]
    pub = public_key_for("secp256k1", key)
    assert len(pub) == 33
    assert pub[0] in (2, 3)
    assert pub == coincurve.PrivateKey(key).public_key.format(compressed=True)


def test_public_key_for_ed25519_is_the_raw_verify_key() -> None:
    seed = derive("ed25519", count=1)[0]
    pub = public_key_for("ed25519", bytearray(seed))
    assert pub == bytes(nacl.signing.SigningKey(seed).verify_key)
    assert len(pub) == 32


def test_public_key_for_refuses_invalid_keys() -> None:
    with pytest.raises(CryptoError):
        public_key_for("secp256k1", bytes(32))
    with pytest.raises(CryptoError):
        public_key_for("ed25519", bytes(31))
    with pytest.raises(InputError):
        public_key_for("p256", bytes(32))  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    entropy=st.binary(min_size=32, max_size=64),
    contributions=st.dictionaries(
        st.text(alphabet="abcdefghij-", min_size=1, max_size=12),
        st.binary(min_size=32, max_size=32),
        min_size=1,
        max_size=4,
    ),
    curve=st.sampled_from(["secp256k1", "ed25519"]),
)
def test_any_inputs_give_valid_keys(entropy: bytes, contributions: dict[str, bytes], curve: Curve) -> None:
    keys = derive_private_keys(
        curve=curve,
        count=2,
        os_entropy=entropy,
        contributions=contributions,
        ceremony_id=CEREMONY,
    )
    for key in keys:
        assert len(public_key_for(curve, key)) == (33 if curve == "secp256k1" else 32)
