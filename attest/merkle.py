"""RFC 6962 / RFC 9162 Merkle tree math (C2SP merkle-tree.md): hashes, roots and proofs.

Pure functions over 32-byte SHA-256 hashes; no I/O. Proof *generation* reads the tree through a
`HashSource`, which returns the hash of any perfect (aligned, power-of-two sized) subtree, so a
store that keeps those node hashes answers a proof in O(log^2 n) lookups; `LeafHashes` builds the
nodes from leaf hashes for small trees and tests. `Frontier` appends leaves in O(log n) and hands
back every node it completes, which is what such a store persists.

Verification follows C2SP merkle-tree.md (RFC 9162 §2.1.3.2 and §2.1.4.2) and raises
`ProofError`; it never returns a bool. Note that an inclusion or consistency proof binds the
root, the index and the proof hashes, but not fully the tree size: sizes whose left/right path is
the same are indistinguishable to the proof. The size is authenticated by the signed checkpoint
that carries the root.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from attest.errors import ProofError

HASH_LEN = 32
#: MTH({}): the root of the empty tree.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: Trees beyond 2**63 leaves are out of reach; the bound keeps untrusted sizes sane.
MAX_TREE_SIZE = 1 << 63
#: A proof for a tree of at most 2**63 leaves never needs more hashes than this.
MAX_PROOF_HASHES = 2 * 64


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@runtime_checkable
class HashSource(Protocol):
    """Read access to a Merkle tree by perfect subtree."""

    def subtree(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level)."""
        ...


@dataclass(frozen=True)
class LeafHashes:
    """A `HashSource` computed from leaf hashes: O(2**level) work per subtree, for small trees.

    `leaf` is either a sequence of leaf hashes or a callable index -> leaf hash (a store).
    """

    leaf: Sequence[bytes] | Callable[[int], bytes]

    def subtree(self, level: int, index: int) -> bytes:
        if level == 0:
            return self.leaf(index) if callable(self.leaf) else self.leaf[index]
        return node_hash(self.subtree(level - 1, 2 * index), self.subtree(level - 1, 2 * index + 1))


Tree = HashSource | Sequence[bytes] | Callable[[int], bytes]


def _source(tree: Tree) -> HashSource:
    if isinstance(tree, HashSource):
        return tree
    return LeafHashes(tree)


def _largest_power_of_two_below(n: int) -> int:
    """The k of RFC 9162: the largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_root(tree: Tree, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range that is a node of the RFC tree (start aligned to its size).

    The range is split greedily into perfect subtrees of decreasing size and folded right to
    left, which is exactly the RFC recursion for such a node.
    """
    if start >= end:
        return EMPTY_ROOT
    source = _source(tree)
    parts: list[bytes] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start % (1 << level):
            level -= 1
        parts.append(source.subtree(level, start >> level))
        start += 1 << level
    root = parts.pop()
    while parts:
        root = node_hash(parts.pop(), root)
    return root


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes, in O(n) time and O(log n) memory."""
    frontier = Frontier()
    for item in leaf_hashes:
        frontier = frontier.append(item)
    return frontier.root()


def _check_sizes(index: int, size: int, what: str) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError(f"{what}: tree size {size} is out of range")
    if not 0 <= index < size:
        raise ProofError(f"{what}: index {index} is not below tree size {size}")


def inclusion_proof(index: int, size: int, tree: Tree) -> tuple[bytes, ...]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1: leaf sibling first, root child last.

    Raises ProofError when index is not below size.
    """
    _check_sizes(index, size, "inclusion proof")
    source = _source(tree)
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index - start < k:
            path.append(range_root(source, start + k, end))
            end = start + k
        else:
            path.append(range_root(source, start, start + k))
            start += k
    return tuple(reversed(path))


def consistency_proof(old_size: int, new_size: int, tree: Tree) -> tuple[bytes, ...]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1; empty when old_size is 0 or equal.

    Raises ProofError when old_size > new_size.
    """
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ProofError(f"consistency proof: sizes {old_size} -> {new_size} are not in order")
    if old_size in (0, new_size):
        return ()
    source = _source(tree)
    proof: list[bytes] = []
    start, end, m, complete = 0, new_size, old_size, True
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            proof.append(range_root(source, start + k, end))
            end = start + k
        else:
            proof.append(range_root(source, start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(range_root(source, start, end))
    return tuple(reversed(proof))


def _check_hashes(hashes: Sequence[bytes], what: str) -> None:
    if len(hashes) > MAX_PROOF_HASHES:
        raise ProofError(f"{what} has {len(hashes)} hashes; at most {MAX_PROOF_HASHES} possible")
    for item in hashes:
        if len(item) != HASH_LEN:
            raise ProofError(f"{what} holds a hash of {len(item)} bytes, not {HASH_LEN}")


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by `leaf` (a leaf hash) at `index` in a tree of `size` and `proof`.

    Raises ProofError when the proof has the wrong length or malformed hashes.
    """
    _check_sizes(index, size, "inclusion proof")
    _check_hashes([leaf, *proof], "inclusion proof")
    fn, sn, hashed = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            hashed = node_hash(sibling, hashed)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            hashed = node_hash(hashed, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    return hashed


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise ProofError unless `proof` shows leaf hash `leaf` at `index` under `expected_root`."""
    computed = root_from_inclusion_proof(leaf, index, size, proof)
    if not hmac.compare_digest(computed, expected_root):
        raise ProofError(f"inclusion proof for index {index} does not lead to the expected root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless `proof` shows the tree `old_root` is a prefix of `new_root`."""
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ProofError(f"consistency: sizes {old_size} -> {new_size} are not in order")
    _check_hashes([old_root, new_root, *proof], "consistency proof")
    if old_size == new_size:
        if proof:
            raise ProofError("consistency between equal sizes takes an empty proof")
        if not hmac.compare_digest(old_root, new_root):
            raise ProofError("two different roots for the same tree size")
        return
    if old_size == 0:
        if proof:
            raise ProofError("consistency from the empty tree takes an empty proof")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _fold_consistency(old_size, new_size, old_root, new_root, proof)


def _fold_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    hashes = list(proof)
    if old_size & (old_size - 1) == 0:
        hashes.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first_root = second_root = hashes[0]
    for item in hashes[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            first_root = node_hash(item, first_root)
            second_root = node_hash(item, second_root)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second_root = node_hash(second_root, item)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if not hmac.compare_digest(first_root, old_root):
        raise ProofError(f"consistency proof does not lead to the old root (size {old_size})")
    if not hmac.compare_digest(second_root, new_root):
        raise ProofError(f"consistency proof does not lead to the new root (size {new_size})")


@dataclass(frozen=True)
class Node:
    """A perfect subtree hash completed by an append: what a store persists for proofs."""

    level: int
    index: int
    hash: bytes


@dataclass(frozen=True)
class Frontier:
    """The compact range [0, size): one perfect subtree root per set bit of size, largest first.

    Appending is O(log n) and returns a new value; `root()` is O(log n). The frontier is all a
    log needs to keep in memory (or persist) to extend its tree and sign new checkpoints.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise ProofError(f"a frontier of size {self.size} needs {self.size.bit_count()} hashes")
        _check_hashes(self.hashes, "frontier")

    def append(self, leaf: bytes) -> Frontier:
        """The frontier after appending one leaf hash."""
        return self.append_with_nodes(leaf)[0]

    def append_with_nodes(self, leaf: bytes) -> tuple[Frontier, tuple[Node, ...]]:
        """Append one leaf hash; also return each perfect subtree this completes, leaf first."""
        _check_hashes([leaf], "leaf")
        hashes = list(self.hashes)
        nodes = [Node(0, self.size, leaf)]
        merged, level = leaf, 0
        while self.size >> level & 1:
            merged = node_hash(hashes.pop(), merged)
            level += 1
            nodes.append(Node(level, self.size >> level, merged))
        hashes.append(merged)
        return Frontier(self.size + 1, tuple(hashes)), tuple(nodes)

    def root(self) -> bytes:
        """MTH of the leaves appended so far."""
        if not self.hashes:
            return EMPTY_ROOT
        parts = list(self.hashes)
        result = parts.pop()
        while parts:
            result = node_hash(parts.pop(), result)
        return result


def frontier_nodes(frontier: Frontier) -> tuple[Node, ...]:
    """The perfect subtrees of a frontier as nodes (level, index, hash), largest first.

    For a leaf at index >= frontier.size, every sibling on its inclusion path that lies wholly
    before frontier.size is one of these, or a node completed by later appends
    (`Frontier.append_with_nodes`): proofs for recent leaves need no older node.
    """
    nodes: list[Node] = []
    start = 0
    for level in range(frontier.size.bit_length() - 1, -1, -1):
        if frontier.size >> level & 1:
            nodes.append(Node(level, start >> level, frontier.hashes[len(nodes)]))
            start += 1 << level
    return tuple(nodes)


def edge_roots(frontier: Frontier) -> dict[tuple[int, int], bytes]:
    """MTH(D[start:size]) keyed (start, size) for each `start` where one of the frontier's
    subtrees begins: the roots of the tree's right edge, which inclusion proofs of recent leaves
    need. O(log n)."""
    roots: dict[tuple[int, int], bytes] = {}
    merged: bytes | None = None
    for node in reversed(frontier_nodes(frontier)):
        merged = node.hash if merged is None else node_hash(node.hash, merged)
        roots[node.index << node.level, frontier.size] = merged
    return roots


def inclusion_proof_from_nodes(
    index: int,
    size: int,
    subtree: Callable[[int, int], bytes | None],
    edges: Mapping[tuple[int, int], bytes],
) -> tuple[bytes, ...]:
    """PATH(index, D[size]) like `inclusion_proof`, from perfect subtree hashes (`subtree(level,
    index)`, None when unknown) and the tree's `edge_roots` at `size`: every sibling on a path
    is a perfect subtree or a right-edge range [start, size). O(log n) lookups, no hashing.

    Raises ProofError when index is not below size or a needed node is unknown.
    """
    _check_sizes(index, size, "inclusion proof")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index - start < k:
            low, high, end = start + k, end, start + k
        else:
            low, high, start = start, start + k, start + k
        width = high - low
        if width & (width - 1) == 0:
            level = width.bit_length() - 1
            found = subtree(level, low >> level)
        else:  # not perfect: it ends at the tree's right edge
            found = edges.get((low, high))
        if found is None:
            raise ProofError(f"inclusion proof for index {index}: node [{low}, {high}) unknown")
        path.append(found)
    return tuple(reversed(path))
