"""Test shortcut: put a key set straight into the database, as a finished ceremony would,
so withdrawal and proof tests do not each run a whole ceremony. The ceremony tests
cover how key sets are really made."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from sqlmodel import select
from tests.conftest import World

from tandem.client.pin import PinnedKeyset
from tandem.core import split
from tandem.core.canonical import canonical
from tandem.core.chains import get_chain
from tandem.core.keygen import public_key_for
from tandem.store.models import AddressRow, KeyRow, KeySet, Member


@dataclass
class TestKeyset:
    id: str
    curve: str
    keys: list[tuple[str, bytes, bytes]]  # (key_id, public_key, private_key) - tests only
    addresses: list[dict[str, str]] = field(default_factory=list)


def make_keyset(
    world: World,
    *,
    curve: str = "secp256k1",
    chains: tuple[tuple[str, str], ...] = (("bitcoin", "testnet"), ("ethereum", "sepolia")),
    count: int = 1,
    segregation: str = "own",
) -> TestKeyset:
    keyset_id = "ks_" + secrets.token_hex(8)
    keys = []
    for i in range(count):
        priv = os.urandom(32)
        if curve == "secp256k1":
            from tandem.core.chains.secp256k1 import is_valid_private_key

            while not is_valid_private_key(priv):
                priv = os.urandom(32)
        keys.append((f"{keyset_id}-k{i}", public_key_for(curve, priv), priv))  # type: ignore[arg-type]
    with world.svc.db.write() as session:
        members = session.exec(select(Member).where(Member.status == "active")).all()
        sealed = split.seal_keyset(
            keyset_id=keyset_id,
            private_keys=keys,
            manager_x25519_publics={
                m.id: bytes.fromhex(m.seal_public) for m in members if m.role == "manager"
            },
            custodian_x25519_publics={
                m.id: bytes.fromhex(m.seal_public) for m in members if m.role == "custodian"
            },
        )
        session.add(
            KeySet(
                id=keyset_id,
                ceremony="test-fixture",
                curve=curve,
                segregation=segregation,
                status="active",
                sealed=sealed.to_json(),
                created_at=world.clock(),
            )
        )
        out = TestKeyset(id=keyset_id, curve=curve, keys=keys)
        for i, (key_id, pub, _priv) in enumerate(keys):
            session.add(
                KeyRow(
                    id=key_id,
                    keyset=keyset_id,
                    position=i,
                    curve=curve,
                    public_key=pub.hex(),
                    segregation=segregation,
                )
            )
            for chain, network in chains:
                address = get_chain(chain).address(pub, network)
                session.add(
                    AddressRow(
                        key_id=key_id,
                        keyset=keyset_id,
                        chain=chain,
                        network=network,
                        address=address,
                        segregation=segregation,
                        birth_proof=canonical({"fixture": True}).decode(),
                    )
                )
                out.addresses.append(
                    {"key_id": key_id, "chain": chain, "network": network, "address": address}
                )
    # As a finished ceremony would: the members (who share world.client here) countersigned
    # this key set, so their pin holds it.
    if world.client.pin is not None:
        world.client.pin.add_keyset(
            PinnedKeyset.from_sealed(sealed, generation=1, transcript_hash="0" * 64)
        )
    return out
