"""Batched nonce issuance: challenges of many streams share one store transaction.

Every challenge's nonce must be durable before the challenge is sent (a spooled envelope bound
to a nonce the store forgot would be refused forever), and the stream sends a challenge after
every receipt. One fsync'd commit per challenge would cap the verifier far below what the
group-committed accepts allow, so nonces queue here and commit together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from attest.errors import AttestError, StoreError
from verifier.store.api import NonceRecord, Store

log = logging.getLogger(__name__)

_Pending = tuple[NonceRecord, "asyncio.Future[None]"]


class NonceIssuer:
    """Queues `Store.issue_nonces` calls from the event loop into batches."""

    def __init__(self, store: Store, *, max_batch: int = 1024) -> None:
        self._store = store
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="nonce-issuer")

    async def issue(self, record: NonceRecord) -> None:
        """Return once `record` is committed; raise StoreUnavailableError / StoreError."""
        if self._task is None:
            raise StoreError("nonce issuer is not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((record, future))
        await future

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await self._queue.join()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await asyncio.to_thread(self._store.issue_nonces, [record for record, _ in batch])
        except AttestError as exc:
            error: AttestError | None = exc
        except Exception as exc:  # a driver bug must not kill the loop; callers see StoreError
            log.exception("issuing nonces failed")
            error = StoreError(f"issuing nonces failed: {type(exc).__name__}")
        else:
            error = None
        for _, future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
