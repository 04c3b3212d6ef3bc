"""Split knowledge: DEK shares, sealing, operation keys, key-set sealing and reshare."""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.canonical import canonical, loads_strict
from tandem.core.chains.base import Curve
from tandem.core.keygen import derive_private_keys, public_key_for
from tandem.core.split import (
    OperationKey,
    SealedKeyset,
    Side,
    combine_shares,
    decrypt_private_key,
    dek_check,
    encrypt_private_key,
    new_dek,
    open_operation_shares,
    reseal_share,
    reshare,
    seal_keyset,
    seal_share,
    share_commitment,
    split_dek,
    unseal_share,
    wipe,
)
from tandem.errors import CryptoError, DecryptionError, InputError

KEYSET = "ks-0001"


def counter_randbytes(start: int = 0) -> Callable[[int], bytes]:
    counter = itertools.count(start)

    def randbytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return randbytes


def secret_forms(secret: bytes) -> list[str]:
    """How a secret could show up in text: hex (both cases) and base64 variants."""
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        base64.b64encode(secret).decode().rstrip("="),
    ]


def assert_no_secret_in(text: str, *secrets: bytes) -> None:
    for secret in secrets:
        for form in secret_forms(bytes(secret)):
            assert form not in text


@dataclass
class Member:
    member_id: str
    private: bytes
    public: bytes

    @classmethod
    def new(cls, member_id: str) -> Member:
        key = nacl.public.PrivateKey.generate()
        return cls(member_id, bytes(key), bytes(key.public_key))


@dataclass
class World:
    managers: list[Member]
    custodians: list[Member]
    keys: list[tuple[str, bytes, bytes]]  # key_id, public, private
    sealed: SealedKeyset

    def publics(self, side: Side) -> dict[str, bytes]:
        members = self.managers if side == "manager" else self.custodians
        return {m.member_id: m.public for m in members}


def make_keys() -> list[tuple[str, bytes, bytes]]:
    out = []
    plan: tuple[tuple[Curve, int], ...] = (("secp256k1", 2), ("ed25519", 1))
    for curve, count in plan:
        privs = derive_private_keys(
            curve=curve,
            count=count,
            os_entropy=bytes(32),
            contributions={"m": bytes([1]) * 32, "c": bytes([2]) * 32},
            ceremony_id=f"test-{curve}",
        )
        for i, priv in enumerate(privs):
            pub = public_key_for(curve, priv)
            out.append((f"{curve}-{i}", pub, bytes(priv)))
    return out


@pytest.fixture
def world() -> World:
    managers = [Member.new("mia"), Member.new("max")]
    custodians = [Member.new("cora"), Member.new("cyd")]
    keys = make_keys()
    sealed = seal_keyset(
        keyset_id=KEYSET,
        private_keys=keys,
        manager_x25519_publics={m.member_id: m.public for m in managers},
        custodian_x25519_publics={m.member_id: m.public for m in custodians},
    )
    return World(managers, custodians, keys, sealed)


def contribute(
    sealed: SealedKeyset,
    member: Member,
    op: OperationKey,
    *,
    operation_id: str = "op-1",
    keyset_id: str = KEYSET,
    side: Side | None = None,
    check_commitment: bool = True,
) -> bytes:
    """What a member's client does for an operation."""
    own_side, box = sealed.sealed_share_for(member.member_id)
    return reseal_share(
        box,
        member.private,
        op.public_key,
        keyset_id=keyset_id,
        side=side or own_side,
        operation_id=operation_id,
        expected_commitment=sealed.commitments[own_side] if check_commitment else None,
    )


@pytest.fixture
def opened(world: World) -> Iterator[tuple[World, OperationKey, bytes, bytes]]:
    op = OperationKey()
    yield (
        world,
        op,
        contribute(world.sealed, world.managers[0], op),
        contribute(world.sealed, world.custodians[1], op),
    )
    op.close()


def open_dek(
    sealed: SealedKeyset,
    op: OperationKey,
    manager_box: bytes,
    custodian_box: bytes,
    operation_id: str = "op-1",
) -> bytes:
    with open_operation_shares(
        op,
        keyset_id=sealed.keyset_id,
        operation_id=operation_id,
        sealed_manager=manager_box,
        sealed_custodian=custodian_box,
        commitments=sealed.commitments,
        dek_check=sealed.dek_check,
    ) as dek:
        return bytes(dek)


def decrypt_all(sealed: SealedKeyset, dek: bytes) -> dict[str, bytes]:
    return {
        k.key_id: bytes(
            decrypt_private_key(
                dek,
                keyset_id=sealed.keyset_id,
                key_id=k.key_id,
                public_key=k.public_key,
                blob=k.ciphertext,
            )
        )
        for k in sealed.keys
    }


# --- DEK and shares --------------------------------------------------------------------


def test_split_and_combine_round_trip() -> None:
    dek = new_dek()
    assert isinstance(dek, bytearray)
    assert len(dek) == 32
    s_m, s_c = split_dek(dek)
    assert combine_shares(s_m, s_c) == dek
    assert s_m != dek
    assert s_c != dek


def test_manager_share_comes_from_the_given_randomness() -> None:
    dek = bytes(range(32))
    s_m, s_c = split_dek(dek, randbytes=counter_randbytes())
    assert bytes(s_m) == counter_randbytes()(32)
    assert bytes(s_c) == bytes(a ^ b for a, b in zip(dek, s_m, strict=True))


@settings(max_examples=50, deadline=None)
@given(dek=st.binary(min_size=32, max_size=32), s_m=st.binary(min_size=32, max_size=32))
def test_split_round_trips_for_any_dek(dek: bytes, s_m: bytes) -> None:
    m, c = split_dek(dek, randbytes=lambda n: s_m)
    assert bytes(m) == s_m
    assert bytes(combine_shares(m, c)) == dek


def test_shares_of_the_wrong_size_are_refused() -> None:
    with pytest.raises(CryptoError, match="32 bytes"):
        combine_shares(bytes(31), bytes(32))
    with pytest.raises(CryptoError, match="32 bytes"):
        split_dek(bytes(16))
    with pytest.raises(CryptoError, match="wrong number of bytes"):
        new_dek(randbytes=lambda n: bytes(n - 1))


def test_wipe_zeroes_in_place() -> None:
    buf = bytearray(b"\x01" * 32)
    view = memoryview(buf)
    wipe(buf)
    assert bytes(view) == bytes(32)


def test_share_commitment_is_bound_to_side_and_key_set() -> None:
    share = bytes(range(32))
    c = share_commitment("manager", KEYSET, share)
    assert len(c) == 64
    assert c == share_commitment("manager", KEYSET, bytearray(share))
    assert c != share_commitment("custodian", KEYSET, share)
    assert c != share_commitment("manager", "ks-0002", share)
    assert c != hashlib.sha256(share).hexdigest()
    with pytest.raises(InputError, match="side"):
        share_commitment("auditor", KEYSET, share)  # type: ignore[arg-type]


def test_dek_check_is_keyed_by_the_dek_and_bound_to_the_key_set() -> None:
    dek = bytes(range(32))
    assert dek_check(dek, KEYSET) == dek_check(bytearray(dek), KEYSET)
    assert dek_check(dek, KEYSET) != dek_check(dek, "ks-0002")
    assert dek_check(dek, KEYSET) != dek_check(bytes(32), KEYSET)


# --- sealing to members ----------------------------------------------------------------


def test_seal_and_unseal_round_trip() -> None:
    alice = Member.new("alice")
    share = bytes(range(32))
    box = seal_share(share, alice.public)
    assert len(box) == 80
    opened = unseal_share(box, alice.private)
    assert isinstance(opened, bytearray)
    assert opened == share
    assert seal_share(share, alice.public) != box  # fresh ephemeral key each time


def test_unseal_with_another_key_or_tampered_box_fails() -> None:
    alice, bob = Member.new("alice"), Member.new("bob")
    box = seal_share(bytes(32), alice.public)
    with pytest.raises(DecryptionError):
        unseal_share(box, bob.private)
    tampered = box[:-1] + bytes([box[-1] ^ 1])
    with pytest.raises(DecryptionError):
        unseal_share(tampered, alice.private)
    with pytest.raises(DecryptionError):
        unseal_share(b"short", alice.private)


def test_sealing_refuses_bad_recipients() -> None:
    with pytest.raises(InputError, match="32 bytes"):
        seal_share(bytes(32), bytes(31))
    with pytest.raises(InputError, match="not usable"):
        seal_share(bytes(32), bytes(32))  # a low-order point


# --- private keys under the DEK --------------------------------------------------------


def test_private_key_round_trip_and_associated_data() -> None:
    dek = new_dek()
    _, pub, priv = make_keys()[0]
    blob = encrypt_private_key(
        dek, keyset_id=KEYSET, key_id="k1", public_key=pub, private_key=bytearray(priv)
    )
    assert len(blob) == 12 + 32 + 16
    out = decrypt_private_key(dek, keyset_id=KEYSET, key_id="k1", public_key=pub, blob=blob)
    assert isinstance(out, bytearray)
    assert out == priv
    for field, value in (("keyset_id", "ks-0002"), ("key_id", "k2"), ("public_key", b"\x02" * 33)):
        args = {"keyset_id": KEYSET, "key_id": "k1", "public_key": pub, field: value}
        with pytest.raises(DecryptionError):
            decrypt_private_key(dek, blob=blob, **args)  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        decrypt_private_key(new_dek(), keyset_id=KEYSET, key_id="k1", public_key=pub, blob=blob)
    with pytest.raises(DecryptionError, match="truncated"):
        decrypt_private_key(dek, keyset_id=KEYSET, key_id="k1", public_key=pub, blob=blob[:20])


def test_nonces_come_from_the_given_randomness() -> None:
    dek = bytes(32)
    _, pub, priv = make_keys()[0]
    a = encrypt_private_key(
        dek,
        keyset_id=KEYSET,
        key_id="k",
        public_key=pub,
        private_key=priv,
        randbytes=counter_randbytes(),
    )
    b = encrypt_private_key(
        dek,
        keyset_id=KEYSET,
        key_id="k",
        public_key=pub,
        private_key=priv,
        randbytes=counter_randbytes(),
    )
    assert a == b
    assert a[:12] == counter_randbytes()(12)


# --- the whole operation flow ----------------------------------------------------------


def test_both_sides_contributing_recovers_every_key(
    opened: tuple[World, OperationKey, bytes, bytes],
) -> None:
    world, op, m_box, c_box = opened
    dek = open_dek(world.sealed, op, m_box, c_box)
    assert decrypt_all(world.sealed, dek) == {k: priv for k, _, priv in world.keys}


@pytest.mark.parametrize(("manager", "custodian"), [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_any_manager_with_any_custodian_opens_the_set(world: World, manager: int, custodian: int) -> None:
    op = OperationKey()
    dek = open_dek(
        world.sealed,
        op,
        contribute(world.sealed, world.managers[manager], op),
        contribute(world.sealed, world.custodians[custodian], op),
    )
    assert dek_check(dek, KEYSET) == world.sealed.dek_check


def test_the_dek_is_wiped_and_the_operation_key_closed_on_exit(
    opened: tuple[World, OperationKey, bytes, bytes],
) -> None:
    world, op, m_box, c_box = opened
    with open_operation_shares(
        op,
        keyset_id=KEYSET,
        operation_id="op-1",
        sealed_manager=m_box,
        sealed_custodian=c_box,
        commitments=world.sealed.commitments,
        dek_check=world.sealed.dek_check,
    ) as dek:
        assert any(dek)
        held = dek
    assert held == bytearray(32)
    assert op.closed
    with pytest.raises(CryptoError, match="used or closed"):
        open_dek(world.sealed, op, m_box, c_box)


def test_the_dek_is_wiped_when_the_block_raises(
    opened: tuple[World, OperationKey, bytes, bytes],
) -> None:
    world, op, m_box, c_box = opened
    held: list[bytearray] = []

    def sign_and_fail() -> None:
        with open_operation_shares(
            op,
            keyset_id=KEYSET,
            operation_id="op-1",
            sealed_manager=m_box,
            sealed_custodian=c_box,
            commitments=world.sealed.commitments,
            dek_check=world.sealed.dek_check,
        ) as dek:
            held.append(dek)
            raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        sign_and_fail()
    assert held == [bytearray(32)]
    assert op.closed


def test_a_share_resealed_for_operation_a_is_refused_in_operation_b(world: World) -> None:
    op_a, op_b = OperationKey(), OperationKey()
    a_manager = contribute(world.sealed, world.managers[0], op_a, operation_id="op-A")
    b_custodian = contribute(world.sealed, world.custodians[0], op_b, operation_id="op-B")
    # Presented as is: B's key cannot open a box made for A's key.
    with pytest.raises(DecryptionError, match="manager share refused: it cannot be opened") as info:
        open_dek(world.sealed, op_b, a_manager, b_custodian, operation_id="op-B")
    assert info.value.details["sides"] == ["manager"]
    # A client shown B's key while it meant to contribute to A: the header gives it away.
    misled = contribute(world.sealed, world.managers[0], op_b, operation_id="op-A")
    with pytest.raises(DecryptionError, match="resealed for a different operation") as info:
        open_dek(world.sealed, op_b, misled, b_custodian, operation_id="op-B")
    assert info.value.details["sides"] == ["manager"]
    # Nothing was used up by the refusals: the proper contribution still works.
    good = contribute(world.sealed, world.managers[1], op_b, operation_id="op-B")
    assert dek_check(open_dek(world.sealed, op_b, good, b_custodian, "op-B"), KEYSET)


def test_a_share_resealed_for_another_key_set_or_side_is_refused(
    opened: tuple[World, OperationKey, bytes, bytes],
) -> None:
    world, op, m_box, c_box = opened
    other_set = contribute(
        world.sealed, world.custodians[0], op, keyset_id="ks-other", check_commitment=False
    )
    with pytest.raises(DecryptionError, match=r"custodian share refused: .*different key set"):
        open_dek(world.sealed, op, m_box, other_set)
    # A custodian's share passed off on the manager's side.
    with pytest.raises(DecryptionError) as info:
        open_dek(world.sealed, op, c_box, c_box)
    assert info.value.details["sides"] == ["manager"]
    assert "different side" in info.value.message


def test_a_wrong_share_is_attributed_to_its_side(world: World) -> None:
    other = seal_keyset(
        keyset_id="ks-other",
        private_keys=world.keys[:1],
        manager_x25519_publics=world.publics("manager"),
        custodian_x25519_publics=world.publics("custodian"),
    )
    op = OperationKey()
    good_m = contribute(world.sealed, world.managers[0], op)
    good_c = contribute(world.sealed, world.custodians[0], op)

    def wrong(member: Member, side: Side) -> bytes:
        # A client that skips the commitment check and contributes the wrong set's share.
        return reseal_share(
            other.shares(side)[member.member_id],
            member.private,
            op.public_key,
            keyset_id=KEYSET,
            side=side,
            operation_id="op-1",
        )

    bad_c = wrong(world.custodians[0], "custodian")
    with pytest.raises(DecryptionError, match=r"custodian share refused: .*commitment") as info:
        open_dek(world.sealed, op, good_m, bad_c)
    assert info.value.details["sides"] == ["custodian"]
    assert "manager share" not in info.value.message

    bad_m = wrong(world.managers[0], "manager")
    with pytest.raises(DecryptionError) as info:
        open_dek(world.sealed, op, bad_m, bad_c)
    assert info.value.details["sides"] == ["manager", "custodian"]

    assert open_dek(world.sealed, op, good_m, good_c)


def test_the_client_refuses_to_contribute_a_share_of_another_set(world: World) -> None:
    other = seal_keyset(
        keyset_id="ks-other",
        private_keys=world.keys[:1],
        manager_x25519_publics=world.publics("manager"),
        custodian_x25519_publics=world.publics("custodian"),
    )
    member = world.managers[0]
    with pytest.raises(DecryptionError, match="does not match"):
        reseal_share(
            other.manager_shares[member.member_id],
            member.private,
            OperationKey().public_key,
            keyset_id=KEYSET,
            side="manager",
            operation_id="op-1",
            expected_commitment=world.sealed.manager_commitment,
        )


def test_an_inconsistent_record_is_refused_without_blaming_a_side(
    opened: tuple[World, OperationKey, bytes, bytes],
) -> None:
    world, op, m_box, c_box = opened
    with (
        pytest.raises(DecryptionError, match="inconsistent") as info,
        open_operation_shares(
            op,
            keyset_id=KEYSET,
            operation_id="op-1",
            sealed_manager=m_box,
            sealed_custodian=c_box,
            commitments=world.sealed.commitments,
            dek_check="00" * 32,
        ),
    ):
        pytest.fail("must not yield")
    assert info.value.details["sides"] == []


def test_a_member_key_from_the_other_side_opens_nothing(world: World) -> None:
    manager = world.managers[0]
    for box in world.sealed.custodian_shares.values():
        with pytest.raises(DecryptionError):
            unseal_share(box, manager.private)


# --- sealed key sets -------------------------------------------------------------------


def test_sealed_keyset_json_round_trip_is_canonical(world: World) -> None:
    text = world.sealed.to_json()
    assert text.encode() == canonical(loads_strict(text))
    back = SealedKeyset.from_json(text)
    assert back == world.sealed
    assert back.to_json() == text
    assert SealedKeyset.from_json(text.encode()) == world.sealed
    doc = json.loads(text)
    assert doc["format"] == "tandem-sealed-keyset/1"
    assert set(doc["shares"]["manager"]) == {"mia", "max"}
    assert [k["key_id"] for k in doc["keys"]] == [k for k, _, _ in world.keys]


def test_sealed_keyset_is_immutable(world: World) -> None:
    with pytest.raises(TypeError):
        world.sealed.manager_shares["eve"] = b"x"  # type: ignore[index]


def mutate(world: World, change: Callable[[dict[str, object]], None]) -> str:
    doc = json.loads(world.sealed.to_json())
    change(doc)
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.pop("dek_check"), "missing field"),
        (lambda d: d.update(format="tandem-sealed-keyset/2"), "format"),
        (lambda d: d["commitments"].update(manager=d["commitments"]["manager"].upper()), "hex"),
        (lambda d: d["keys"][0].update(public_key=d["keys"][0]["public_key"].upper()), "hex"),
        (lambda d: d["keys"][0].update(ciphertext=d["keys"][0]["ciphertext"] + "=="), "base64"),
        (lambda d: d["keys"][0].update(ciphertext="AAAA"), "ciphertext"),
        (lambda d: d["keys"][0].update(note="x"), "unknown field"),
        (lambda d: d["keys"].append(dict(d["keys"][0])), "repeats a key id"),
        (lambda d: d.update(keys=[]), "holds no keys"),
        (lambda d: d["shares"].update(custodian={}), "no custodian recipients"),
        (
            lambda d: d["shares"]["custodian"].update(mia=d["shares"]["custodian"]["cora"]),
            "both shares",
        ),
        (lambda d: d["shares"]["manager"].update(mia="AAAA"), "80 bytes"),
        (lambda d: d.update(dek_check=7), "must be a string"),
    ],
)
def test_malformed_sealed_keyset_is_refused(
    world: World, change: Callable[[dict[str, object]], None], match: str
) -> None:
    with pytest.raises(InputError, match=match):
        SealedKeyset.from_json(mutate(world, change))


def test_seal_keyset_refuses_missing_recipients(world: World) -> None:
    for managers, custodians, side in (
        ({}, world.publics("custodian"), "manager"),
        (world.publics("manager"), {}, "custodian"),
    ):
        with pytest.raises(InputError, match=f"at least one {side}"):
            seal_keyset(
                keyset_id=KEYSET,
                private_keys=world.keys,
                manager_x25519_publics=managers,
                custodian_x25519_publics=custodians,
            )


def test_seal_keyset_refuses_one_holder_for_both_shares(world: World) -> None:
    mia = world.managers[0]
    with pytest.raises(InputError, match="both shares"):
        seal_keyset(
            keyset_id=KEYSET,
            private_keys=world.keys,
            manager_x25519_publics=world.publics("manager"),
            custodian_x25519_publics={"mia": mia.public},
        )
    with pytest.raises(InputError, match="share one X25519 key"):
        seal_keyset(
            keyset_id=KEYSET,
            private_keys=world.keys,
            manager_x25519_publics=world.publics("manager"),
            custodian_x25519_publics={"cora": mia.public},
        )


def test_seal_keyset_refuses_bad_key_entries(world: World) -> None:
    m, c = world.publics("manager"), world.publics("custodian")
    (k1, pub1, priv1), (_, pub2, _), (k3, pub3, priv3) = world.keys
    cases = [
        ([], "at least one key"),
        ([(k1, pub1, priv1), (k1, pub1, priv1)], "appears twice"),
        ([(k1, pub2, priv1)], "does not belong"),
        ([(k3, pub3[:31], priv3)], "33 .secp256k1. or 32 .Ed25519."),
        ([(k1, pub1, bytes(32))], "not a valid secp256k1"),
        ([(k1, pub1, priv1[:16])], "32 bytes"),
    ]
    for keys, match in cases:
        with pytest.raises((InputError, CryptoError), match=match):
            seal_keyset(
                keyset_id=KEYSET,
                private_keys=keys,
                manager_x25519_publics=m,
                custodian_x25519_publics=c,
            )


def test_ciphertexts_are_bound_to_their_slot(world: World) -> None:
    """Swapping two ciphertexts in the database makes both undecryptable."""
    op = OperationKey()
    dek = open_dek(
        world.sealed,
        op,
        contribute(world.sealed, world.managers[0], op),
        contribute(world.sealed, world.custodians[0], op),
    )
    a, b = world.sealed.keys[0], world.sealed.keys[1]
    with pytest.raises(DecryptionError, match=repr(a.key_id)):
        decrypt_private_key(
            dek, keyset_id=KEYSET, key_id=a.key_id, public_key=a.public_key, blob=b.ciphertext
        )


# --- reshare ---------------------------------------------------------------------------


def test_reshare_rotates_the_dek_and_drops_a_removed_member(world: World) -> None:
    op = OperationKey()
    old_dek = open_dek(
        world.sealed,
        op,
        contribute(world.sealed, world.managers[0], op),
        contribute(world.sealed, world.custodians[0], op),
    )
    removed = world.managers[1]
    newcomer = Member.new("nia")
    new = reshare(
        world.sealed,
        dek=bytearray(old_dek),
        new_manager_publics={"mia": world.managers[0].public, "nia": newcomer.public},
        new_custodian_publics=world.publics("custodian"),
    )
    assert new.keyset_id == world.sealed.keyset_id
    assert [(k.key_id, k.public_key) for k in new.keys] == [
        (k.key_id, k.public_key) for k in world.sealed.keys
    ]
    assert new.members("manager") == {"mia", "nia"}
    assert new.dek_check != world.sealed.dek_check
    assert new.manager_commitment != world.sealed.manager_commitment
    assert new.custodian_commitment != world.sealed.custodian_commitment

    # The removed member's key opens nothing in the new record.
    for box in [*new.manager_shares.values(), *new.custodian_shares.values()]:
        with pytest.raises(DecryptionError):
            unseal_share(box, removed.private)
    # The old DEK decrypts nothing in the new record ...
    assert dek_check(old_dek, KEYSET) != new.dek_check
    for k in new.keys:
        with pytest.raises(DecryptionError):
            decrypt_private_key(
                old_dek,
                keyset_id=KEYSET,
                key_id=k.key_id,
                public_key=k.public_key,
                blob=k.ciphertext,
            )
    # ... and an old share the removed member kept fails the new commitment.
    kept = unseal_share(world.sealed.manager_shares[removed.member_id], removed.private)
    assert share_commitment("manager", KEYSET, kept) != new.manager_commitment

    # The current members still recover every key.
    op2 = OperationKey()
    dek = open_dek(
        new,
        op2,
        contribute(new, newcomer, op2),
        contribute(new, world.custodians[1], op2),
    )
    assert decrypt_all(new, dek) == {k: priv for k, _, priv in world.keys}


def test_reshare_refuses_a_dek_of_another_set(world: World) -> None:
    with pytest.raises(DecryptionError, match="does not belong"):
        reshare(
            world.sealed,
            dek=new_dek(),
            new_manager_publics=world.publics("manager"),
            new_custodian_publics=world.publics("custodian"),
        )


def test_reshare_refuses_a_randomness_source_that_repeats_the_dek(world: World) -> None:
    op = OperationKey()
    dek = open_dek(
        world.sealed,
        op,
        contribute(world.sealed, world.managers[0], op),
        contribute(world.sealed, world.custodians[0], op),
    )
    with pytest.raises(CryptoError, match="repeated the old DEK"):
        reshare(
            world.sealed,
            dek=dek,
            new_manager_publics=world.publics("manager"),
            new_custodian_publics=world.publics("custodian"),
            randbytes=lambda n: dek[:n],
        )


# --- no secret in any repr or message --------------------------------------------------


def test_operation_key_never_shows_or_serialises_its_private_half() -> None:
    secret = counter_randbytes()(32)
    op = OperationKey(randbytes=counter_randbytes())
    text = repr(op) + str(op)
    assert op.public_hex in text
    assert_no_secret_in(text, secret)
    for attempt in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError, match="never"):
            attempt(op)
    open_before = not op.closed
    op.close()
    assert open_before
    assert op.closed
    assert "closed" in repr(op)


def test_sealed_keyset_repr_is_a_summary(world: World) -> None:
    text = repr(world.sealed) + repr(world.sealed.keys)
    assert "mia" in text
    assert KEYSET in text
    for k in world.sealed.keys:
        assert_no_secret_in(text, k.ciphertext)
    for box in [*world.sealed.manager_shares.values(), *world.sealed.custodian_shares.values()]:
        assert_no_secret_in(text, box)


def test_refusals_carry_no_secret(world: World) -> None:
    op = OperationKey()
    good_m = contribute(world.sealed, world.managers[0], op)
    s_m = unseal_share(world.sealed.manager_shares["mia"], world.managers[0].private)
    s_c = unseal_share(world.sealed.custodian_shares["cora"], world.custodians[0].private)
    dek = combine_shares(s_m, s_c)
    secrets_ = [bytes(s_m), bytes(s_c), bytes(dek), *(priv for _, _, priv in world.keys)]
    messages = []
    for attempt in (
        lambda: open_dek(world.sealed, op, good_m, good_m),
        lambda: unseal_share(world.sealed.manager_shares["mia"], world.custodians[0].private),
        lambda: decrypt_private_key(
            dek,
            keyset_id=KEYSET,
            key_id="nope",
            public_key=world.keys[0][1],
            blob=world.sealed.keys[0].ciphertext,
        ),
        lambda: reshare(
            world.sealed,
            dek=bytes(32),
            new_manager_publics=world.publics("manager"),
            new_custodian_publics=world.publics("custodian"),
        ),
    ):
        with pytest.raises(CryptoError) as info:
            attempt()
        messages.append(f"{info.value!s} {info.value!r} {info.value.to_dict()}")
    assert_no_secret_in(" ".join(messages), *secrets_)
