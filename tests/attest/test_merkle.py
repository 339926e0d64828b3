"""Merkle tree math against the C2SP merkle-tree.md example and a recursive reference."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attest import merkle
from attest.errors import ProofError

# C2SP merkle-tree.md "Example": seven entries d[0..6] and the labelled nodes a..l.
ENTRIES = [b"d0", b"d1", b"d2", b"d3", b"d4", b"d5", b"d6"]
a, b, c, d, e, f, g = (merkle.leaf_hash(x) for x in ENTRIES)
h = merkle.node_hash(a, b)
i = merkle.node_hash(c, d)
j = merkle.node_hash(e, f)
k = merkle.node_hash(h, i)
l = merkle.node_hash(j, g)  # noqa: E741 - the label used by the spec
ROOT7 = merkle.node_hash(k, l)
LEAVES7 = [a, b, c, d, e, f, g]


def reference_mth(leaves: list[bytes]) -> bytes:
    """MTH written as the spec's recursion, independent of the module under test."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2
    return merkle.node_hash(reference_mth(leaves[:split]), reference_mth(leaves[split:]))


def reference_path_sides(index: int, size: int) -> list[bool]:
    """For each proof hash (leaf side first): True when the sibling sits on the left."""
    if size <= 1:
        return []
    split = 1
    while split * 2 < size:
        split *= 2
    if index < split:
        return [*reference_path_sides(index, split), False]
    return [*reference_path_sides(index - split, size - split), True]


def test_hash_domain_separation() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


def test_c2sp_root() -> None:
    assert merkle.root(LEAVES7) == ROOT7
    assert merkle.range_root(LEAVES7, 0, 7) == ROOT7
    assert merkle.root([]) == merkle.EMPTY_ROOT
    assert merkle.root([a]) == a


@pytest.mark.parametrize(
    ("index", "expected"),
    [(0, [b, i, l]), (3, [c, h, l]), (4, [f, g, k]), (6, [j, k])],
)
def test_c2sp_inclusion_vectors(index: int, expected: list[bytes]) -> None:
    proof = merkle.inclusion_proof(index, 7, LEAVES7)
    assert list(proof) == expected
    merkle.verify_inclusion(LEAVES7[index], index, 7, proof, ROOT7)


@pytest.mark.parametrize(
    ("old", "expected"),
    [(3, [c, d, h, l]), (4, [l]), (6, [j, g, k])],
)
def test_c2sp_consistency_vectors(old: int, expected: list[bytes]) -> None:
    proof = merkle.consistency_proof(old, 7, LEAVES7)
    assert list(proof) == expected
    merkle.verify_consistency(old, 7, merkle.root(LEAVES7[:old]), ROOT7, proof)


def test_generation_from_a_callable_store() -> None:
    proof = merkle.inclusion_proof(3, 7, LEAVES7.__getitem__)
    assert list(proof) == [c, h, l]


def test_generation_from_persisted_nodes() -> None:
    frontier = merkle.Frontier()
    table: dict[tuple[int, int], bytes] = {}
    for leaf in LEAVES7:
        frontier, nodes = frontier.append_with_nodes(leaf)
        table.update({(n.level, n.index): n.hash for n in nodes})

    class Table:
        def subtree(self, level: int, index: int) -> bytes:
            return table[(level, index)]

    assert table[(1, 2)] == j and table[(2, 0)] == k
    assert list(merkle.consistency_proof(3, 7, Table())) == [c, d, h, l]
    assert frontier.root() == ROOT7


@pytest.mark.parametrize(
    ("index", "size", "proof", "root"),
    [
        (7, 7, [b, i, l], ROOT7),  # index out of range
        (-1, 7, [b, i, l], ROOT7),
        (0, 7, [b, i], ROOT7),  # too short
        (0, 7, [b, i, l, l], ROOT7),  # too long
        (0, 7, [b, i, l[:31]], ROOT7),  # truncated hash
        (0, 7, [b, i, l], ROOT7[:31]),
        (0, 0, [], merkle.EMPTY_ROOT),
    ],
)
def test_inclusion_rejects(index: int, size: int, proof: list[bytes], root: bytes) -> None:
    with pytest.raises(ProofError):
        merkle.verify_inclusion(a, index, size, proof, root)


def test_consistency_edge_cases() -> None:
    merkle.verify_consistency(7, 7, ROOT7, ROOT7, [])
    merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, ROOT7, [])
    assert merkle.consistency_proof(0, 7, LEAVES7) == ()
    assert merkle.consistency_proof(7, 7, LEAVES7) == ()
    for bad in (
        lambda: merkle.verify_consistency(7, 7, ROOT7, k, []),
        lambda: merkle.verify_consistency(7, 7, ROOT7, ROOT7, [a]),
        lambda: merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, ROOT7, [a]),
        lambda: merkle.verify_consistency(4, 7, k, ROOT7, []),
        lambda: merkle.verify_consistency(8, 7, k, ROOT7, [l]),
        lambda: merkle.verify_consistency(4, 7, k, ROOT7, [l, l]),
        lambda: merkle.consistency_proof(8, 7, LEAVES7),
        lambda: merkle.inclusion_proof(7, 7, LEAVES7),
    ):
        with pytest.raises(ProofError):
            bad()


def test_frontier_rejects_malformed_state() -> None:
    with pytest.raises(ProofError):
        merkle.Frontier(size=3, hashes=(a,))
    with pytest.raises(ProofError):
        merkle.Frontier(size=1, hashes=(a[:5],))
    with pytest.raises(ProofError):
        merkle.Frontier().append(b"short")


# --- properties --------------------------------------------------------------------------------

trees = st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True).map(
    lambda entries: [merkle.leaf_hash(x) for x in entries]
)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(trees, st.data())
def test_frontier_matches_reference(leaves: list[bytes], data: st.DataObject) -> None:
    frontier = merkle.Frontier()
    for count, leaf in enumerate(leaves, start=1):
        frontier = frontier.append(leaf)
        assert frontier.size == count
    assert frontier.root() == reference_mth(leaves) == merkle.root(leaves)
    size = data.draw(st.integers(0, len(leaves)))
    assert merkle.range_root(leaves, 0, size) == reference_mth(leaves[:size])


@settings(max_examples=150)
@given(trees, st.data())
def test_inclusion_proofs_verify_and_bind(leaves: list[bytes], data: st.DataObject) -> None:
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    root = reference_mth(leaves)
    proof = merkle.inclusion_proof(index, size, leaves)
    assert len(proof) == len(reference_path_sides(index, size))
    merkle.verify_inclusion(leaves[index], index, size, proof, root)

    if proof:
        which = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 8 * merkle.HASH_LEN - 1))
        tampered = list(proof)
        tampered[which] = _flip(tampered[which], bit)
        with pytest.raises(ProofError):
            merkle.verify_inclusion(leaves[index], index, size, tampered, root)
    bit = data.draw(st.integers(0, 8 * merkle.HASH_LEN - 1))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[index], index, size, proof, _flip(root, bit))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(_flip(leaves[index], bit), index, size, proof, root)
    int_bit = data.draw(st.integers(0, 63))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(leaves[index], index ^ (1 << int_bit), size, proof, root)
    # The proof does not bind the size by itself (the signed checkpoint does): a flipped size
    # may only pass when it gives the very same left/right path.
    flipped_size = size ^ (1 << int_bit)
    try:
        merkle.verify_inclusion(leaves[index], index, flipped_size, proof, root)
    except ProofError:
        pass
    else:
        assert reference_path_sides(index, flipped_size) == reference_path_sides(index, size)


@settings(max_examples=150)
@given(trees, st.data())
def test_consistency_proofs_verify_and_bind(leaves: list[bytes], data: st.DataObject) -> None:
    new_size = len(leaves)
    old_size = data.draw(st.integers(1, new_size))
    old_root, new_root = reference_mth(leaves[:old_size]), reference_mth(leaves)
    proof = merkle.consistency_proof(old_size, new_size, leaves)
    merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
    if old_size == new_size:
        return
    which = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 8 * merkle.HASH_LEN - 1))
    tampered = list(proof)
    tampered[which] = _flip(tampered[which], bit)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, new_size, old_root, new_root, tampered)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, new_size, _flip(old_root, bit), new_root, proof)
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, new_size, old_root, _flip(new_root, bit), proof)
    int_bit = data.draw(st.integers(0, 63))
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size ^ (1 << int_bit), new_size, old_root, new_root, proof)
    # As with inclusion, the new size is bound by the signed checkpoint, not by the proof.
    # A prefix of another history is never consistent with this one.
    forged = [*leaves[: old_size - 1], _flip(leaves[old_size - 1], bit)]
    with pytest.raises(ProofError):
        merkle.verify_consistency(old_size, new_size, reference_mth(forged), new_root, proof)


@given(
    st.integers(-5, 200),
    st.integers(-5, 200),
    st.lists(st.binary(min_size=0, max_size=40), max_size=20),
    st.binary(max_size=40),
    st.binary(max_size=40),
)
def test_verifiers_raise_only_proof_error(
    m: int, n: int, proof: list[bytes], r1: bytes, r2: bytes
) -> None:
    with contextlib.suppress(ProofError):
        merkle.verify_inclusion(r1, m, n, proof, r2)
    with contextlib.suppress(ProofError):
        merkle.verify_consistency(m, n, r1, r2, proof)
