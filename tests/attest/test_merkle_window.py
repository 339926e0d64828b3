"""Proof nodes of recent leaves: a frontier's subtrees plus the nodes later appends complete
give the same inclusion proofs as the whole tree (verifier/transparency.py relies on it)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest import merkle
from attest.errors import ProofError

LEAVES = [hashlib.sha256(bytes([i])).digest() for i in range(70)]


def _window_nodes(start: int, size: int) -> dict[tuple[int, int], bytes]:
    frontier = merkle.Frontier()
    for leaf in LEAVES[:start]:
        frontier = frontier.append(leaf)
    nodes = {(n.level, n.index): n.hash for n in merkle.frontier_nodes(frontier)}
    for leaf in LEAVES[start:size]:
        frontier, completed = frontier.append_with_nodes(leaf)
        nodes.update({(n.level, n.index): n.hash for n in completed})
    return nodes


def test_frontier_nodes_are_the_frontier_subtrees() -> None:
    for size in range(40):
        frontier = merkle.Frontier()
        for leaf in LEAVES[:size]:
            frontier = frontier.append(leaf)
        nodes = merkle.frontier_nodes(frontier)
        assert [n.hash for n in nodes] == list(frontier.hashes)
        tree = merkle.LeafHashes(LEAVES[:size])
        assert all(tree.subtree(n.level, n.index) == n.hash for n in nodes)
        assert sum(1 << n.level for n in nodes) == size


@given(st.data())
def test_window_proofs_equal_whole_tree_proofs(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(LEAVES)))
    start = data.draw(st.integers(0, size - 1))
    index = data.draw(st.integers(start, size - 1))
    window = merkle.NodeHashes(_window_nodes(start, size))
    proof = merkle.inclusion_proof(index, size, window)
    assert proof == merkle.inclusion_proof(index, size, LEAVES[:size])
    merkle.verify_inclusion(LEAVES[index], index, size, proof, merkle.root(LEAVES[:size]))


def test_a_leaf_before_the_window_has_no_proof_from_it() -> None:
    window = merkle.NodeHashes(_window_nodes(5, 9))
    with pytest.raises(ProofError):
        merkle.inclusion_proof(2, 9, window)
