"""THREATS 31: a withdrawal approved while its destination was on the address book is not
released once the destination has left it: release re-checks the allow-list in force
now, online and through the offline signer's import."""

from __future__ import annotations

import pytest
from tests.adversarial.limits_helpers import count_ok, refused
from tests.conftest import World
from tests.helpers.withdrawals import (
    approve_proposal,
    btc_intent,
    create_approved,
    eth_intent,
    policy_doc,
    rule,
    setup,
)

from tandem.client import withdrawal as cw
from tandem.core.identity import MemberSecrets
from tandem.core.roles import Role
from tandem.errors import VerificationError

# Address-book changes take effect at once under this policy (change delay 0), so the
# removal lands between approval and release.
POLICY = policy_doc(2, [rule("default", approval_ttl_seconds=7200)])


def remove_entry(world: World, entry_id: str) -> None:
    prop = world.client.policy.propose_address_removal(world["mark"], entry_id)
    approve_proposal(world, prop["id"], "cora")
    assert {e["id"]: e["status"] for e in world.client.policy.address_book(world["olga"])}[
        entry_id
    ] == "removed"


def test_t31_release_after_the_destination_left_the_address_book_refused(world: World) -> None:
    s = setup(world, policy=POLICY)
    w = create_approved(world, btc_intent(s))
    assert w["status"] == "approved"
    remove_entry(world, s.entries["cold vault btc"])
    err = refused(
        world,
        "destination_not_allowed",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        w["id"],
    )
    assert err.http_status == 403
    after = world.client.withdrawals.get(world["olga"], w["id"])
    assert after["status"] == "approved"
    assert after["signed_tx"] is None
    assert count_ok(world, "withdrawal.released") == 0


def test_t31_removing_one_asset_entry_stops_that_assets_release_only(world: World) -> None:
    s = setup(world, policy=POLICY)
    eth = create_approved(world, eth_intent(s, nonce=1))
    btc = create_approved(world, btc_intent(s))
    remove_entry(world, s.entries["cold vault eth"])
    refused(
        world,
        "destination_not_allowed",
        "withdrawal.release",
        world.client.withdrawals.release,
        world["bob"],
        eth["id"],
    )
    assert world.client.withdrawals.release(world["bob"], btc["id"])["status"] == "released"


def test_t31_offline_signer_and_import_refuse_after_removal(world: World) -> None:
    s = setup(world, policy=POLICY)
    w = create_approved(world, btc_intent(s))
    signer = MemberSecrets.generate(name="cold-signer", role=Role.CUSTODIAN)
    bundle = world.client.withdrawals.export_bundle(world["alice"], w["id"], signer.card())
    bundle = cw.add_share(bundle, world["bob"], now=world.clock())
    result = cw.offline_sign(bundle, signer, now=world.clock())
    remove_entry(world, s.entries["cold vault btc"])
    # The server refuses to record it ...
    refused(
        world,
        "destination_not_allowed",
        "withdrawal.import",
        world.client.withdrawals.import_result,
        world["bob"],
        result,
    )
    # ... and a bundle exported now is refused by the members' clients and the signer.
    with pytest.raises(VerificationError, match="left the address book"):
        world.client.withdrawals.export_bundle(world["alice"], w["id"], signer.card())
