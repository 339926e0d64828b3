"""Group commit: many concurrent accepts share one database transaction.

Each gRPC stream awaits `GroupCommitter.submit`; the committer drains everything queued while
the previous transaction was committing into the next one, so batches grow with load. A
transaction starts at most every `min_interval`, unless a quarter of `max_batch` is queued
already: under light load, when each envelope would otherwise get a transaction (an fsync, a
checkpoint signature, a dozen dirtied pages) of its own, envelopes arriving close together
share one, at the cost of waiting up to that long. Under heavy load the queue fills first and
nothing waits. A future resolves only after COMMIT returned, so a receipt built from it is
never ahead of the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Generic, TypeVar

from attest.errors import AttestError, StoreError
from verifier.model import Accepted, NonceRecord, VerifiedAttestation
from verifier.store.api import Store
from verifier.store.core import describe_items

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Batcher(Generic[I, R]):
    """Runs `run_batch` on one worker thread over everything queued from the event loop.

    `run_batch(items)` returns one result per item: a value, or the item's own AttestError.
    `on_results`, if given, sees a committed batch's values (in order, errors left out) on the
    event loop before any submitter resumes.
    When it raises instead, every item of the batch fails with that error (a non-AttestError
    becomes StoreError, logged, so a driver bug never kills the loop). A submitter's future is
    resolved only after `run_batch` returned, i.e. after its transaction committed.
    Batches start at least `min_interval` seconds apart (0: as soon as the last one is done),
    or sooner once `max_batch // 4` items are queued.
    """

    def __init__(
        self,
        run_batch: Callable[[list[I]], Sequence[R | AttestError]],
        *,
        name: str,
        max_batch: int,
        min_interval: float = 0.0,
        on_results: Callable[[Sequence[R]], None] | None = None,
    ) -> None:
        if min_interval < 0:
            raise ValueError("min_interval must not be negative")
        self._run_batch = run_batch
        self._min_interval = min_interval
        self._on_results = on_results
        self._name = name
        self._max_batch = max_batch
        self._fill = max(1, max_batch // 4)
        self._queue: asyncio.Queue[tuple[I, asyncio.Future[R]]] = asyncio.Queue()
        #: set while the batching loop waits out the interval, by the submit that fills it
        self._filled: asyncio.Event | None = None
        # One thread: SQLite has one writer connection, and PostgreSQL batches serialize on
        # the log head anyway, so a second committer would only wait.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def submit(self, item: I) -> R:
        """Queue one item and wait for its result; raise its error or the batch's."""
        if self._task is None:
            raise StoreError(f"{self._name} is not started")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))  # unbounded: never full, no coroutine to await
        # +1: the item the batching loop holds already
        if self._filled is not None and self._queue.qsize() + 1 >= self._fill:
            self._filled.set()
        return await future

    async def close(self) -> None:
        """Run what is queued, then stop; later submits raise StoreError."""
        task, self._task = self._task, None
        if task is not None:
            await self._queue.join()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._executor.shutdown(wait=True)
        if self.batches:
            log.info(
                "%s: %d items in %d transactions (%.1f per commit)",
                self._name, self.items, self.batches, self.items / self.batches,
            )  # fmt: skip

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = -math.inf
        while True:
            batch = [await self._queue.get()]
            pause = started + self._min_interval - loop.time()
            if pause > 0 and self._queue.qsize() + 1 < self._fill:
                # What arrives meanwhile joins this batch; a full quarter ends the wait.
                self._filled = asyncio.Event()
                try:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._filled.wait(), pause)
                finally:
                    self._filled = None
            started = loop.time()
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit(loop, batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[I, asyncio.Future[R]]]
    ) -> None:
        items = [item for item, _ in batch]
        done: asyncio.Future[None] = loop.create_future()

        def run() -> None:
            # On the worker thread. The outcome is handed back in one call_soon_threadsafe
            # that resolves the submitters' futures itself: one event-loop turn per batch
            # instead of run_in_executor's two (wrap the future, then resume this task).
            try:
                outcome: Sequence[R | AttestError] | BaseException = self._run_batch(items)
            except BaseException as exc:  # noqa: BLE001 - delivered to the loop, typed there
                outcome = exc
            loop.call_soon_threadsafe(self._deliver, batch, outcome, done)

        self._executor.submit(run)
        await asyncio.shield(done)  # the batch finishes even if this task is cancelled

    def _deliver(
        self,
        batch: list[tuple[I, asyncio.Future[R]]],
        outcome: Sequence[R | AttestError] | BaseException,
        done: asyncio.Future[None],
    ) -> None:
        """On the event loop, once `run_batch` returned (its transaction committed) or
        raised: resolve every submitter's future, then let the batching loop go on."""
        try:
            self._resolve(batch, outcome)
        finally:
            if not done.done():
                done.set_result(None)

    def _resolve(
        self,
        batch: list[tuple[I, asyncio.Future[R]]],
        outcome: Sequence[R | AttestError] | BaseException,
    ) -> None:
        if isinstance(outcome, AttestError):
            _fail_all(batch, outcome)
            return
        if isinstance(outcome, BaseException):  # a bug or driver error must not kill the loop
            log.error("%s failed", self._name, exc_info=outcome)
            _fail_all(batch, StoreError(f"{self._name} failed: {type(outcome).__name__}"))
            return
        results = outcome
        self.batches += 1
        self.items += len(batch)
        if self._on_results is not None:
            try:
                self._on_results([r for r in results if not isinstance(r, AttestError)])
            except Exception:  # an observer's bug must not withhold committed results
                log.exception("%s: result observer failed", self._name)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away (stream cancelled)
                continue
            if isinstance(result, AttestError):
                future.set_exception(result)
            else:
                future.set_result(result)


def _fail_all(batch: Sequence[tuple[object, asyncio.Future[R]]], exc: AttestError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


class GroupCommitter:
    """Batches `Store.accept` calls from the event loop into one writer thread."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 512,
        min_interval: float = 0.0,
        clock: Callable[[], datetime] = _utcnow,
        on_commit: Callable[[Sequence[Accepted]], None] | None = None,
    ) -> None:
        def accept(
            batch: list[tuple[VerifiedAttestation, NonceRecord | None]],
        ) -> Sequence[Accepted | AttestError]:
            nonces = [nonce for _, nonce in batch if nonce is not None]
            items = [item for item, _ in batch]
            try:
                return store.accept(items, clock(), nonces)
            except AttestError as exc:
                # Every caller gets this error; the log names whose envelopes it hit.
                log.warning(
                    "group commit failed for %s: %s: %s", describe_items(items), exc.code, exc
                )
                raise

        self._batcher: Batcher[tuple[VerifiedAttestation, NonceRecord | None], Accepted]
        self._batcher = Batcher(
            accept,
            name="group-commit",
            max_batch=max_batch,
            min_interval=min_interval,
            on_results=on_commit,
        )

    @property
    def batches(self) -> int:
        """Transactions committed so far."""
        return self._batcher.batches

    @property
    def items(self) -> int:
        """Attestations those transactions carried."""
        return self._batcher.items

    async def start(self) -> None:
        """Start the commit loop on the running event loop."""
        await self._batcher.start()

    async def submit(self, item: VerifiedAttestation, nonce: NonceRecord | None = None) -> Accepted:
        """Queue one attestation and wait until it is durable.

        `nonce`, when given, is issued in the same transaction (see `Store.accept`): it is
        durable once this returns or raises an item's own error.

        Returns its Accepted outcome. Raises the item's typed error (ReplayError, ForkError,
        GapError, Nonce*Error, Agent*Error) or, when the batch could not commit,
        StoreUnavailableError / StoreError.
        """
        return await self._batcher.submit((item, nonce))

    async def close(self) -> None:
        """Commit what is queued, then stop; later submits raise StoreError."""
        await self._batcher.close()
