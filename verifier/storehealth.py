"""Whether the store takes writes, told to everyone who must know (docs/design.md §11).

A verifier whose store fails (disk or file size limit full, database unreachable) refuses every
envelope with `store-unavailable`; left silent, its health still said SERVING and systemd's
watchdog was still fed, so no load balancer or supervisor would act. `StoreHealth` turns a
store failure into gRPC health NOT_SERVING, one log line, the `store_up` metric at 0 and a
STATUS= line to systemd, and stops the watchdog; all of it is undone when a write succeeds
again. Failures are reported by whoever meets them; only a successful probe write
(`serve`'s probe loop) says the store is back, since requests stop coming to an unhealthy
verifier and could never prove it healthy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from attest.errors import StoreError, StoreUnavailableError
from attest.sdnotify import Notifier
from verifier.metrics import Metrics

log = logging.getLogger(__name__)

Publish = Callable[[bool], Awaitable[None]]


async def _nothing(_up: bool) -> None:
    return None


class StoreHealth:
    """The store's state as last observed; transitions are logged and published once."""

    def __init__(self, metrics: Metrics, publish: Publish = _nothing) -> None:
        self._metrics = metrics
        self._publish = publish
        self.up = True
        metrics.store_up.set(1)

    def bind(self, publish: Publish) -> None:
        """Where transitions go (health, systemd status); set once serving has started."""
        self._publish = publish

    async def failed(self, error: StoreError) -> None:
        """A store operation failed. When the store itself failed (StoreUnavailableError: the
        database is unreachable, locked, full or failing I/O), it is down until a probe write
        succeeds; any other StoreError is one item's values refused while the store works (the
        accept path isolates it), which only counts: otherwise one hostile agent's envelope
        could turn the whole verifier NOT_SERVING and starve its watchdog."""
        self._metrics.store_failures.labels(code=error.code).inc()
        if not self.up or not isinstance(error, StoreUnavailableError):
            return
        self.up = False
        self._metrics.store_up.set(0)
        log.error("store failing, health NOT_SERVING until it takes writes again: %s", error)
        await self._publish(False)

    async def succeeded(self) -> None:
        """A probe write was committed: the store is up."""
        if self.up:
            return
        self.up = True
        self._metrics.store_up.set(1)
        log.warning("store recovered: it takes writes again, health SERVING")
        await self._publish(True)

    async def probe(self, write: Callable[[], None]) -> bool:
        """Run the blocking store write `write` in a thread; report and return its outcome."""
        try:
            await asyncio.to_thread(write)
        except StoreError as exc:
            await self.failed(exc)
            return False
        await self.succeeded()
        return True

    def feed_watchdog(self, notifier: Notifier) -> bool:
        """WATCHDOG=1, but only while the store takes writes: a verifier that cannot store is
        not healthy, and systemd restarts it once the store has failed for WatchdogSec."""
        if not self.up:
            return False
        return notifier.watchdog()
