"""The offline-signer bundle carries a selection of the log, not the whole of it
(ADR 0011): every replayed (governance) entry, the request's own entries from its
creation on, and its wallet's velocity history, each placed in the signed tree by a
chain link or an inclusion proof, under an index the service signs. Leaving an entry
out, forging a proof or a line, or an index that does not cover what the signer's own
rule needs is refused; and the bundle's size does not follow the log's."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from tests.conftest import World
from tests.helpers.withdrawals import (
    btc_intent,
    create_approved,
    fresh_sessions,
    policy_doc,
    rule,
    setup,
)

from tandem.client import withdrawal as cw
from tandem.core import audit
from tandem.core import withdrawal as wcore
from tandem.core.canonical import canonical
from tandem.core.identity import MemberSecrets
from tandem.core.membership import REPLAYED_KINDS
from tandem.core.roles import Role
from tandem.errors import AuditVerificationError, VerificationError
from tandem.store import audit_log

HOUR = 3600
LONG = {"request_ttl_seconds": 7 * 86400, "approval_ttl_seconds": 2 * 86400}


def pin(world: World) -> str:
    return str(world.client.deployment()["genesis_hash"])


def get_bundle(world: World, wid: str) -> dict[str, Any]:
    return dict(world.client.get(world["alice"], f"/v1/withdrawals/{wid}/bundle"))


def verify(world: World, bundle: dict[str, Any]) -> wcore.VerifiedBundle:
    return wcore.verify_bundle(bundle, now=world.clock(), genesis_hash_pin=pin(world))


def indices(bundle: dict[str, Any]) -> list[int]:
    return list(bundle["audit"]["index"]["index"]["indices"])


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in bundle["audit"]["lines"]]


def resign(world: World, bundle: dict[str, Any], **changes: Any) -> None:
    """What a builder holding the service key could sign: the index with ``changes``."""
    body = {**bundle["audit"]["index"]["index"], **changes}
    bundle["audit"]["index"] = wcore.sign_bundle_index(world.svc.key.sign_seed, body)


def drop(world: World, bundle: dict[str, Any], index: int) -> None:
    """Take entry ``index`` out of the bundle as well as it can be done: out of the
    lines, the proofs and the indices, with a genuine proof for the entry before it
    (now no longer chained to a successor)."""
    listed = indices(bundle)
    pos = listed.index(index)
    a = bundle["audit"]
    del a["lines"][pos], a["proofs"][pos], listed[pos]
    a["index"]["index"]["indices"] = listed
    if pos > 0 and listed[pos - 1] == index - 1:
        size = a["checkpoint"]["checkpoint"]["tree_size"]
        with world.svc.db.read() as s:
            a["proofs"][pos - 1] = [h.hex() for h in audit_log.inclusion_proof(s, index - 1, size)]


def approved_after_governance(world: World) -> tuple[dict[str, Any], int]:
    """An approved request; returns it and the index of an address-book effect logged
    before it (outside the request's own tail)."""
    s = setup(world)
    w = create_approved(world, btc_intent(s))
    bundle = get_bundle(world, w["id"])
    tail_from = bundle["audit"]["index"]["index"]["tail_from"]
    effects = [e["index"] for e in entries(bundle) if e["kind"] == "addressbook.change_approved"]
    assert effects
    assert max(effects) < tail_from
    return w, effects[0]


def test_bundle_carries_every_replayed_entry_and_the_requests_tail(world: World) -> None:
    w, _ = approved_after_governance(world)
    bundle = get_bundle(world, w["id"])
    verified = verify(world, bundle)
    assert verified.withdrawal["id"] == w["id"]
    lines, _ = world.client.audit.export(world["olga"])
    full = [json.loads(x) for x in lines]
    body = bundle["audit"]["index"]["index"]
    # Exactly the replayed kinds below the tail, and everything from the tail on.
    want = sorted(
        {e["index"] for e in full if e["kind"] in REPLAYED_KINDS} | set(range(body["tail_from"], len(full)))
    )
    assert indices(bundle) == want
    assert len(want) < len(full)
    assert [e["kind"] for e in entries(bundle)[:1]] == ["deployment.genesis"]
    # Only the ends of runs carry a proof; the rest are placed by their successor's prev.
    proofs = bundle["audit"]["proofs"]
    chained = {i for i in want if i + 1 in set(want)}
    assert [p is None for p in proofs] == [i in chained for i in want]


def test_omitted_governance_entry_refused(world: World) -> None:
    w, effect = approved_after_governance(world)
    genuine = get_bundle(world, w["id"])
    # Dropped with every proof still genuine: the signed index no longer matches.
    bundle = copy.deepcopy(genuine)
    drop(world, bundle, effect)
    with pytest.raises(AuditVerificationError, match="index signature does not verify"):
        verify(world, bundle)
    # Dropped from the lines only: the lines are not the listed entries.
    bundle = copy.deepcopy(genuine)
    pos = indices(bundle).index(effect)
    del bundle["audit"]["lines"][pos], bundle["audit"]["proofs"][pos]
    with pytest.raises(AuditVerificationError, match="lines of the listed entries"):
        verify(world, bundle)
    # Dropped and the index re-signed with a key that is not the pinned service key.
    bundle = copy.deepcopy(genuine)
    drop(world, bundle, effect)
    body = bundle["audit"]["index"]["index"]
    bundle["audit"]["index"] = wcore.sign_bundle_index(b"\x07" * 32, body)
    with pytest.raises(AuditVerificationError, match="does not verify under the service key"):
        verify(world, bundle)
    # An index (even one the service signed) selecting fewer kinds than the signer
    # replays: a removal or a veto of a kind left out would go unseen.
    bundle = copy.deepcopy(genuine)
    resign(world, bundle, replayed_kinds=[k for k in REPLAYED_KINDS if k != "member.removed"])
    with pytest.raises(AuditVerificationError, match="other entry kinds"):
        verify(world, bundle)
    # The member adding its share refuses the same bundle before resealing anything.
    bundle = copy.deepcopy(genuine)
    drop(world, bundle, effect)
    bundle["signer"] = MemberSecrets.generate(name="cold signer", role=Role.CUSTODIAN).card().to_json()
    with pytest.raises(AuditVerificationError):
        cw.add_share(bundle, world["cora"], now=world.clock())


def test_omitted_entry_of_the_requests_tail_refused(world: World) -> None:
    """A veto or a removal after the request would be in its tail: the tail must be
    whole, even under an index the service signed."""
    w, _ = approved_after_governance(world)
    bundle = get_bundle(world, w["id"])
    last = indices(bundle)[-1]
    drop(world, bundle, last - 1)
    resign(world, bundle, indices=indices(bundle))
    with pytest.raises(AuditVerificationError, match="after the request's creation are not all there"):
        verify(world, bundle)
    # A tail claimed from the genesis, or past the end of the tree: refused the same way.
    for tail_from in (0, indices(bundle)[-1] + 5):
        resign(world, bundle, tail_from=tail_from)
        with pytest.raises(AuditVerificationError, match="after the request's creation are not all there"):
            verify(world, bundle)


def test_forged_proof_refused(world: World) -> None:
    w, _effect = approved_after_governance(world)
    genuine = get_bundle(world, w["id"])
    verify(world, genuine)
    listed = indices(genuine)
    proved = [i for i, p in zip(listed, genuine["audit"]["proofs"], strict=True) if p is not None]
    target = next(i for i in proved if i != listed[-1])
    pos = listed.index(target)

    # One node of the proof changed.
    bundle = copy.deepcopy(genuine)
    node = bundle["audit"]["proofs"][pos][0]
    bundle["audit"]["proofs"][pos][0] = ("0" if node[0] != "0" else "1") + node[1:]
    with pytest.raises(AuditVerificationError, match=f"entry {target}: not in the signed tree") as err:
        verify(world, bundle)
    assert err.value.index == target
    # Another entry's (genuine) proof.
    bundle = copy.deepcopy(genuine)
    other = next(i for i in proved if i != target)
    bundle["audit"]["proofs"][pos] = genuine["audit"]["proofs"][listed.index(other)]
    with pytest.raises(AuditVerificationError, match=f"entry {target}"):
        verify(world, bundle)
    # A proof node too few.
    bundle = copy.deepcopy(genuine)
    bundle["audit"]["proofs"][pos] = bundle["audit"]["proofs"][pos][1:]
    with pytest.raises(AuditVerificationError, match=f"entry {target}"):
        verify(world, bundle)
    # No proof where one is needed.
    bundle = copy.deepcopy(genuine)
    bundle["audit"]["proofs"][pos] = None
    with pytest.raises(AuditVerificationError, match=f"entry {target}: no inclusion proof"):
        verify(world, bundle)


def test_forged_line_refused_whether_proved_or_chained(world: World) -> None:
    """A line rewritten with a self-consistent hash: its own check passes, its place in
    the signed tree does not."""
    w, _ = approved_after_governance(world)
    genuine = get_bundle(world, w["id"])
    listed = indices(genuine)
    proofs = genuine["audit"]["proofs"]
    proved = next(i for i, p in zip(listed, proofs, strict=True) if p is not None and i > 0)
    chained = next(i for i, p in zip(listed, proofs, strict=True) if p is None and i > 0)
    for target, message in ((proved, "not in the signed tree"), (chained, "prev does not match")):
        bundle = copy.deepcopy(genuine)
        pos = listed.index(target)
        entry = json.loads(bundle["audit"]["lines"][pos])
        entry.pop("hash")
        entry["time"] += 1
        entry["hash"] = audit.entry_hash(entry)
        bundle["audit"]["lines"][pos] = canonical(entry).decode()
        with pytest.raises(AuditVerificationError, match=message):
            verify(world, bundle)


def test_velocity_history_is_carried_and_its_omission_refused(world: World) -> None:
    velocity = {"amount": "150000", "period_seconds": HOUR}
    s = setup(world, policy=policy_doc(2, [rule("capped", velocity=velocity, **LONG)]))
    first = create_approved(world, btc_intent(s, amount=60_000))
    assert world.client.withdrawals.release(world["bob"], first["id"])["status"] == "released"
    # Out of the window: not carried.
    world.clock.advance(HOUR + 1)
    fresh_sessions(world)
    second = create_approved(world, btc_intent(s, amount=60_000))
    assert world.client.withdrawals.release(world["bob"], second["id"])["status"] == "released"
    world.clock.advance(HOUR // 2)
    fresh_sessions(world)
    third = create_approved(world, btc_intent(s, amount=60_000))
    bundle = get_bundle(world, third["id"])
    verify(world, bundle)
    carried = {(e["kind"], e["data"].get("withdrawal")) for e in entries(bundle)}
    assert ("withdrawal.created", second["id"]) in carried
    assert ("withdrawal.released", second["id"]) in carried
    assert not any(wid == first["id"] for _, wid in carried)
    history = bundle["audit"]["index"]["index"]["history"]
    assert history["since"] <= third["created_at"] - HOUR
    # The past request's creation left out.
    created = next(
        e["index"]
        for e in entries(bundle)
        if e["kind"] == "withdrawal.created" and e["data"]["withdrawal"] == second["id"]
    )
    dropped = copy.deepcopy(bundle)
    drop(world, dropped, created)
    with pytest.raises(AuditVerificationError, match="index signature does not verify"):
        verify(world, dropped)
    # An index whose history starts inside the policy's window, even one the service
    # signed, does not cover what the limits look at.
    late = copy.deepcopy(bundle)
    resign(world, late, history={**history, "since": third["created_at"] - HOUR + 60})
    with pytest.raises(VerificationError, match="does not cover the window"):
        verify(world, late)
    other = copy.deepcopy(bundle)
    resign(world, other, history={**history, "wallet": "ks_other"})
    with pytest.raises(VerificationError, match="does not cover the window"):
        verify(world, other)


def _size(world: World) -> int:
    with world.svc.db.read() as s:
        return audit_log.size(s)


def _grow(world: World, total: int) -> None:
    """Pad the log to ``total`` entries with ordinary non-governance entries (sessions
    opened), through the log's own batch writer: each gets its chain link, subtree
    roots and signed checkpoint like any other."""
    while (n := _size(world)) < total:
        batch = min(2000, total - n)
        with world.svc.db.write() as s:
            audit_log.append_batch(
                s,
                world.svc.key,
                deployment=world.deployment,
                records=[
                    audit_log.Record(
                        kind="session.opened",
                        actor=world["olga"].member_id,
                        outcome="ok",
                        code=None,
                        envelope=None,
                        data={"member": world["olga"].member_id},
                        time=world.clock(),
                    )
                    for _ in range(batch)
                ],
            )


def test_bundle_size_flat_in_the_size_of_the_log(world: World) -> None:
    """The same kind of request, bundled at a 1,000- and a 20,000-entry log: within 1.5x,
    and a small fraction of the log it used to carry whole."""
    s = setup(world)
    _grow(world, 1_000)
    small_w = create_approved(world, btc_intent(s))
    small = get_bundle(world, small_w["id"])
    verify(world, small)
    _grow(world, 20_000)
    large_w = create_approved(world, btc_intent(s))
    large = get_bundle(world, large_w["id"])
    verify(world, large)
    assert _size(world) >= 20_000
    small_bytes = len(canonical(small))
    large_bytes = len(canonical(large))
    assert large_bytes <= 1.5 * small_bytes, (small_bytes, large_bytes)
    with world.svc.db.read() as session:
        log_bytes = sum(len(x) for x in audit_log.iter_lines(session, stop=audit_log.size(session)))
    assert large_bytes < log_bytes / 20, (large_bytes, log_bytes)
