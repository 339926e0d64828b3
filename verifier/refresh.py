"""One timer for every open stream's idle-challenge refresh.

A stream that sends nothing for half a challenge's lifetime gets a fresh challenge, so the agent
always holds a live nonce. A sleeping task per stream did that at the cost of a task, a
coroutine frame and a timer per stream (about 1 KB each, 10 MB at 10,000 agents); here one task
walks a heap ordered by due time. A stream that was answered meanwhile has moved its
`refresh_at` on and is simply put back for later.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

#: Longest sleep between looks at the heap; challenge lifetimes are at least 10 s.
_TICK_S = 1.0


class Refreshable(Protocol):
    refresh_at: float  # time.monotonic() at which the stream is due a fresh challenge
    closed: bool


S = TypeVar("S", bound=Refreshable)


class IdleRefresher(Generic[S]):
    """Calls `due(session)` once each registered session's `refresh_at` has passed.

    `due` runs as its own short task (it writes to the stream, which may block); it is expected
    to move `refresh_at` on. A closed session is forgotten the next time it comes due. The
    timer task runs only while some session is registered.
    """

    def __init__(self, due: Callable[[S], Awaitable[None]]) -> None:
        self._due = due
        self._heap: list[tuple[float, int, S]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._sending: dict[S, asyncio.Task[None]] = {}  # one refresh in flight per session
        self._live = 0  # sessions added and not yet discarded

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, session: S) -> None:
        """Watch `session` until it is closed (then call `discard`)."""
        heapq.heappush(self._heap, (session.refresh_at, next(self._order), session))
        self._live += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="idle-refresh")

    def discard(self, session: S) -> None:
        """`session` closed: it leaves the heap when next due; with none left open, the timer
        stops at its next tick (so a stopped server leaves no task behind)."""
        if session.closed:
            self._live -= 1

    async def _run(self) -> None:
        heap = self._heap
        while heap:
            if self._live <= 0:
                heap.clear()
                return
            now = time.monotonic()
            while heap and heap[0][0] <= now:
                _, _, session = heapq.heappop(heap)
                if session.closed:
                    continue
                if session.refresh_at <= now:
                    if session not in self._sending:  # (a write can block on a slow peer)
                        self._sending[session] = asyncio.create_task(self._send(session))
                    # Looked at again on the next tick: by then `due` has moved refresh_at.
                    heapq.heappush(heap, (now + _TICK_S, next(self._order), session))
                else:
                    heapq.heappush(heap, (session.refresh_at, next(self._order), session))
            if heap:
                await asyncio.sleep(min(_TICK_S, max(heap[0][0] - time.monotonic(), 0.0)))

    async def _send(self, session: S) -> None:
        try:
            await self._due(session)
        except Exception:  # one stream's failure must not stop the others' refreshes
            log.exception("idle challenge refresh failed")
        finally:
            del self._sending[session]
