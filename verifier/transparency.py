"""Signed checkpoints for receipts: an in-memory Merkle frontier over the store's log.

The store appends every accepted envelope to the transparency log (gapless log_index, leaf hash
RFC 6962). This process keeps the log's compact frontier (O(log n) hashes). The group committer
hands it the entries each of its own transactions appended (`observe`), so a lone replica never
reads the log back; only when another replica's entries sit in between does it catch up from
the store. It signs one C2SP checkpoint per tree size, shared by every receipt that size covers:
a receipt carries a checkpoint whose tree contains its envelope, at one signature per batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from attest import merkle
from attest.checkpoint import Checkpoint, sign_checkpoint
from attest.errors import StoreError
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


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    note: bytes


class Checkpointer:
    """Signs checkpoints of the store's log with the receipt key (Ed25519)."""

    def __init__(self, store: Store, signer: SoftwareSigner, origin: str) -> None:
        self._store = store
        self._signer = signer
        self.origin = origin
        self._frontier = merkle.Frontier()
        self._latest: SignedCheckpoint | None = None
        self._lock = asyncio.Lock()

    def observe(self, committed: Sequence[Accepted]) -> None:
        """Extend the frontier by entries just committed (in log order), as far as they follow
        it without a gap; the rest is left to the catch-up from the store."""
        frontier = self._frontier
        for accepted in committed:
            if accepted.log_index == frontier.size:
                frontier = frontier.append(accepted.leaf_hash)
            elif accepted.log_index > frontier.size:
                break  # entries of another replica come first
        self._frontier = frontier

    def _caught_up(self, frontier: merkle.Frontier) -> merkle.Frontier:
        """`frontier` extended by every log entry it has not seen yet (blocking: store reads)."""
        for leaf in leaf_hashes(self._store, frontier.size, self._store.log_size()):
            frontier = frontier.append(leaf)
        return frontier

    def _sign(self) -> SignedCheckpoint:
        frontier = self._frontier
        checkpoint = Checkpoint(self.origin, frontier.size, frontier.root())
        return SignedCheckpoint(
            frontier.size, sign_checkpoint(checkpoint, self.origin, self._signer)
        )

    async def covering(self, log_index: int) -> bytes:
        """A signed checkpoint whose tree includes `log_index`; raise StoreError if unreadable."""
        latest = self._latest
        if latest is not None and latest.size > log_index:
            return latest.note
        async with self._lock:
            latest = self._latest
            if latest is None or latest.size <= log_index:
                if self._frontier.size <= log_index:
                    frontier = await asyncio.to_thread(self._caught_up, self._frontier)
                    if frontier.size > self._frontier.size:  # `observe` may have run meanwhile
                        self._frontier = frontier
                if self._frontier.size <= log_index:
                    raise StoreError(f"the log does not yet hold entry {log_index}")
                latest = self._latest = self._sign()
        return latest.note
