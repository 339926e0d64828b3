"""Signed checkpoints and inclusion proofs for receipts: an in-memory Merkle frontier over the
store's log, and the proof nodes of its recent leaves.

The store appends every accepted envelope to the transparency log (gapless log_index, leaf hash
RFC 6962). This process keeps the log's compact frontier (O(log n) hashes). The group committer
hands it the entries each of its own transactions appended (`observe`), so a lone replica never
reads the log back; only when another replica's entries sit in between does it catch up from
the store. It signs one C2SP checkpoint per tree size, shared by every receipt that size covers,
and answers each receipt with an inclusion proof in that tree (docs/protocol.md §5): a receipt
costs one signature per batch, not one per envelope.

Proofs come from memory. For a leaf at index i >= a in a tree of size n, every sibling on its
path lies wholly before a, and is then a subtree of the frontier at size a, or ends in (a, n]
and is either completed by an append after a (`merkle.Frontier.append_with_nodes`) or a range
on the tree's right edge, whose roots are folded once per signed size (`merkle.edge_roots`). So
the frontier's subtrees at the window start a, the nodes completed since and the edge roots are
all a proof needs: O(log n) lookups and no hashing per receipt. The window
holds two generations of at most WINDOW_LEAVES leaves each; a proof for an older entry (one
answered late, or before a catch-up that skipped past it) is read from the store's Merkle nodes
(`Store.log_inclusion_proof`), as is the frontier a catch-up past the window starts from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from attest import merkle
from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.errors import ProofError, StoreError
from attest.keys import SoftwareSigner
from verifier.config import VerifierConfig
from verifier.model import Accepted
from verifier.store.api import Store

#: Log entries read per query.
_CHUNK = 4096


def leaf_hashes(store: Store, start: int, stop: int) -> Iterator[bytes]:
    """The log's leaf hashes for start <= index < stop, read in bounded chunks (blocking)."""
    while start < stop:
        chunk = min(stop, start + _CHUNK)
        for entry in store.log_entries(start, chunk):
            yield entry.leaf_hash
        start = chunk


def checkpoint_origin(config: VerifierConfig, signer: SoftwareSigner) -> str:
    """The origin line (and note key name) of this verifier's checkpoints."""
    return config.log_origin or f"gpu-attest/verifier/{signer.public_key.keyid[:16]}"


#: Leaves per generation of in-memory proof nodes (two generations are kept, ~2 nodes a leaf):
#: a receipt is answered right after its batch commits, so a few batches (batch_max) suffice.
WINDOW_LEAVES = 4096


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    note: bytes
    #: merkle.edge_roots of the tree at `size`: shared by the proofs of every receipt it covers
    edges: dict[tuple[int, int], bytes]


@dataclass(frozen=True)
class Inclusion:
    """What a receipt carries to prove its entry: a signed checkpoint and the entry's path."""

    checkpoint: bytes
    size: int
    proof: tuple[bytes, ...]


class _Generation:
    """Perfect subtree hashes from one frontier on: its own subtrees, then every node completed
    by the leaves appended after it."""

    __slots__ = ("nodes", "start")

    def __init__(self, frontier: merkle.Frontier) -> None:
        self.start = frontier.size
        self.nodes = {(n.level, n.index): n.hash for n in merkle.frontier_nodes(frontier)}


class Checkpointer:
    """Signs checkpoints of the store's log with the receipt key (Ed25519) and proves entries."""

    def __init__(
        self, store: Store, signer: SoftwareSigner, origin: str, window: int = WINDOW_LEAVES
    ) -> None:
        self._store = store
        self._signer = signer
        self.origin = origin
        self._window = window
        self._frontier = merkle.Frontier()
        self._old = self._cur = _Generation(self._frontier)
        self._latest: SignedCheckpoint | None = None
        self._lock = asyncio.Lock()

    def _append(self, leaf: bytes) -> None:
        frontier, nodes = self._frontier.append_with_nodes(leaf)
        cur = self._cur.nodes
        for node in nodes:
            cur[node.level, node.index] = node.hash
        self._frontier = frontier
        if frontier.size - self._cur.start >= self._window:
            self._old, self._cur = self._cur, _Generation(frontier)

    def _rebase(self, frontier: merkle.Frontier) -> None:
        """Start over at `frontier` (a catch-up past the window): older proofs go to the store."""
        self._frontier = frontier
        self._old = self._cur = _Generation(frontier)

    def observe(self, committed: Sequence[Accepted]) -> None:
        """Extend the frontier by entries just committed (in log order), as far as they follow
        it without a gap; the rest is left to the catch-up from the store."""
        for accepted in committed:
            if accepted.log_index == self._frontier.size:
                self._append(accepted.leaf_hash)
            elif accepted.log_index > self._frontier.size:
                break  # entries of another replica come first

    def _read_log(self, frontier: merkle.Frontier) -> tuple[merkle.Frontier, list[bytes]]:
        """The log's entries after `frontier` (blocking: store reads): the log's frontier up to
        the last `window` entries (from the store's Merkle nodes when that skips any), and those
        entries' leaf hashes."""
        stop = self._store.log_size()
        cut = max(frontier.size, stop - self._window)
        if cut > frontier.size:
            frontier = self._store.log_frontier(cut)
        return frontier, list(leaf_hashes(self._store, cut, stop))

    def _catch_up(self, cut: merkle.Frontier, tail: Sequence[bytes]) -> None:
        if cut.size > self._frontier.size:
            self._rebase(cut)
        for index, leaf in enumerate(tail, start=cut.size):
            if index == self._frontier.size:  # `observe` may have run meanwhile
                self._append(leaf)

    def _sign(self) -> SignedCheckpoint:
        frontier = self._frontier
        checkpoint = Checkpoint(self.origin, frontier.size, frontier.root())
        note = sign_checkpoint(checkpoint, self.origin, self._signer)
        return SignedCheckpoint(frontier.size, note, merkle.edge_roots(frontier))

    async def _covering(self, log_index: int) -> SignedCheckpoint:
        latest = self._latest
        if latest is not None and latest.size > log_index:
            return latest
        async with self._lock:
            latest = self._latest
            if latest is None or latest.size <= log_index:
                if self._frontier.size <= log_index:
                    cut, tail = await asyncio.to_thread(self._read_log, self._frontier)
                    self._catch_up(cut, tail)
                if self._frontier.size <= log_index:
                    raise StoreError(f"the log does not yet hold entry {log_index}")
                latest = self._latest = self._sign()
        return latest

    async def covering(self, log_index: int) -> bytes:
        """A signed checkpoint whose tree includes `log_index`; raise StoreError if unreadable."""
        return (await self._covering(log_index)).note

    async def prove(self, log_index: int) -> Inclusion:
        """A signed checkpoint whose tree includes `log_index` and the entry's inclusion proof
        in that tree, from memory when the entry is in the window; raise StoreError."""
        latest = await self._covering(log_index)
        try:
            proof = self._proof_in_memory(log_index, latest)
        except ProofError:
            proof = await asyncio.to_thread(self._proof_from_store, log_index, latest.size)
        return Inclusion(latest.note, latest.size, proof)

    def _proof_in_memory(self, index: int, latest: SignedCheckpoint) -> tuple[bytes, ...]:
        """O(log n) lookups, no hashing; raise ProofError when the window does not reach back
        to `index`."""
        if index < self._old.start:
            raise ProofError(f"entry {index} is before the in-memory window")
        cur, old = self._cur.nodes, self._old.nodes

        def subtree(level: int, number: int) -> bytes | None:
            found = cur.get((level, number))
            return old.get((level, number)) if found is None else found

        return merkle.inclusion_proof_from_nodes(index, latest.size, subtree, latest.edges)

    def _proof_from_store(self, index: int, size: int) -> tuple[bytes, ...]:
        """The proof from the store's Merkle nodes, O(log n) rows (blocking)."""
        try:
            return self._store.log_inclusion_proof(index, size)
        except ProofError as exc:  # the checkpoint's size is in the log: a store fault
            raise StoreError(f"the log cannot prove entry {index} at size {size}: {exc}") from exc
