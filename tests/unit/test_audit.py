"""The audit log: entry format, checkpoints, and offline verification of an export.

The tamper tests edit a 50-entry export the way an attacker with write access to the
file could, and require verification to name the first entry at which the export
stops being what the service wrote. Each runs twice: in one process, and split into
8-entry chunks over worker processes, where the answer must not change.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core import audit
from tandem.core.audit import (
    ENTRY_FIELDS,
    GENESIS_PREV,
    VerifyReport,
    entry_hash,
    entry_leaf,
    export_line,
    key_id,
    make_entry,
    sign_checkpoint,
    verify_chain,
    verify_checkpoint,
    verify_export,
)
from tandem.core.canonical import canonical, domain_bytes, loads_strict
from tandem.core.merkle import EMPTY_ROOT, merkle_root
from tandem.errors import AuditVerificationError, BadSignatureError, InputError

T0 = 1_790_000_000
DEP = "dep_test"
N = 50
SERVICE_SEED = bytes(range(32))
SERVICE_PUBLIC = bytes(nacl.signing.SigningKey(SERVICE_SEED).verify_key)
OTHER_SEED = b"\x42" * 32
MEMBER = nacl.signing.SigningKey(b"\x01" * 32)


# --- building a log ------------------------------------------------------------------


def envelope_for(i: int, *, valid: bool = True) -> dict[str, Any]:
    action = {
        "type": "withdrawal.approve",
        "deployment": DEP,
        "actor": "m_alice",
        "body": {"request_id": f"w_{i:04d}"},
        "nonce": f"{i:032x}",
        "issued_at": T0 + i,
    }
    signed = action if valid else {**action, "nonce": "0" * 32}
    signature = MEMBER.sign(domain_bytes("action", signed)).signature
    return {"action": action, "signature": base64.b64encode(signature).decode()}


def envelope_verifier(entry: dict[str, Any]) -> None:
    envelope = entry["envelope"]
    try:
        MEMBER.verify_key.verify(
            domain_bytes("action", envelope["action"]), base64.b64decode(envelope["signature"])
        )
    except nacl.exceptions.BadSignatureError:
        raise BadSignatureError("signature of m_alice does not verify") from None


def fields_for(i: int, *, bad_envelope: bool = False) -> dict[str, Any]:
    refused = i % 5 == 3
    return {
        "index": i,
        "time": T0 + i,
        "deployment": DEP,
        "kind": "withdrawal.approved" if i % 4 == 1 else "member.proposed",
        "actor": None if i == 0 else f"m_{i % 3}",
        "outcome": "refused" if refused else "ok",
        "code": "quorum_not_met" if refused else None,
        "envelope": envelope_for(i, valid=not bad_envelope) if i % 4 == 1 else None,
        # Entry 7 is not ASCII, so the strict (slow) parsing path is exercised too.
        "data": {"i": i, "city": "Zürich" if i == 7 else "Basel", "tags": ["a", "b"]},
    }


def build(n: int = N, *, bad_envelopes: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    prev = GENESIS_PREV
    for i in range(n):
        entry = make_entry(**fields_for(i, bad_envelope=i in bad_envelopes), prev=prev)
        entries.append(entry)
        prev = entry["hash"]
    return entries


def rehash(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The entry with ``changes`` applied and its hash recomputed, as a forger would."""
    fields = {k: v for k, v in entry.items() if k != "hash"}
    fields.update(changes)
    return {**fields, "hash": entry_hash(fields)}


def lines_of(entries: list[dict[str, Any]]) -> list[bytes]:
    return [export_line(e) for e in entries]


def checkpoint_for(
    entries: list[dict[str, Any]],
    *,
    seed: bytes = SERVICE_SEED,
    tree_size: int | None = None,
    deployment: str = DEP,
    root: str | None = None,
    last_hash: str | None = None,
) -> dict[str, Any]:
    size = len(entries) if tree_size is None else tree_size
    covered = entries[:size]
    return sign_checkpoint(
        seed,
        deployment=deployment,
        tree_size=size,
        root=root or merkle_root([entry_leaf(e) for e in covered]).hex(),
        last_hash=last_hash or (covered[-1]["hash"] if covered else GENESIS_PREV),
        time=T0 + 10_000,
    )


ENTRIES = build()
LINES = lines_of(ENTRIES)
CHECKPOINT = checkpoint_for(ENTRIES)


@pytest.fixture(params=[1, 2], ids=["sequential", "parallel"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    if request.param > 1:
        # Small chunks so that a 50-entry export spans seven of them.
        monkeypatch.setattr(audit, "PARALLEL_CHUNK", 8)
    value: int = request.param
    return value


def expect_bad(
    lines: list[bytes],
    index: int | None,
    match: str,
    *,
    workers: int,
    checkpoint: dict[str, Any] = CHECKPOINT,
    verifier: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    with pytest.raises(AuditVerificationError, match=match) as info:
        verify_export(
            lines, checkpoint, SERVICE_PUBLIC, envelope_verifier=verifier, workers=workers
        )
    assert info.value.index == index
    assert info.value.details.get("first_bad_entry") == index


def edited(lines: list[bytes], i: int, new: bytes) -> list[bytes]:
    out = list(lines)
    out[i] = new
    return out


def reserialised(i: int, mutate: Callable[[dict[str, Any]], None]) -> list[bytes]:
    entry = json.loads(LINES[i])
    mutate(entry)
    return edited(LINES, i, canonical(entry) + b"\n")


# --- the untouched export --------------------------------------------------------------


def test_untouched_export_verifies(workers: int) -> None:
    progress: list[int] = []
    report = verify_export(
        LINES,
        CHECKPOINT,
        SERVICE_PUBLIC,
        envelope_verifier=envelope_verifier,
        progress=progress.append,
        workers=workers,
    )
    assert report == VerifyReport(
        entries=N,
        tree_size=N,
        root=merkle_root([bytes.fromhex(e["hash"]) for e in ENTRIES]).hex(),
        last_hash=ENTRIES[-1]["hash"],
        deployment=DEP,
        checkpoint_time=T0 + 10_000,
        envelopes_verified=sum(e["envelope"] is not None for e in ENTRIES),
    )
    assert report.envelopes_verified == 13
    assert progress[-1] == N
    assert progress == sorted(set(progress))


def test_export_accepts_str_lines_without_newlines_and_files() -> None:
    as_text = [line.decode().rstrip("\n") for line in LINES]
    assert verify_export(as_text, CHECKPOINT, SERVICE_PUBLIC).entries == N
    assert verify_export(io.BytesIO(b"".join(LINES)), CHECKPOINT, SERVICE_PUBLIC).entries == N


def test_empty_log_verifies_against_an_empty_checkpoint() -> None:
    checkpoint = checkpoint_for([])
    assert checkpoint["checkpoint"]["root"] == EMPTY_ROOT.hex()
    assert verify_export([], checkpoint, SERVICE_PUBLIC).entries == 0


# --- THREATS 19: edits, deletions, insertions, reordering -------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "member.removed"),
        ("time", T0 + 999),
        ("actor", "m_evil"),
        ("data", {"i": 17, "city": "Basel", "tags": ["a"]}),
        ("envelope", None),
    ],
)
def test_edited_field_is_named(workers: int, field: str, value: Any) -> None:
    assert ENTRIES[17]["envelope"] is not None
    lines = reserialised(17, lambda e: e.update({field: value}))
    expect_bad(lines, 17, r"^entry 17: hash does not match its content$", workers=workers)


def test_edited_nested_value_is_named(workers: int) -> None:
    lines = reserialised(17, lambda e: e["envelope"]["action"]["body"].update(request_id="w_9"))
    expect_bad(lines, 17, "entry 17: hash does not match its content", workers=workers)


def test_refusal_turned_into_success_is_named(workers: int) -> None:
    assert ENTRIES[23]["outcome"] == "refused"
    lines = reserialised(23, lambda e: e.update(outcome="ok", code=None))
    expect_bad(lines, 23, "entry 23: hash does not match its content", workers=workers)


@pytest.mark.parametrize(
    ("i", "edit"),
    [
        (17, lambda s: s.replace(b'":', b'": ', 1)),
        (17, lambda s: s.replace(b"\n", b" \n")),
        (17, lambda s: s.replace(b"\n", b"\r\n")),
        (17, lambda s: b" " + s),
        (17, lambda s: json.dumps(json.loads(s), indent=1).encode() + b"\n"),
        (
            17,
            lambda s: (
                json.dumps(dict(reversed(json.loads(s).items())), separators=(",", ":")).encode()
                + b"\n"
            ),
        ),
        (17, lambda s: s.replace(b'"Basel"', b'"Bas\\u0065l"')),
        (7, lambda s: s.replace("ü".encode(), b"\\u00fc")),
        (7, lambda s: s.replace("ü".encode(), "u\u0308".encode())),
    ],
    ids=[
        "space-after-colon",
        "trailing-space",
        "crlf",
        "leading-space",
        "pretty-printed",
        "keys-reordered",
        "needless-escape",
        "non-ascii-escaped",
        "unicode-decomposed",
    ],
)
def test_whitespace_and_encoding_edits_are_named(
    workers: int, i: int, edit: Callable[[bytes], bytes]
) -> None:
    lines = edited(LINES, i, edit(LINES[i]))
    assert lines[i] != LINES[i]
    # Decomposing "ü" changes the content, not only its encoding.
    match = "hash does not match" if lines[i].count(b"u\xcc\x88") else "not in canonical form"
    expect_bad(lines, i, f"^entry {i}: .*{match}", workers=workers)


def test_deleted_middle_entry_is_named(workers: int) -> None:
    lines = LINES[:20] + LINES[21:]
    expect_bad(lines, 20, r"^entry 20: index is 21, expected 20$", workers=workers)


def test_deleted_first_entry_is_named(workers: int) -> None:
    expect_bad(LINES[1:], 0, r"^entry 0: index is 1, expected 0$", workers=workers)


def test_deleted_last_entry_is_named(workers: int) -> None:
    expect_bad(
        LINES[:-1],
        49,
        r"^entry 49: missing; the checkpoint covers 50 entries and the export ends after 49$",
        workers=workers,
    )


def test_truncated_export_is_named(workers: int) -> None:
    expect_bad(LINES[:13], 13, "entry 13: missing", workers=workers)
    expect_bad([], 0, "entry 0: missing", workers=workers)


def test_inserted_copy_is_named(workers: int) -> None:
    lines = [*LINES[:20], LINES[10], *LINES[20:]]
    expect_bad(lines, 20, r"^entry 20: index is 10, expected 20$", workers=workers)


def test_inserted_forged_entry_is_named_where_the_chain_breaks(workers: int) -> None:
    # A well-formed forgery that links to entry 19 is indistinguishable on its own;
    # the chain breaks at the displaced original, now at position 21.
    forged = make_entry(**{**fields_for(20), "data": {"forged": True}}, prev=ENTRIES[19]["hash"])
    lines = [*LINES[:20], export_line(forged), *LINES[20:]]
    expect_bad(lines, 21, r"^entry 21: index is 20, expected 21$", workers=workers)


def test_inserted_entry_with_rechained_tail_exceeds_the_checkpoint(workers: int) -> None:
    forged = make_entry(**{**fields_for(20), "data": {"forged": True}}, prev=ENTRIES[19]["hash"])
    tail = [forged]
    for original in ENTRIES[20:]:
        tail.append(rehash(original, index=original["index"] + 1, prev=tail[-1]["hash"]))
    lines = LINES[:20] + lines_of(tail)
    expect_bad(
        lines,
        50,
        r"^entry 50: not covered by the checkpoint, which covers 50 entries$",
        workers=workers,
    )


def test_appended_entry_is_named(workers: int) -> None:
    extra = make_entry(**fields_for(50), prev=ENTRIES[-1]["hash"])
    expect_bad([*LINES, export_line(extra)], 50, "entry 50: not covered", workers=workers)


def test_swapped_entries_are_named(workers: int) -> None:
    lines = list(LINES)
    lines[10], lines[11] = lines[11], lines[10]
    expect_bad(lines, 10, r"^entry 10: index is 11, expected 10$", workers=workers)


def test_swapped_entries_with_renumbered_indexes_are_named(workers: int) -> None:
    a = json.loads(LINES[11])
    b = json.loads(LINES[10])
    a["index"], b["index"] = 10, 11
    lines = edited(edited(LINES, 10, canonical(a)), 11, canonical(b))
    expect_bad(lines, 10, r"^entry 10: prev does not match the hash of entry 9$", workers=workers)


@pytest.mark.parametrize("i", [17, 16, 8, 1, 49])
def test_changed_prev_is_named(workers: int, i: int) -> None:
    # 8 and 16 start a chunk in the parallel run, where the link is checked by the
    # parent; prev is wrong and so is the hash, and prev must still be what is named.
    lines = reserialised(i, lambda e: e.update(prev="ab" * 32))
    expect_bad(
        lines, i, rf"^entry {i}: prev does not match the hash of entry {i - 1}$", workers=workers
    )


def test_changed_genesis_prev_is_named(workers: int) -> None:
    lines = reserialised(0, lambda e: e.update(prev="ab" * 32))
    expect_bad(lines, 0, r"^entry 0: prev does not match the genesis value$", workers=workers)


@pytest.mark.parametrize("i", [17, 15, 0])
def test_rehashed_edit_breaks_the_chain_at_the_next_entry(workers: int, i: int) -> None:
    forged = rehash(ENTRIES[i], data={"i": i, "city": "Geneva", "tags": []})
    lines = edited(LINES, i, export_line(forged))
    expect_bad(
        lines,
        i + 1,
        rf"^entry {i + 1}: prev does not match the hash of entry {i}$",
        workers=workers,
    )


def test_rehashed_edit_of_the_last_entry_differs_from_the_checkpoint(workers: int) -> None:
    forged = rehash(ENTRIES[49], data={"i": 49, "city": "Geneva", "tags": []})
    lines = edited(LINES, 49, export_line(forged))
    expect_bad(
        lines, 49, "^entry 49: hash differs from the checkpoint's last_hash", workers=workers
    )


def test_rehashed_edit_with_rechained_tail_differs_from_the_checkpoint(workers: int) -> None:
    entries = list(ENTRIES)
    entries[17] = rehash(entries[17], actor="m_evil")
    for i in range(18, N):
        entries[i] = rehash(entries[i], prev=entries[i - 1]["hash"])
    expect_bad(
        lines_of(entries),
        49,
        "^entry 49: hash differs from the checkpoint's last_hash",
        workers=workers,
    )


def test_entry_from_another_deployment_is_named(workers: int) -> None:
    entries = list(ENTRIES)
    entries[5] = rehash(entries[5], deployment="dep_other")
    expect_bad(
        lines_of(entries),
        5,
        r"^entry 5: deployment 'dep_other' differs from 'dep_test'$",
        workers=workers,
    )


@settings(max_examples=200, deadline=None)
@given(k=st.integers(min_value=0, max_value=N - 1), position=st.integers(min_value=0),
       delta=st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_named_at_its_line(k: int, position: int, delta: int) -> None:
    line = bytearray(LINES[k])
    line[position % len(line)] ^= delta
    with pytest.raises(AuditVerificationError) as info:
        verify_export(edited(LINES, k, bytes(line)), CHECKPOINT, SERVICE_PUBLIC, workers=1)
    assert info.value.index == k


@pytest.mark.parametrize("k", range(N))
def test_any_deleted_line_is_named(k: int) -> None:
    with pytest.raises(AuditVerificationError, match=f"^entry {k}: ") as info:
        verify_export(LINES[:k] + LINES[k + 1 :], CHECKPOINT, SERVICE_PUBLIC, workers=1)
    assert info.value.index == k


@pytest.mark.parametrize(("a", "b"), [(0, 1), (3, 40), (16, 24), (48, 49), (7, 8)])
def test_any_swap_is_named_at_the_earlier_line(workers: int, a: int, b: int) -> None:
    lines = list(LINES)
    lines[a], lines[b] = lines[b], lines[a]
    expect_bad(lines, a, f"^entry {a}: index is {b}, expected {a}$", workers=workers)


def test_export_of_whole_chunks_and_the_line_after(workers: int) -> None:
    checkpoint = checkpoint_for(ENTRIES, tree_size=48)
    assert verify_export(LINES[:48], checkpoint, SERVICE_PUBLIC, workers=workers).entries == 48
    expect_bad(LINES, 48, "^entry 48: not covered", workers=workers, checkpoint=checkpoint)
    expect_bad(LINES, 0, "^entry 0: not covered", workers=workers, checkpoint=checkpoint_for([]))


# --- the checkpoint ----------------------------------------------------------------------


def test_foreign_checkpoint_is_refused(workers: int) -> None:
    expect_bad(
        LINES,
        None,
        "^checkpoint is signed by another key",
        workers=workers,
        checkpoint=checkpoint_for(ENTRIES, seed=OTHER_SEED),
    )


def test_checkpoint_claiming_our_key_but_signed_by_another_is_refused(workers: int) -> None:
    forged = checkpoint_for(ENTRIES, seed=OTHER_SEED)
    forged["checkpoint"]["key_id"] = key_id(SERVICE_PUBLIC)
    expect_bad(
        LINES, None, "checkpoint signature does not verify", workers=workers, checkpoint=forged
    )


def test_checkpoint_edited_after_signing_is_refused(workers: int) -> None:
    doc = json.loads(json.dumps(CHECKPOINT))
    doc["checkpoint"]["tree_size"] = 49
    expect_bad(LINES, None, "checkpoint signature does not verify", workers=workers, checkpoint=doc)


def test_checkpoint_with_a_smaller_tree_size_is_refused(workers: int) -> None:
    expect_bad(
        LINES,
        49,
        r"^entry 49: not covered by the checkpoint, which covers 49 entries$",
        workers=workers,
        checkpoint=checkpoint_for(ENTRIES, tree_size=49),
    )


def test_checkpoint_of_a_prefix_does_not_cover_the_export(workers: int) -> None:
    expect_bad(
        LINES,
        30,
        "entry 30: not covered",
        workers=workers,
        checkpoint=checkpoint_for(ENTRIES, tree_size=30),
    )


def test_checkpoint_with_a_larger_tree_size_is_refused(workers: int) -> None:
    checkpoint = checkpoint_for(ENTRIES, tree_size=51, root="cd" * 32, last_hash="ef" * 32)
    expect_bad(LINES, 50, r"^entry 50: missing", workers=workers, checkpoint=checkpoint)


def test_checkpoint_with_another_root_is_refused(workers: int) -> None:
    checkpoint = checkpoint_for(ENTRIES, root="cd" * 32)
    expect_bad(
        LINES,
        None,
        "^the Merkle root of the export differs from the checkpoint$",
        workers=workers,
        checkpoint=checkpoint,
    )


def test_checkpoint_of_another_deployment_is_refused(workers: int) -> None:
    checkpoint = checkpoint_for(ENTRIES, deployment="dep_other")
    expect_bad(
        LINES,
        0,
        r"^entry 0: deployment 'dep_test' differs from 'dep_other'$",
        workers=workers,
        checkpoint=checkpoint,
    )


# --- malformed lines ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda s: b"\n", "line is empty"),
        (lambda s: s[:40] + b"\n", "malformed JSON"),
        (lambda s: b"[1,2]\n", "line is not a JSON object"),
        (lambda s: s.replace(b'"city":', b'"city":"x","city":', 1), "duplicate key"),
        (lambda s: s.replace(b'"i":19', b'"i":19.0', 1), "floating-point"),
        (lambda s: s.replace(b'"i":19', b'"i":9007199254740993', 1), "interoperable range"),
        (lambda s: s.replace(b'"i":19', b'"i":' + b"[" * 40 + b"]" * 40, 1), "nested deeper"),
        (lambda s: s.replace(b"Basel", b"Bas\xffl"), "not UTF-8"),
        (lambda s: s.replace(b'"index":19', b'"index":"19"'), r"index is '19', expected 19"),
        (lambda s: s.replace(b"}\n", b',"zzz":1}\n'), "unexpected field.*zzz"),
        (lambda s: s.replace(b',"kind":"member.proposed"', b""), "missing field.*kind"),
        (lambda s: s.replace(b'"outcome":"ok"', b'"outcome":"maybe"'), "outcome must be"),
        (lambda s: s.replace(b'"time":', b'"time":-', 1), "time must be"),
    ],
    ids=[
        "empty",
        "truncated",
        "array",
        "duplicate-key",
        "float",
        "huge-int",
        "deep",
        "not-utf8",
        "index-as-string",
        "extra-field",
        "missing-field",
        "bad-outcome",
        "negative-time",
    ],
)
def test_malformed_line_is_named(workers: int, edit: Callable[[bytes], bytes], match: str) -> None:
    assert ENTRIES[19]["outcome"] == "ok"
    assert ENTRIES[19]["kind"] == "member.proposed"
    lines = edited(LINES, 19, edit(LINES[19]))
    assert lines[19] != LINES[19]
    expect_bad(lines, 19, f"^entry 19: .*{match}", workers=workers)


def test_refusal_without_a_code_is_named_even_with_a_valid_hash(workers: int) -> None:
    forged = rehash(ENTRIES[17], outcome="refused")
    lines = edited(LINES, 17, export_line(forged))
    expect_bad(lines, 17, "^entry 17: a refusal must carry its error code$", workers=workers)


# --- re-verifying the signed actions -------------------------------------------------


def test_bad_envelope_is_named(workers: int) -> None:
    entries = build(bad_envelopes=(21,))
    expect_bad(
        lines_of(entries),
        21,
        r"^entry 21: envelope does not verify: signature of m_alice does not verify$",
        workers=workers,
        checkpoint=checkpoint_for(entries),
        verifier=envelope_verifier,
    )
    # Without a verifier the envelopes are only hashed, and nothing is claimed.
    report = verify_export(lines_of(entries), checkpoint_for(entries), SERVICE_PUBLIC)
    assert report.envelopes_verified == 0


@pytest.mark.parametrize(
    ("bad_envelope", "broken_entry", "first"),
    [(21, 22, 21), (21, 30, 21), (21, 13, 13), (41, 40, 40), (9, 9, 9)],
)
def test_first_fault_wins_between_envelopes_and_structure(
    workers: int, bad_envelope: int, broken_entry: int, first: int
) -> None:
    entries = build(bad_envelopes=(bad_envelope,))
    lines = lines_of(entries)
    broken = json.loads(lines[broken_entry])
    broken["time"] += 1
    lines[broken_entry] = canonical(broken)
    expect_bad(
        lines,
        first,
        f"^entry {first}: ",
        workers=workers,
        checkpoint=checkpoint_for(entries),
        verifier=envelope_verifier,
    )


def test_verifier_bugs_are_not_mistaken_for_bad_entries(workers: int) -> None:
    def broken_verifier(entry: dict[str, Any]) -> None:
        raise RuntimeError("bug in the verifier")

    with pytest.raises(RuntimeError, match="bug in the verifier"):
        verify_export(
            LINES, CHECKPOINT, SERVICE_PUBLIC, envelope_verifier=broken_verifier, workers=workers
        )


def test_verifier_sees_entries_in_order_once_each(workers: int) -> None:
    seen: list[int] = []
    verify_export(
        LINES,
        CHECKPOINT,
        SERVICE_PUBLIC,
        envelope_verifier=lambda e: seen.append(e["index"]),
        workers=workers,
    )
    assert seen == [e["index"] for e in ENTRIES if e["envelope"] is not None]


# --- the start-up self-check -------------------------------------------------------------


def test_verify_chain_accepts_the_log_and_names_the_first_bad_entry() -> None:
    verify_chain(ENTRIES, envelope_verifier=envelope_verifier)
    entries = [dict(e) for e in ENTRIES]
    entries[30] = {**entries[30], "time": 0}
    entries[40] = {**entries[40], "kind": "x"}
    with pytest.raises(AuditVerificationError, match=r"^entry 30: hash does not match") as info:
        verify_chain(entries)
    assert info.value.index == 30


def test_verify_chain_continues_from_a_verified_point() -> None:
    verify_chain(ENTRIES[20:], start_index=20, prev=ENTRIES[19]["hash"])
    with pytest.raises(AuditVerificationError, match=r"^entry 20: prev") as info:
        verify_chain(ENTRIES[20:], start_index=20, prev=ENTRIES[18]["hash"])
    assert info.value.index == 20
    with pytest.raises(AuditVerificationError, match=r"^entry 0: index is 20") as info:
        verify_chain(ENTRIES[20:])
    assert info.value.index == 0


def test_verify_chain_refuses_mixed_deployments_and_missing_entries() -> None:
    entries = list(ENTRIES)
    entries[3] = rehash(entries[3], deployment="dep_other")
    with pytest.raises(AuditVerificationError, match=r"^entry 3: deployment") as info:
        verify_chain(entries)
    assert info.value.index == 3
    with pytest.raises(AuditVerificationError, match=r"^entry 4: index is 5") as info:
        verify_chain(ENTRIES[:4] + ENTRIES[5:])
    assert info.value.index == 4


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda e: e["data"].update(tags=("a", "b")), "not plain JSON data"),
        (lambda e: e["data"].update({1: "x"}), "cannot be serialised"),
        (lambda e: e.update(rehash(e, data={"1": "x"}), data={1: "x"}), "not plain JSON data"),
        (lambda e: e["data"].update(x=1.5), "floating-point"),
        (lambda e: e["data"].update(x=object()), "cannot be serialised"),
        (lambda e: e.pop("code"), "missing field"),
    ],
    ids=["tuple", "mixed-keys", "int-key", "float", "object", "missing-field"],
)
def test_verify_chain_requires_plain_json_as_hashed(
    mutate: Callable[[dict[str, Any]], Any], match: str
) -> None:
    entries = json.loads(json.dumps(ENTRIES))
    mutate(entries[12])
    with pytest.raises(AuditVerificationError, match=f"^entry 12: .*({match})") as info:
        verify_chain(entries)
    assert info.value.index == 12


# --- entries -----------------------------------------------------------------------------


def test_entry_hash_known_answer() -> None:
    # Written out by hand from the format: RFC 8785 sorts the keys and drops spaces.
    unhashed = (
        b'{"actor":"m_1","code":null,"data":{"amount":"1500"},"deployment":"dep_x",'
        b'"envelope":null,"index":0,"kind":"withdrawal.proposed","outcome":"ok",'
        b'"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
        b'"time":1790000000}'
    )
    expected = hashlib.sha256(b"TANDEM/1/audit-entry\x00" + unhashed).hexdigest()
    entry = make_entry(
        index=0,
        time=1_790_000_000,
        deployment="dep_x",
        kind="withdrawal.proposed",
        actor="m_1",
        outcome="ok",
        code=None,
        envelope=None,
        data={"amount": "1500"},
        prev=GENESIS_PREV,
    )
    assert entry["hash"] == expected
    assert export_line(entry) == (
        b'{"actor":"m_1","code":null,"data":{"amount":"1500"},"deployment":"dep_x",'
        b'"envelope":null,"hash":"' + expected.encode() + b'","index":0,'
        b'"kind":"withdrawal.proposed","outcome":"ok",'
        b'"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
        b'"time":1790000000}\n'
    )


def test_entry_has_exactly_the_schema_and_a_consistent_hash() -> None:
    for entry in ENTRIES:
        assert set(entry) == ENTRY_FIELDS
        assert entry["hash"] == entry_hash({k: v for k, v in entry.items() if k != "hash"})
        assert entry_leaf(entry) == bytes.fromhex(entry["hash"])
        assert loads_strict(export_line(entry)) == entry
    assert ENTRIES[0]["prev"] == GENESIS_PREV == "0" * 64
    assert all(ENTRIES[i]["prev"] == ENTRIES[i - 1]["hash"] for i in range(1, N))


def test_make_entry_returns_a_copy() -> None:
    data: dict[str, Any] = {"xs": [1, 2]}
    entry = make_entry(**{**fields_for(0), "data": data}, prev=GENESIS_PREV)
    data["xs"].append(3)
    assert entry["data"] == {"xs": [1, 2]}
    assert entry["hash"] == entry_hash({k: v for k, v in entry.items() if k != "hash"})


def test_entry_hash_refuses_a_whole_entry() -> None:
    with pytest.raises(InputError, match="without its hash"):
        entry_hash(ENTRIES[0])


@pytest.mark.parametrize(
    "changes",
    [
        {"index": True},
        {"index": -1},
        {"time": 1.5},
        {"time": "1790000000"},
        {"deployment": ""},
        {"kind": ""},
        {"kind": None},
        {"actor": ""},
        {"outcome": "maybe"},
        {"outcome": "ok", "code": "quorum_not_met"},
        {"outcome": "refused", "code": None},
        {"envelope": []},
        {"data": None},
        {"data": [1]},
        {"prev": "XYZ"},
        {"prev": "AB" * 32},
        {"prev": "ab" * 32},
        {"index": 1},
        {"data": {"x": 0.5}},
        {"data": {"x": 2**60}},
        {"data": {"x": "\ud800"}},
        {"data": {"x": json.loads("[" * 40 + "]" * 40)}},
        {"data": {"x": "a" * (1 << 20)}},
    ],
)
def test_make_entry_refuses_what_could_not_be_verified(changes: dict[str, Any]) -> None:
    fields = {**fields_for(0), "prev": GENESIS_PREV, **changes}
    with pytest.raises(InputError):
        make_entry(**fields)


def test_entries_with_look_alike_members_in_their_data_verify() -> None:
    # Nested objects that look like the top-level "hash" member must not confuse
    # the verifier's shortcut for removing that member before hashing.
    tricky = {
        "hash": "0" * 64,
        "nested": {"envelope": None, "hash": "1" * 64, "index": 0},
        "text": ',"hash":"' + "2" * 64 + '"',
    }
    entry = make_entry(
        **{**fields_for(0), "data": tricky, "envelope": {"hash": "3" * 64}}, prev=GENESIS_PREV
    )
    verify_chain([entry])
    verify_export([export_line(entry)], checkpoint_for([entry]), SERVICE_PUBLIC)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=150, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(["hash", "index", "x", "é", "\U0001f600"]) | st.text(max_size=6),
        json_values,
        max_size=5,
    ),
    envelope=st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=3),
)
def test_any_plain_json_entry_verifies_and_any_edit_is_caught(
    data: dict[str, Any], envelope: dict[str, Any] | None
) -> None:
    entry = make_entry(**{**fields_for(0), "data": data, "envelope": envelope}, prev=GENESIS_PREV)
    line = export_line(entry)
    checkpoint = checkpoint_for([entry])
    assert verify_export([line], checkpoint, SERVICE_PUBLIC).entries == 1
    verify_chain([entry])
    changed = rehash(entry, data={**data, "extra": 1})
    changed["hash"] = entry["hash"]
    with pytest.raises(AuditVerificationError) as info:
        verify_export([export_line(changed)], checkpoint, SERVICE_PUBLIC)
    assert info.value.index == 0


# --- the fast parsing path agrees with the strict one ----------------------------------


def reference_parse(raw: bytes) -> Any:
    try:
        value = loads_strict(raw)
        return value if canonical(value) == raw else "refused"
    except InputError:
        return "refused"


def fast_parse(raw: bytes) -> Any:
    try:
        return audit._parse_canonical_line(raw)
    except InputError:
        return "refused"


EDGE_LINES = [
    b"{}",
    b'{"a":1.0}',
    b'{"a":1e2}',
    b'{"a":-0}',
    b'{"a":-1}',
    b'{"a":01}',
    b'{"a":9007199254740991}',
    b'{"a":9007199254740992}',
    b'{"a":-9007199254740992}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":"\\ud800"}',
    b'{"a":"\\ud83d\\ude00"}',
    '{"a":"\U0001f600"}'.encode(),
    b'{"a":"\\u00e9"}',
    '{"a":"é"}'.encode(),
    b'{"a":"\\u001f"}',
    b'{"a":"\\u001F"}',
    b'{"a":"\\n"}',
    b'{"a":"\\u000a"}',
    b'{"a":"\\/"}',
    b'{"a":"/"}',
    b'{"a":"\x7f"}',
    b'{"a":"\\u007f"}',
    b'{"a":"\x01"}',
    b'{"a":"\\u2028"}',
    '{"a":"\u2028"}'.encode(),
    b'{"a":1,"a":1}',
    b'{"b":1,"a":2}',
    b'{"a":2,"b":1}',
    '{"\ue000":1,"\U0001f600":2}'.encode(),
    '{"\U0001f600":2,"\ue000":1}'.encode(),
    b"\xef\xbb\xbf{}",
    b" {}",
    b"{} ",
    b'"text"',
    b"1",
    b"[" * 32 + b"]" * 32,
    b"[" * 33 + b"]" * 33,
    b'{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
    b'{"a":true,"b":false,"c":null}',
    b'{"a":True}',
    b'{"a":"\xff"}',
    b'{"a":"' + b"x" * (1 << 20) + b'"}',
]


@pytest.mark.parametrize("raw", EDGE_LINES)
def test_fast_parsing_agrees_with_strict_parsing_on_edge_cases(raw: bytes) -> None:
    assert fast_parse(raw) == reference_parse(raw)


@settings(max_examples=200, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=6), json_values, max_size=5),
    cut=st.integers(min_value=0),
    insert=st.sampled_from([b" ", b"\\", b'"', b",", b"0", b"\\u0041"]),
)
def test_fast_parsing_agrees_with_strict_parsing(
    value: dict[str, Any], cut: int, insert: bytes
) -> None:
    raw = canonical(value)
    position = cut % (len(raw) + 1)
    variants = [
        raw,
        raw[:position] + insert + raw[position:],
        raw[:position] + raw[position + 1 :],
        json.dumps(value).encode(),
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode(),
    ]
    for variant in variants:
        assert fast_parse(variant) == reference_parse(variant)
    assert fast_parse(raw) == value


# --- checkpoints ---------------------------------------------------------------------------


def test_key_id_is_a_prefix_of_the_key_digest() -> None:
    assert key_id(SERVICE_PUBLIC) == hashlib.sha256(SERVICE_PUBLIC).hexdigest()[:16]
    with pytest.raises(InputError):
        key_id(SERVICE_PUBLIC[:31])


def test_checkpoint_signature_covers_the_domain_separated_checkpoint() -> None:
    checkpoint = CHECKPOINT["checkpoint"]
    assert set(CHECKPOINT) == {"checkpoint", "signature"}
    assert checkpoint["key_id"] == key_id(SERVICE_PUBLIC)
    assert checkpoint["tree_size"] == N
    signature = base64.b64decode(CHECKPOINT["signature"])
    nacl.signing.VerifyKey(SERVICE_PUBLIC).verify(
        b"TANDEM/1/audit-checkpoint\x00" + canonical(checkpoint), signature
    )
    assert verify_checkpoint(CHECKPOINT, SERVICE_PUBLIC) == checkpoint


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tree_size", 49),
        ("root", "00" * 32),
        ("last_hash", "00" * 32),
        ("time", 1),
        ("deployment", "dep_other"),
    ],
)
def test_checkpoint_fields_are_all_signed(field: str, value: Any) -> None:
    doc = json.loads(json.dumps(CHECKPOINT))
    doc["checkpoint"][field] = value
    with pytest.raises(BadSignatureError, match="does not verify"):
        verify_checkpoint(doc, SERVICE_PUBLIC)


def test_checkpoint_of_another_key_is_named_as_such() -> None:
    other = checkpoint_for(ENTRIES, seed=OTHER_SEED)
    with pytest.raises(AuditVerificationError, match="signed by another key") as info:
        verify_checkpoint(other, SERVICE_PUBLIC)
    assert info.value.index is None


@pytest.mark.parametrize(
    "signature",
    [
        lambda s: s.rstrip("="),
        lambda s: s[:-3] + ("B" if s[-3] == "A" else "A") + "==",
        lambda s: s[:-4],
        lambda s: "!" + s[1:],
        lambda s: 42,
    ],
    ids=["unpadded", "other-bits", "short", "not-base64", "not-a-string"],
)
def test_checkpoint_signature_must_be_canonical_base64(signature: Callable[[str], Any]) -> None:
    doc = {**CHECKPOINT, "signature": signature(CHECKPOINT["signature"])}
    with pytest.raises(BadSignatureError):
        verify_checkpoint(doc, SERVICE_PUBLIC)


@pytest.mark.parametrize(
    "doc",
    [
        {"checkpoint": CHECKPOINT["checkpoint"]},
        {**CHECKPOINT, "extra": 1},
        {**CHECKPOINT, "checkpoint": {**CHECKPOINT["checkpoint"], "extra": 1}},
        {**CHECKPOINT, "checkpoint": {**CHECKPOINT["checkpoint"], "root": "AB" * 32}},
        {**CHECKPOINT, "checkpoint": {**CHECKPOINT["checkpoint"], "tree_size": -1}},
        {**CHECKPOINT, "checkpoint": {**CHECKPOINT["checkpoint"], "key_id": "abc"}},
        {**CHECKPOINT, "checkpoint": [1]},
    ],
)
def test_malformed_checkpoint_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(AuditVerificationError, match="checkpoint"):
        verify_checkpoint(doc, SERVICE_PUBLIC)


@pytest.mark.parametrize(
    "changes",
    [
        {"root": "AB" * 32},
        {"last_hash": "x"},
        {"tree_size": -1},
        {"tree_size": True},
        {"time": 1.0},
        {"deployment": ""},
        {"tree_size": 0, "root": "ab" * 32, "last_hash": GENESIS_PREV},
    ],
)
def test_sign_checkpoint_refuses_nonsense(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "deployment": DEP,
        "tree_size": 1,
        "root": "ab" * 32,
        "last_hash": "cd" * 32,
        "time": T0,
        **changes,
    }
    with pytest.raises(InputError):
        sign_checkpoint(SERVICE_SEED, **fields)
    with pytest.raises(InputError):
        sign_checkpoint(SERVICE_SEED[:31], **{**fields, **{"tree_size": 1}})


def test_default_workers_without_sched_getaffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    """macOS and Windows have no os.sched_getaffinity: the machine's count is used."""
    monkeypatch.delattr("os.sched_getaffinity", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    monkeypatch.setattr("multiprocessing.get_all_start_methods", lambda: ["fork", "spawn"])
    assert audit._default_workers(audit.PARALLEL_THRESHOLD) == 6
    assert audit._default_workers(audit.PARALLEL_THRESHOLD - 1) == 1  # small logs stay in this process
