"""RFC 6962 Merkle tree hashing, inclusion and consistency proofs, and a compact tree.

The audit log is an append-only list of entries; this module commits to such a list
with one 32-byte root, proves that an entry is in it (inclusion) and that a later list
extends an earlier one without rewriting it (consistency). It follows RFC 6962 §2.1
(restated in RFC 9162 §2.1), so any Certificate Transparency tool can check our
proofs: leaves are hashed as SHA-256(0x00 || data) and interior nodes as
SHA-256(0x01 || left || right), the distinct prefixes keeping a leaf from ever being
passed off as a node. The tree over n > 1 leaves splits at the largest power of two
below n; the empty tree's root is SHA-256 of nothing.

Generation takes the leaves as a sequence (the store holds them); verification takes
only sizes, hashes and proofs, and fails with :class:`VerificationError` on anything
that does not check out, including proofs with a node too many or too few and hashes
of the wrong length.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tandem.errors import InputError, VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_HEX64 = re.compile(r"[0-9a-f]{64}")


def leaf_hash(leaf_data: bytes) -> bytes:
    return _sha256(b"\x00" + leaf_data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_root(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """Root of the subtree over leaf hashes ``hashes[lo:hi]`` (hi > lo).

    Pairing neighbours level by level and lifting an odd last node unchanged builds
    exactly the RFC 6962 shape (the left subtree is always the largest perfect one),
    without the recursion depth or repeated slicing of the textbook definition.
    """
    level = list(hashes[lo:hi])
    while len(level) > 1:
        paired = [_sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaves are already hashed with :func:`leaf_hash`."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _range_root(leaf_hashes, 0, len(leaf_hashes))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of the list of leaf data."""
    return root_from_leaf_hashes([leaf_hash(leaf) for leaf in leaves])


# --- proof generation ----------------------------------------------------------------


def _check_size(size: int, available: int, *, what: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InputError(f"{what} must be a non-negative integer")
    if size > available:
        raise InputError(f"{what} {size} exceeds the {available} leaves given")


def _inclusion_ranges(index: int, tree_size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[lo, hi)`` whose roots make the audit path of leaf ``index``
    in a tree of ``tree_size`` leaves, leaf-first (RFC 6962 §2.1.1)."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < tree_size:
        raise InputError(f"leaf index {index} is outside a tree of size {tree_size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, tree_size
    # Walk down from the root; each step records the sibling subtree. The RFC lists
    # the path leaf-first, hence the reversal.
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def inclusion_proof_for_hashes(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """Audit path (RFC 6962 §2.1.1) for leaf ``index`` in the first ``tree_size`` leaves."""
    _check_size(tree_size, len(leaf_hashes), what="tree size")
    return [_range_root(leaf_hashes, lo, hi) for lo, hi in _inclusion_ranges(index, tree_size)]


def inclusion_proof(leaves: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """Audit path for ``leaves[index]`` (leaf data, not yet hashed)."""
    _check_size(tree_size, len(leaves), what="tree size")
    return inclusion_proof_for_hashes([leaf_hash(leaf) for leaf in leaves[:tree_size]], index, tree_size)


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make the consistency proof between the trees of
    ``old_size`` and ``new_size`` leaves (RFC 6962 §2.1.2), in proof order."""
    if old_size == 0:
        # Every tree extends the empty one; the reference verifiers refuse such a
        # proof rather than accept a meaningless one, so none is produced either.
        raise InputError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi, m = 0, new_size, old_size
    # ``known`` is SUBPROOF's flag: the old root is the root of the current subtree,
    # so the verifier already has it and it is left out of the proof.
    known = True
    while True:
        n = hi - lo
        if m == n:
            if not known:
                ranges.append((lo, hi))
            break
        k = _split(n)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            known = False
    ranges.reverse()
    return ranges


def consistency_proof_for_hashes(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof (RFC 6962 §2.1.2) between the trees of the first ``old_size``
    and the first ``new_size`` leaf hashes."""
    _check_size(new_size, len(leaf_hashes), what="new tree size")
    _check_size(old_size, new_size, what="old tree size")
    return [_range_root(leaf_hashes, lo, hi) for lo, hi in _consistency_ranges(old_size, new_size)]


def consistency_proof(leaves: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof between the trees of the first ``old_size`` and ``new_size``
    leaves (leaf data, not yet hashed)."""
    _check_size(new_size, len(leaves), what="new tree size")
    return consistency_proof_for_hashes([leaf_hash(leaf) for leaf in leaves[:new_size]], old_size, new_size)


# --- proofs from stored subtree roots -----------------------------------------------

# A perfect subtree of the log's tree: (height, index) covers the leaves
# [index * 2**height, (index + 1) * 2**height). Height 0 is one leaf hash.
SubtreeId = tuple[int, int]


def perfect_subtrees(lo: int, hi: int) -> list[SubtreeId]:
    """The aligned perfect subtrees that tile ``[lo, hi)``, left to right.

    For every range a proof or a root uses (``lo`` a multiple of the largest power of
    two below ``hi - lo``, as RFC 6962's split makes it) these are the binary digits
    of ``hi - lo``, largest first, and the range's root is their right fold; so any
    such root is at most log2(n) + 1 stored subtree roots away.
    """
    if not _is_uint(lo) or not _is_uint(hi) or lo >= hi:
        raise InputError(f"[{lo}, {hi}) is not a non-empty range of leaves")
    out: list[SubtreeId] = []
    while lo < hi:
        height = (hi - lo).bit_length() - 1
        if lo:
            height = min(height, (lo & -lo).bit_length() - 1)
        out.append((height, lo >> height))
        lo += 1 << height
    return out


def _fold(roots: Sequence[bytes]) -> bytes:
    node = roots[-1]
    for left in reversed(roots[:-1]):
        node = node_hash(left, node)
    return node


def _roots_of(ranges: Sequence[tuple[int, int]], subtrees: Mapping[SubtreeId, bytes]) -> list[bytes]:
    out = []
    for lo, hi in ranges:
        parts = perfect_subtrees(lo, hi)
        missing = [p for p in parts if p not in subtrees]
        if missing:
            raise InputError(f"subtree root {missing[0]} is needed and was not given")
        out.append(_fold([subtrees[p] for p in parts]))
    return out


def _subtrees_of(ranges: Sequence[tuple[int, int]]) -> list[SubtreeId]:
    seen: dict[SubtreeId, None] = {}
    for lo, hi in ranges:
        for part in perfect_subtrees(lo, hi):
            seen[part] = None
    return list(seen)


def _check_sizes(*sizes: int) -> None:
    for size in sizes:
        if not _is_uint(size):
            raise InputError("tree sizes must be non-negative integers")


def root_subtrees(tree_size: int) -> list[SubtreeId]:
    """The stored subtree roots the root of a tree of ``tree_size`` leaves needs."""
    _check_sizes(tree_size)
    return perfect_subtrees(0, tree_size) if tree_size else []


def root_from_subtrees(tree_size: int, subtrees: Mapping[SubtreeId, bytes]) -> bytes:
    """The root of the tree of ``tree_size`` leaves from :func:`root_subtrees`' roots."""
    if not tree_size:
        return EMPTY_ROOT
    return _roots_of([(0, tree_size)], subtrees)[0]


def inclusion_proof_subtrees(index: int, tree_size: int) -> list[SubtreeId]:
    """The O(log n) stored subtree roots an inclusion proof is made of."""
    _check_sizes(tree_size)
    return _subtrees_of(_inclusion_ranges(index, tree_size))


def inclusion_proof_from_subtrees(
    index: int, tree_size: int, subtrees: Mapping[SubtreeId, bytes]
) -> list[bytes]:
    """The same audit path as :func:`inclusion_proof_for_hashes`, from the roots that
    :func:`inclusion_proof_subtrees` names."""
    _check_sizes(tree_size)
    return _roots_of(_inclusion_ranges(index, tree_size), subtrees)


def consistency_proof_subtrees(old_size: int, new_size: int) -> list[SubtreeId]:
    """The O(log n) stored subtree roots a consistency proof is made of."""
    _check_sizes(old_size, new_size)
    if old_size > new_size:
        raise InputError(f"old tree size {old_size} exceeds new tree size {new_size}")
    return _subtrees_of(_consistency_ranges(old_size, new_size))


def consistency_proof_from_subtrees(
    old_size: int, new_size: int, subtrees: Mapping[SubtreeId, bytes]
) -> list[bytes]:
    """The same proof as :func:`consistency_proof_for_hashes`, from the roots that
    :func:`consistency_proof_subtrees` names."""
    _check_sizes(old_size, new_size)
    if old_size > new_size:
        raise InputError(f"old tree size {old_size} exceeds new tree size {new_size}")
    return _roots_of(_consistency_ranges(old_size, new_size), subtrees)


# --- verification --------------------------------------------------------------------


def _require_hash(value: Any, *, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise VerificationError(f"{what} is not a {HASH_SIZE}-byte hash")
    return bytes(value)


def _require_proof(proof: object) -> list[bytes]:
    if not isinstance(proof, list | tuple):
        raise VerificationError("proof must be a list of hashes")
    return [_require_hash(node, what=f"proof node {i}") for i, node in enumerate(proof)]


def _is_uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def root_from_inclusion_proof(leaf_hash_: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` leads to from an RFC 6962 leaf hash (RFC 9162 §2.1.3.2)."""
    if not _is_uint(index) or not _is_uint(tree_size) or index >= tree_size:
        raise VerificationError(f"leaf index {index} is outside a tree of size {tree_size}")
    node = _require_hash(leaf_hash_, what="leaf hash")
    nodes = _require_proof(proof)
    fn, sn = index, tree_size - 1
    for p in nodes:
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            node = node_hash(p, node)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is deep")
    return node


def verify_inclusion_for_hash(
    leaf_hash_: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`VerificationError` unless the leaf hash is at ``index`` under ``root``."""
    expected = _require_hash(root, what="root")
    if root_from_inclusion_proof(leaf_hash_, index, tree_size, proof) != expected:
        raise VerificationError(
            f"inclusion proof for leaf {index} does not lead to the root of size {tree_size}"
        )


def verify_inclusion(
    leaf_data: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`VerificationError` unless ``leaf_data`` is leaf ``index`` under ``root``."""
    verify_inclusion_for_hash(leaf_hash(leaf_data), index, tree_size, proof, root)


def verify_consistency(  # noqa: C901, PLR0912 - RFC 9162 2.1.4.2 step by step
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`VerificationError` unless the tree ``new_root`` of ``new_size``
    leaves extends the tree ``old_root`` of ``old_size`` leaves (RFC 9162 §2.1.4.2)."""
    if not _is_uint(old_size) or not _is_uint(new_size):
        raise VerificationError("tree sizes must be non-negative integers")
    first = _require_hash(old_root, what="old root")
    second = _require_hash(new_root, what="new root")
    nodes = _require_proof(proof)
    if new_size < old_size:
        raise VerificationError(f"new tree size {new_size} is below old tree size {old_size}")
    if old_size == 0:
        raise VerificationError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        if nodes:
            raise VerificationError("trees of equal size need an empty consistency proof")
        if first != second:
            raise VerificationError("trees of equal size have different roots")
        return
    if not nodes:
        raise VerificationError("consistency proof is empty")
    if old_size & (old_size - 1) == 0:
        # The old tree is a perfect subtree of the new one; its root is the seed.
        nodes.insert(0, first)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = nodes[0]
    for c in nodes[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is shorter than the tree is deep")
    if fr != first:
        raise VerificationError(f"consistency proof does not match the old root (size {old_size})")
    if sr != second:
        raise VerificationError(f"consistency proof does not match the new root (size {new_size})")


# --- compact tree --------------------------------------------------------------------


def _require_peak(peak: bytes) -> bytes:
    if not isinstance(peak, bytes) or len(peak) != HASH_SIZE:
        raise InputError(f"a peak is a {HASH_SIZE}-byte hash")
    return peak


class MerkleAccumulator:
    """The RFC 6962 root of a growing list in O(log n) memory and time per append.

    It keeps only the roots of the perfect subtrees the list decomposes into (one per
    set bit of the size, largest first), which is all a root needs: the tree over
    n = 2^a + 2^b + ... (a > b > ...) leaves is node(P_a, node(P_b, ...)).
    """

    __slots__ = ("_peaks", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._peaks: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_data: bytes) -> None:
        self.append_leaf_hash(_sha256(b"\x00" + leaf_data).digest())

    def append_leaf_hash(self, leaf_hash_: bytes) -> None:
        if len(leaf_hash_) != HASH_SIZE:
            raise InputError(f"leaf hash must be {HASH_SIZE} bytes")
        node = leaf_hash_
        size = self._size
        peaks = self._peaks
        # Each trailing one bit of the old size is a perfect subtree of the same height
        # as the one being carried; merge them like binary addition.
        while size & 1:
            node = _sha256(b"\x01" + peaks.pop() + node).digest()
            size >>= 1
        peaks.append(node)
        self._size += 1

    def append_leaf_hash_with_subtrees(self, leaf_hash_: bytes) -> list[tuple[int, int, bytes]]:
        """:meth:`append_leaf_hash`, returning every perfect subtree the new leaf
        completes as (height, index, root), the leaf itself (height 0) first.

        These are the roots a store keeps so that proofs read O(log n) of them; each
        append completes one subtree per trailing one bit of the old size, plus the leaf.
        """
        if len(leaf_hash_) != HASH_SIZE:
            raise InputError(f"leaf hash must be {HASH_SIZE} bytes")
        node = leaf_hash_
        size = self._size
        peaks = self._peaks
        height = 0
        done = [(0, size, node)]
        while size & 1:
            node = _sha256(b"\x01" + peaks.pop() + node).digest()
            size >>= 1
            height += 1
            done.append((height, size, node))
        peaks.append(node)
        self._size += 1
        return done

    @classmethod
    def from_peaks(cls, size: int, peaks: Sequence[bytes]) -> MerkleAccumulator:
        """An accumulator of ``size`` leaves from its peaks, largest first (the roots
        :func:`root_subtrees` names, in that order)."""
        if not _is_uint(size) or len(peaks) != size.bit_count():
            raise InputError(f"an accumulator of size {size} has {size.bit_count()} peaks")
        acc = cls()
        acc._size = size
        acc._peaks = [_require_peak(peak) for peak in peaks]
        return acc

    def append_subtree(self, subtree_root: bytes, height: int) -> None:
        """Append 2**height leaves at once, given the root of their perfect subtree.

        Only where that subtree is also a subtree of the whole tree, that is when the
        current size is a multiple of 2**height; lets verification hashed in parallel
        chunks be stitched together without revisiting the leaves.
        """
        if len(subtree_root) != HASH_SIZE:
            raise InputError(f"subtree root must be {HASH_SIZE} bytes")
        if not _is_uint(height) or self._size % (1 << height):
            raise InputError(f"a subtree of height {height} cannot start at {self._size}")
        node = subtree_root
        size = self._size >> height
        while size & 1:
            node = _sha256(b"\x01" + self._peaks.pop() + node).digest()
            size >>= 1
        self._peaks.append(node)
        self._size += 1 << height

    def peaks(self) -> list[tuple[int, bytes]]:
        """The perfect-subtree roots as (height, root), largest first."""
        heights = [h for h in range(self._size.bit_length() - 1, -1, -1) if self._size >> h & 1]
        return list(zip(heights, self._peaks, strict=True))

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        node = self._peaks[-1]
        for peak in reversed(self._peaks[:-1]):
            node = node_hash(peak, node)
        return node

    def copy(self) -> MerkleAccumulator:
        other = MerkleAccumulator()
        other._size = self._size
        other._peaks = list(self._peaks)
        return other

    def state(self) -> dict[str, Any]:
        """A JSON-ready snapshot: ``{"size": n, "peaks": [hex, ...]}``, largest first."""
        return {"size": self._size, "peaks": [peak.hex() for peak in self._peaks]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> MerkleAccumulator:
        """Rebuild from :meth:`state`; refuses a snapshot whose shape cannot be right."""
        if not isinstance(state, Mapping) or set(state) != {"size", "peaks"}:
            raise InputError("accumulator state must have exactly the fields size and peaks")
        size, peaks = state["size"], state["peaks"]
        if not _is_uint(size):
            raise InputError("accumulator size must be a non-negative integer")
        if not isinstance(peaks, list) or len(peaks) != size.bit_count():
            raise InputError(f"an accumulator of size {size} has {size.bit_count()} peaks")
        if not all(isinstance(peak, str) and _HEX64.fullmatch(peak) for peak in peaks):
            raise InputError("accumulator peaks must be 64-character lowercase hex strings")
        decoded = [bytes.fromhex(peak) for peak in peaks]
        acc = cls()
        acc._size = size
        acc._peaks = decoded
        return acc

    def __repr__(self) -> str:
        return f"MerkleAccumulator(size={self._size}, root={self.root().hex()})"
