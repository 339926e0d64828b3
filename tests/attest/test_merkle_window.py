"""Proof nodes of recent leaves: a frontier's subtrees plus the nodes later appends complete
give the same inclusion proofs as the whole tree (verifier/transparency.py relies on it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from attest import merkle
from attest.errors import ProofError

LEAVES = [hashlib.sha256(bytes([i])).digest() for i in range(70)]


def _window(
    start: int, size: int
) -> tuple[dict[tuple[int, int], bytes], dict[tuple[int, int], bytes]]:
    """The nodes a checkpointer holds for the window [start, size), and the edge roots at size."""
    frontier = merkle.Frontier()
    for leaf in LEAVES[:start]:
        frontier = frontier.append(leaf)
    nodes = {(n.level, n.index): n.hash for n in merkle.frontier_nodes(frontier)}
    for leaf in LEAVES[start:size]:
        frontier, completed = frontier.append_with_nodes(leaf)
        nodes.update({(n.level, n.index): n.hash for n in completed})
    return nodes, merkle.edge_roots(frontier)


def _lookup(nodes: dict[tuple[int, int], bytes]) -> Callable[[int, int], bytes | None]:
    return lambda level, index: nodes.get((level, index))


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
        edges = merkle.edge_roots(frontier)
        assert all(root == merkle.root(LEAVES[a:b]) and b == size for (a, b), root in edges.items())
        assert edges.get((0, size), merkle.EMPTY_ROOT) == frontier.root()


@given(st.data())
def test_window_proofs_equal_whole_tree_proofs(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, len(LEAVES)))
    start = data.draw(st.integers(0, size - 1))
    index = data.draw(st.integers(start, size - 1))
    nodes, edges = _window(start, size)
    proof = merkle.inclusion_proof_from_nodes(index, size, _lookup(nodes), edges)
    assert proof == merkle.inclusion_proof(index, size, LEAVES[:size])
    merkle.verify_inclusion(LEAVES[index], index, size, proof, merkle.root(LEAVES[:size]))


def test_a_proof_outside_the_window_is_refused() -> None:
    nodes, edges = _window(5, 9)
    with pytest.raises(ProofError):  # before the window
        merkle.inclusion_proof_from_nodes(2, 9, _lookup(nodes), edges)
    with pytest.raises(ProofError):  # edge roots of another size
        merkle.inclusion_proof_from_nodes(0, 7, _lookup(_window(0, 9)[0]), edges)
    with pytest.raises(ProofError):
        merkle.inclusion_proof_from_nodes(9, 9, _lookup(nodes), edges)
