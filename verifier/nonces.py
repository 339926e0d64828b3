"""Batched nonce issuance: challenges of many streams share one store transaction.

Every challenge's nonce must be durable before the challenge is sent (a spooled envelope bound
to a nonce the store forgot would be refused forever), and the stream sends a challenge after
every receipt. One fsync'd commit per challenge would cap the verifier far below what the
group-committed accepts allow, so nonces queue here and commit together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from attest import wire
from attest.errors import AttestError
from verifier.model import NONCE_TIME_BYTES, NonceRecord
from verifier.store.api import Store
from verifier.store.batch import Batcher

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def new_nonce(issued_at: datetime) -> bytes:
    """A challenge nonce: its issue time in µs since the epoch (8 bytes, big-endian), then
    24 random bytes.

    The 192 random bits make it unguessable and unique; the time prefix (no secret: a challenge
    states its own expiry) makes nonces nearly ordered, so the store appends each new nonce at
    the end of its primary key and consumes it on a page written moments before, instead of
    dirtying a random page twice per attestation (measured: ~40% of the SQLite WAL volume).
    """
    micros = (issued_at - _EPOCH) // _MICROSECOND
    return micros.to_bytes(NONCE_TIME_BYTES, "big") + os.urandom(wire.NONCE_LEN - NONCE_TIME_BYTES)


class NonceIssuer:
    """Queues `Store.issue_nonces` calls from the event loop into batches."""

    def __init__(self, store: Store, *, max_batch: int = 1024, min_interval: float = 0.0) -> None:
        def issue(records: list[NonceRecord]) -> Sequence[AttestError | None]:
            store.issue_nonces(records)
            return [None] * len(records)

        self._batcher: Batcher[NonceRecord, None] = Batcher(
            issue, name="nonce-issuer", max_batch=max_batch, min_interval=min_interval
        )

    async def start(self) -> None:
        await self._batcher.start()

    async def issue(self, record: NonceRecord) -> None:
        """Return once `record` is committed; raise StoreUnavailableError / StoreError."""
        await self._batcher.submit(record)

    async def close(self) -> None:
        await self._batcher.close()
