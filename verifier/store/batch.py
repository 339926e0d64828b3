"""Group commit: many concurrent accepts share one database transaction.

Each gRPC stream awaits `GroupCommitter.submit`; the committer drains everything queued while
the previous transaction was committing into the next one, so batches grow with load and a lone
envelope waits for nothing. A future resolves only after COMMIT returned, so a receipt built
from it is never ahead of the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from attest.errors import AttestError, StoreError
from verifier.store.api import Accepted, AcceptOutcome, NonceRecord, Store, VerifiedAttestation

log = logging.getLogger(__name__)

_Pending = tuple[VerifiedAttestation, NonceRecord | None, "asyncio.Future[Accepted]"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class GroupCommitter:
    """Batches `Store.accept` calls from the event loop into one writer thread."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 512,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._clock = clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        # One thread: SQLite has one writer connection, and PostgreSQL batches serialize on
        # the log head anyway, so a second committer would only wait.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-commit")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def start(self) -> None:
        """Start the commit loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")

    async def submit(self, item: VerifiedAttestation, nonce: NonceRecord | None = None) -> Accepted:
        """Queue one attestation and wait until it is durable.

        `nonce`, when given, is issued in the same transaction (see `Store.accept`): it is
        durable once this returns or raises an item's own error.

        Returns its Accepted outcome. Raises the item's typed error (ReplayError, ForkError,
        GapError, Nonce*Error, Agent*Error) or, when the batch could not commit,
        StoreUnavailableError / StoreError.
        """
        if self._task is None:
            raise StoreError("group committer is not started")
        future: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, nonce, future))
        return await future

    async def close(self) -> None:
        """Commit what is queued, then stop; later submits raise StoreError."""
        task, self._task = self._task, None
        if task is not None:
            await self._queue.join()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=True)
        if self.batches:
            log.info(
                "group commit: %d envelopes in %d transactions (%.1f per commit)",
                self.items, self.batches, self.items / self.batches,
            )  # fmt: skip

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(loop, batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        items = [item for item, _, _ in batch]
        nonces = [nonce for _, nonce, _ in batch if nonce is not None]
        try:
            outcomes: list[AcceptOutcome] = await loop.run_in_executor(
                self._executor, self._store.accept, items, self._clock(), nonces
            )
        except AttestError as exc:
            _fail_all(batch, exc)
            return
        except Exception as exc:  # a bug or driver error must not kill the commit loop
            log.exception("group commit failed")
            _fail_all(batch, StoreError(f"commit failed: {type(exc).__name__}"))
            return
        self.batches += 1
        self.items += len(items)
        for (_, _, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away (stream cancelled)
                continue
            if isinstance(outcome, Accepted):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)


def _fail_all(batch: list[_Pending], exc: AttestError) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(exc)
