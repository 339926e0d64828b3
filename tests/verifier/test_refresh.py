"""The idle refresher: one timer task calls each stream's refresh when due, once at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from verifier.refresh import IdleRefresher


@dataclass(eq=False)
class Session:
    refresh_at: float
    closed: bool = False
    calls: int = 0


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():  # noqa: ASYNC110 - polls the refresher from outside
            await asyncio.sleep(0.01)


async def test_due_sessions_are_refreshed_and_others_wait() -> None:
    async def due(session: Session) -> None:
        session.calls += 1
        session.refresh_at = time.monotonic() + 3600  # what sending a challenge does

    refresher: IdleRefresher[Session] = IdleRefresher(due)
    now = time.monotonic()
    idle, busy = Session(now), Session(now + 3600)
    refresher.add(idle)
    refresher.add(busy)
    await _until(lambda: idle.calls == 1)
    await asyncio.sleep(0.1)
    assert (idle.calls, busy.calls) == (1, 0)
    # A session answered meanwhile (refresh_at moved on) is only put back.
    moved = Session(now)
    moved.refresh_at = now + 3600
    refresher.add(moved)
    await asyncio.sleep(0.1)
    assert moved.calls == 0
    for session in (idle, busy, moved):
        session.closed = True


async def test_a_blocked_refresh_is_not_stacked_and_closed_sessions_are_dropped() -> None:
    release = asyncio.Event()

    async def due(session: Session) -> None:
        session.calls += 1
        await release.wait()  # a write blocked on a slow peer
        session.closed = True

    refresher: IdleRefresher[Session] = IdleRefresher(due)
    session = Session(time.monotonic())
    refresher.add(session)
    await asyncio.sleep(2.5)  # two ticks pass while the first refresh is still blocked
    assert session.calls == 1
    release.set()
    await _until(lambda: len(refresher) == 0)  # the closed session left; the timer stops


async def test_the_timer_stops_once_every_session_is_discarded() -> None:
    async def due(session: Session) -> None:
        session.calls += 1

    refresher: IdleRefresher[Session] = IdleRefresher(due)
    sessions = [Session(time.monotonic() + 3600) for _ in range(3)]
    for session in sessions:
        refresher.add(session)
    for session in sessions:
        session.closed = True
        refresher.discard(session)
    await _until(lambda: len(refresher) == 0)  # within a tick, not at the hour


async def test_a_failing_refresh_does_not_stop_the_others() -> None:
    async def due(session: Session) -> None:
        session.calls += 1
        session.refresh_at = time.monotonic() + 3600
        if session is first:
            raise RuntimeError("this stream's write failed")

    refresher: IdleRefresher[Session] = IdleRefresher(due)
    first, second = Session(time.monotonic()), Session(time.monotonic())
    refresher.add(first)
    refresher.add(second)
    await _until(lambda: first.calls == 1 and second.calls == 1)
    first.closed = second.closed = True
