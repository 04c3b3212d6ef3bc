"""RFC 6962 Merkle hashing and proofs: published vectors, a literal reference, properties."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.core.merkle import (
    EMPTY_ROOT,
    MerkleAccumulator,
    consistency_proof,
    consistency_proof_for_hashes,
    inclusion_proof,
    inclusion_proof_for_hashes,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
    verify_inclusion_for_hash,
)
from tandem.errors import InputError, VerificationError

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((VECTORS / name).read_text())
    assert doc["source"].startswith("https://github.com/transparency-dev/merkle/")
    return doc


TREE = _load("rfc6962_tree.json")
INCLUSION = _load("rfc6962_inclusion.json")["cases"]
CONSISTENCY = _load("rfc6962_consistency.json")["cases"]
LEAVES = [bytes.fromhex(x) for x in TREE["leaves_hex"]]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(p) for p in case["proof"] or []]


# --- a literal transcription of RFC 6962 §2.1, to cross-check the efficient code ------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = _k(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


# --- published vectors -----------------------------------------------------------------


def test_vector_files_cover_the_published_cases() -> None:
    assert len(LEAVES) == 8
    assert len(INCLUSION) >= 90
    assert len(CONSISTENCY) >= 90
    assert sum(not c["wantErr"] for c in INCLUSION) >= 6
    assert sum(not c["wantErr"] for c in CONSISTENCY) >= 6


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert merkle_root([]) == EMPTY_ROOT == bytes.fromhex(TREE["roots_hex"][0])
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize("size", range(9))
def test_reference_tree_root_at_every_size(size: int) -> None:
    expected = bytes.fromhex(TREE["roots_hex"][size])
    assert merkle_root(LEAVES[:size]) == expected
    acc = MerkleAccumulator()
    for leaf in LEAVES[:size]:
        acc.append(leaf)
    assert acc.root() == expected


def test_reference_tree_complete_subtree_hashes() -> None:
    leaf_hashes = [leaf_hash(leaf) for leaf in LEAVES]
    for level, hashes in enumerate(TREE["node_hashes_hex"]):
        width = 1 << level
        for i, expected in enumerate(hashes):
            got = root_from_leaf_hashes(leaf_hashes[i * width : (i + 1) * width])
            assert got.hex() == expected, (level, i)


def test_leaf_and_node_hashes_use_distinct_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    left, right = b"a" * 32, b"b" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def _root_matches_shape(root: bytes, size: int) -> bool:
    return 0 < size <= 8 and root == bytes.fromhex(TREE["roots_hex"][size])


@pytest.mark.parametrize("case", INCLUSION, ids=[c["file"] for c in INCLUSION])
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    leaf, root, proof = _b64(case["leafHash"]), _b64(case["root"]), _proof(case)
    index, size = case["leafIdx"], case["treeSize"]
    if case["wantErr"]:
        with pytest.raises(VerificationError):
            verify_inclusion_for_hash(leaf, index, size, proof, root)
        return
    verify_inclusion_for_hash(leaf, index, size, proof, root)
    if _root_matches_shape(root, size):
        # The published proof is the one we generate, node for node.
        assert leaf == leaf_hash(LEAVES[index])
        assert inclusion_proof(LEAVES, index, size) == proof
        verify_inclusion(LEAVES[index], index, size, proof, root)


@pytest.mark.parametrize("case", CONSISTENCY, ids=[c["file"] for c in CONSISTENCY])
def test_consistency_vectors(case: dict[str, Any]) -> None:
    root1, root2, proof = _b64(case["root1"]), _b64(case["root2"]), _proof(case)
    size1, size2 = case["size1"], case["size2"]
    # We hold every root to 32 bytes; the reference accepts equal placeholder roots
    # ("don't care") for equal sizes, which is the one case where we are stricter.
    malformed = len(root1) != 32 or len(root2) != 32
    if case["wantErr"] or malformed:
        with pytest.raises(VerificationError):
            verify_consistency(size1, size2, root1, root2, proof)
        return
    verify_consistency(size1, size2, root1, root2, proof)
    if _root_matches_shape(root1, size1) and _root_matches_shape(root2, size2):
        assert consistency_proof(LEAVES, size1, size2) == proof


def test_published_happy_paths_are_all_exercised() -> None:
    good = [c for c in INCLUSION if not c["wantErr"]]
    assert {(c["leafIdx"], c["treeSize"]) for c in good} >= {(0, 8), (5, 8), (2, 3), (1, 5)}
    good = [c for c in CONSISTENCY if not c["wantErr"]]
    assert {(c["size1"], c["size2"]) for c in good} >= {(1, 8), (6, 8), (2, 5), (6, 7)}


# --- generation against the literal definition ------------------------------------------


@pytest.mark.parametrize("size", range(1, 34))
def test_proofs_equal_the_rfc_definition(size: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(size)]
    assert merkle_root(leaves) == ref_mth(leaves)
    for m in range(size):
        assert inclusion_proof(leaves, m, size) == ref_path(m, leaves)
    for m in range(1, size + 1):
        assert consistency_proof(leaves, m, size) == ref_subproof(m, leaves, True)


def test_proof_generation_takes_a_prefix_of_a_longer_list() -> None:
    leaves = [bytes([i]) for i in range(20)]
    assert inclusion_proof(leaves, 3, 11) == ref_path(3, leaves[:11])
    assert consistency_proof(leaves, 5, 13) == ref_subproof(5, leaves[:13], True)
    hashes = [leaf_hash(x) for x in leaves]
    assert inclusion_proof_for_hashes(hashes, 3, 11) == ref_path(3, leaves[:11])
    assert consistency_proof_for_hashes(hashes, 5, 13) == ref_subproof(5, leaves[:13], True)


@pytest.mark.parametrize(
    ("index", "size", "available"), [(0, 0, 3), (3, 3, 3), (-1, 3, 3), (0, 4, 3), (True, 3, 3)]
)
def test_inclusion_proof_generation_refuses_bad_positions(
    index: int, size: int, available: int
) -> None:
    with pytest.raises(InputError):
        inclusion_proof([b"x"] * available, index, size)


@pytest.mark.parametrize(("old", "new"), [(0, 3), (4, 3), (-1, 3), (2, 5)])
def test_consistency_proof_generation_refuses_bad_sizes(old: int, new: int) -> None:
    with pytest.raises(InputError):
        consistency_proof([b"x"] * 4, old, new)


def test_proof_generation_is_fast_enough_for_a_large_log() -> None:
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100_000)]
    root = root_from_leaf_hashes(hashes)
    proof = inclusion_proof_for_hashes(hashes, 31_337, 100_000)
    verify_inclusion_for_hash(hashes[31_337], 31_337, 100_000, proof, root)
    old_root = root_from_leaf_hashes(hashes[:77_777])
    proof = consistency_proof_for_hashes(hashes, 77_777, 100_000)
    verify_consistency(77_777, 100_000, old_root, root, proof)


# --- properties: every honest proof verifies, every one-byte change fails ---------------

leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


def _mutate(data: bytes, position: int, delta: int) -> bytes:
    i = position % len(data)
    return data[:i] + bytes([data[i] ^ delta]) + data[i + 1 :]


@settings(max_examples=300, deadline=None)
@given(
    leaves=leaf_lists,
    pick=st.integers(min_value=0),
    pos=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
    which=st.integers(min_value=0),
)
def test_inclusion_proofs_verify_and_resist_mutation(
    *, leaves: list[bytes], pick: int, pos: int, delta: int, which: int
) -> None:
    size = len(leaves)
    index = pick % size
    root = merkle_root(leaves)
    proof = inclusion_proof(leaves, index, size)
    verify_inclusion(leaves[index], index, size, proof, root)
    assert root_from_inclusion_proof(leaf_hash(leaves[index]), index, size, proof) == root

    with pytest.raises(VerificationError):
        verify_inclusion(leaves[index], index, size, proof, _mutate(root, pos, delta))
    if proof:
        k = which % len(proof)
        bad = [*proof[:k], _mutate(proof[k], pos, delta), *proof[k + 1 :]]
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], index, size, bad, root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], index, size, proof[:-1], root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], index, size, proof[1:], root)
    for extra in (root, proof[0] if proof else root, b"\x00" * 32):
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], index, size, [*proof, extra], root)
        with pytest.raises(VerificationError):
            verify_inclusion(leaves[index], index, size, [extra, *proof], root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaves[index] + b"!", index, size, proof, root)
    with pytest.raises(VerificationError):
        verify_inclusion(leaves[index], index, size, proof, root[:31])


@settings(max_examples=300, deadline=None)
@given(
    leaves=leaf_lists,
    pick=st.integers(min_value=0),
    pos=st.integers(min_value=0),
    delta=st.integers(min_value=1, max_value=255),
    which=st.integers(min_value=0),
    target=st.sampled_from(["proof", "old", "new"]),
)
def test_consistency_proofs_verify_and_resist_mutation(
    *, leaves: list[bytes], pick: int, pos: int, delta: int, which: int, target: str
) -> None:
    new = len(leaves)
    old = 1 + pick % new
    old_root, new_root = merkle_root(leaves[:old]), merkle_root(leaves)
    proof = consistency_proof(leaves, old, new)
    verify_consistency(old, new, old_root, new_root, proof)

    if target == "old":
        args = (old, new, _mutate(old_root, pos, delta), new_root, proof)
    elif target == "new":
        args = (old, new, old_root, _mutate(new_root, pos, delta), proof)
    elif proof:
        k = which % len(proof)
        bad = [*proof[:k], _mutate(proof[k], pos, delta), *proof[k + 1 :]]
        args = (old, new, old_root, new_root, bad)
    else:
        args = (old, new, old_root, new_root, [old_root])
    with pytest.raises(VerificationError):
        verify_consistency(*args)
    if proof:
        with pytest.raises(VerificationError):
            verify_consistency(old, new, old_root, new_root, proof[:-1])
        with pytest.raises(VerificationError):
            verify_consistency(old, new, old_root, new_root, [*proof, proof[-1]])
        with pytest.raises(VerificationError):
            verify_consistency(old, new, old_root, new_root, [proof[0], *proof])
    if old < new:
        with pytest.raises(VerificationError):
            verify_consistency(new, old, new_root, old_root, proof)


@pytest.mark.parametrize(
    "proof",
    [[b"\x00" * 31], [b"\x00" * 33], [b""], "not a list", b"\x00" * 32, [None]],
)
def test_malformed_proofs_are_refused_not_crashed_on(proof: Any) -> None:
    leaves = [b"a", b"b", b"c"]
    root = merkle_root(leaves)
    with pytest.raises(VerificationError):
        verify_inclusion(b"a", 0, 3, proof, root)
    with pytest.raises(VerificationError):
        verify_consistency(1, 3, merkle_root(leaves[:1]), root, proof)


# --- the compact accumulator ---------------------------------------------------------


def test_accumulator_matches_the_definition_for_every_size_up_to_300() -> None:
    leaves = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(301)]
    acc = MerkleAccumulator()
    assert acc.root() == ref_mth([])
    for n in range(1, 301):
        acc.append(leaves[n - 1])
        assert acc.size == n
        assert acc.root() == ref_mth(leaves[:n]), n
        assert len(acc.state()["peaks"]) == bin(n).count("1")


def test_accumulator_state_round_trips_and_continues() -> None:
    leaves = [bytes([i]) for i in range(45)]
    acc = MerkleAccumulator()
    for leaf in leaves[:29]:
        acc.append(leaf)
    state = json.loads(json.dumps(acc.state()))
    again = MerkleAccumulator.from_state(state)
    assert again.root() == acc.root()
    assert again.size == 29
    for leaf in leaves[29:]:
        again.append(leaf)
    assert again.root() == merkle_root(leaves)
    assert acc.size == 29  # the original is untouched


@pytest.mark.parametrize(
    "state",
    [
        {"size": 3, "peaks": ["00" * 32]},
        {"size": 1, "peaks": ["00" * 31]},
        {"size": 1, "peaks": ["AA" * 32]},
        {"size": -1, "peaks": []},
        {"size": True, "peaks": ["00" * 32]},
        {"size": 0, "peaks": [], "extra": 1},
        {"size": 1, "peaks": "00" * 32},
    ],
)
def test_accumulator_refuses_impossible_states(state: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        MerkleAccumulator.from_state(state)


def test_accumulator_appends_aligned_subtrees() -> None:
    leaves = [bytes([i]) for i in range(27)]
    acc = MerkleAccumulator()
    acc.append_subtree(merkle_root(leaves[:16]), 4)
    acc.append_subtree(merkle_root(leaves[16:24]), 3)
    acc.append(leaves[24])
    acc.append_subtree(merkle_root(leaves[25:26]), 0)
    acc.append(leaves[26])
    assert acc.size == 27
    assert acc.root() == merkle_root(leaves)
    assert [h for h, _ in acc.peaks()] == [4, 3, 1, 0]
    with pytest.raises(InputError):
        acc.append_subtree(b"\x00" * 32, 1)  # 27 is not a multiple of 2


def test_accumulator_copy_is_independent() -> None:
    acc = MerkleAccumulator()
    acc.append(b"a")
    other = acc.copy()
    other.append(b"b")
    assert acc.root() == merkle_root([b"a"])
    assert other.root() == merkle_root([b"a", b"b"])
