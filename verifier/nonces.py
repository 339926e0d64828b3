"""Batched nonce issuance: challenges of many streams share one store transaction.

Every challenge's nonce must be durable before the challenge is sent (a spooled envelope bound
to a nonce the store forgot would be refused forever), and the stream sends a challenge after
every receipt. One fsync'd commit per challenge would cap the verifier far below what the
group-committed accepts allow, so nonces queue here and commit together.
"""

from __future__ import annotations

from collections.abc import Sequence

from attest.errors import AttestError
from verifier.store.api import NonceRecord, Store
from verifier.store.batch import Batcher


class NonceIssuer:
    """Queues `Store.issue_nonces` calls from the event loop into batches."""

    def __init__(self, store: Store, *, max_batch: int = 1024) -> None:
        def issue(records: list[NonceRecord]) -> Sequence[AttestError | None]:
            store.issue_nonces(records)
            return [None] * len(records)

        self._batcher: Batcher[NonceRecord, None] = Batcher(
            issue, name="nonce-issuer", max_batch=max_batch
        )

    async def start(self) -> None:
        await self._batcher.start()

    async def issue(self, record: NonceRecord) -> None:
        """Return once `record` is committed; raise StoreUnavailableError / StoreError."""
        await self._batcher.submit(record)

    async def close(self) -> None:
        await self._batcher.close()
