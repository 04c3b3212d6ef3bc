"""THREATS 22: a proxy serves its own service key and operation key.

The proxy (``tests/adversarial/proxy.py``) sits between the members' clients and the
real app. It swaps the service keys in ``GET /v1/deployment`` and every operation key in
prepare / withdrawal / proof answers for its own, signed with its own service key. If a
client resealed to that key, the proxy could open the manager's and the custodian's
shares and rebuild the DEK. Each member's client holds the genesis it signed (its pin)
and refuses before anything is sealed; the proxy's log of every request body shows no
box its keys open. The control: the same proxy, not tampering, lets everything through.
"""

from __future__ import annotations

import pytest
from tests.adversarial.proxy import InterceptingProxy
from tests.conftest import World
from tests.helpers.audit import audit_entries
from tests.helpers.withdrawals import Setup, btc_intent, setup

from tandem.core import split
from tandem.errors import NotPinnedError, PinError

# (swap the deployment's service keys, swap the operation keys)
FULL = (True, True)
OPERATIONS_ONLY = (False, True)  # /v1/deployment passes through; only operations are forged


def _proxy(world: World, mode: tuple[bool, bool]) -> InterceptingProxy:
    swap_service, swap_operations = mode
    return InterceptingProxy(
        world.client.http, swap_service=swap_service, swap_operations=swap_operations
    )


def _withdrawals(world: World) -> list[tuple[str, str, int]]:
    return sorted(
        (w["id"], w["status"], len(w.get("approvals") or []))
        for w in world.client.withdrawals.list(world["olga"])
    )


def _kinds(world: World) -> list[str]:
    return [e["kind"] for e in audit_entries(world)]


def _nothing_left(proxy: InterceptingProxy, *paths: str) -> None:
    for path in paths:
        assert proxy.posted(path) == [], f"a request reached {path}"
    assert proxy.opened_with_attacker_keys() == []


@pytest.mark.parametrize("mode", [FULL, OPERATIONS_ONLY], ids=["service+operation", "operation"])
def test_manager_create_refused_by_the_client(world: World, mode: tuple[bool, bool]) -> None:
    s = setup(world)
    proxy = _proxy(world, mode)
    before, log_before = _withdrawals(world), _kinds(world)
    with pytest.raises(PinError) as refused:
        proxy.client(world).withdrawals.create(world["alice"], btc_intent(s))
    assert refused.value.code == "pin_mismatch"
    assert "nothing was sealed" in refused.value.message
    _nothing_left(proxy, "/v1/withdrawals")
    assert _withdrawals(world) == before
    # The server saw no create: no withdrawal entry, no refusal of one either.
    new = _kinds(world)[len(log_before):]
    assert not [k for k in new if k.startswith("withdrawal.created")]


@pytest.mark.parametrize("mode", [FULL, OPERATIONS_ONLY], ids=["service+operation", "operation"])
def test_custodian_approve_refused_by_the_client(world: World, mode: tuple[bool, bool]) -> None:
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    proxy = _proxy(world, mode)
    before, log_before = _withdrawals(world), _kinds(world)
    with pytest.raises(PinError) as refused:
        proxy.client(world).withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    assert refused.value.code == "pin_mismatch"
    _nothing_left(proxy, "/approve", "/shares")
    assert _withdrawals(world) == before
    new = _kinds(world)[len(log_before):]
    assert not [k for k in new if "approv" in k]


@pytest.mark.parametrize("mode", [FULL, OPERATIONS_ONLY], ids=["service+operation", "operation"])
def test_custodian_contribute_refused_by_the_client(world: World, mode: tuple[bool, bool]) -> None:
    s = setup(world)
    created = world.client.withdrawals.create(world["alice"], btc_intent(s))
    proxy = _proxy(world, mode)
    with pytest.raises(PinError):
        proxy.client(world).withdrawals.contribute_share(world["bob"], created["id"])
    _nothing_left(proxy, "/shares")


@pytest.mark.parametrize("mode", [FULL, OPERATIONS_ONLY], ids=["service+operation", "operation"])
def test_proof_contributions_refused_by_the_client(world: World, mode: tuple[bool, bool]) -> None:
    setup(world)
    view = world.client.proofs.issue(world["olga"], statement="Q3", scope={"kind": "all"})
    proxy = _proxy(world, mode)
    for who in ("alice", "bob"):
        with pytest.raises(PinError):
            proxy.client(world).proofs.contribute(world[who], view["id"], totp=world.code(who))
    _nothing_left(proxy, "/contributions")
    after = world.client.proofs.get(world["olga"], view["id"])
    assert after["status"] == view["status"]


def test_totp_seed_never_sealed_to_the_proxys_key(world: World) -> None:
    proxy = _proxy(world, FULL)
    with pytest.raises(PinError):
        proxy.client(world).members.enrol_totp(world["bob"], old_code=world.code("bob"))
    _nothing_left(proxy, "/v1/totp/enrol")


def test_a_client_without_a_pin_seals_nothing(world: World) -> None:
    s = setup(world)
    proxy = _proxy(world, (False, False))
    bare = proxy.client(world)
    bare.pin = None
    with pytest.raises(NotPinnedError) as refused:
        bare.withdrawals.create(world["alice"], btc_intent(s))
    assert refused.value.code == "not_pinned"
    _nothing_left(proxy, "/v1/withdrawals")


def test_the_attack_is_real_without_the_pin(world: World) -> None:
    """Positive control for the opening check: a share resealed to the operation key the
    proxy forged (trusting the key the proxy serves, as the client used to) opens with
    the proxy's key. The pinned client never makes such a box."""
    s: Setup = setup(world)
    proxy = _proxy(world, FULL)
    prepared = world.client.withdrawals.prepare(world["alice"], s.keyset.id)
    forged = proxy.forged_operation(prepared["operation"])
    _side, sealed = split.reseal_for_operation(
        world["alice"], prepared["keyset"], forged, bytes(proxy.sign_key.verify_key)
    )
    proxy.requests.append(("POST", "/v1/withdrawals", f'{{"sealed_share": "{sealed}"}}'.encode()))
    assert proxy.opened_with_attacker_keys() == ["/v1/withdrawals"]


def test_control_an_honest_proxy_passes_everything(world: World) -> None:
    s = setup(world)
    proxy = _proxy(world, (False, False))
    client = proxy.client(world)
    created = client.withdrawals.create(world["alice"], btc_intent(s))
    approved = client.withdrawals.approve(world["bob"], created["id"], totp=world.code("bob"))
    assert approved["status"] == "approved"
    assert proxy.posted("/approve")
    assert proxy.sealed_boxes_sent() >= 2
    assert proxy.opened_with_attacker_keys() == []
