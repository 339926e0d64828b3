"""The worker side of `serve --workers N` (docs/design.md §10): what one worker process is told
by its supervisor, and the channel it answers on.

A worker speaks the sd_notify(3) protocol (READY=1, WATCHDOG=1, STATUS=, STOPPING=1), not to
systemd but to its supervisor, over one end of a datagram socketpair the supervisor created and
passed down: no path or abstract name that another local process could send to. It adds one
key of its own, METRICS_PORT=, the loopback port its metrics are read from.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from attest.sdnotify import Notifier

log = logging.getLogger(__name__)

#: How often a worker sends WATCHDOG=1 to its supervisor (while its store takes writes).
HEARTBEAT_S = 1.0
#: The index of the worker that runs the duties one verifier must run once: the findings sweep,
#: the location pass, live compliance and the landmark (docs/design.md §10).
DUTY_WORKER = 0


@dataclass(frozen=True)
class WorkerRole:
    """One worker's place: its index (0..count-1) and the descriptor it reports on."""

    index: int
    count: int
    notify_fd: int

    @property
    def runs_duties(self) -> bool:
        return self.index == DUTY_WORKER

    def notifier(self) -> SocketNotifier:
        return SocketNotifier(socket.socket(fileno=self.notify_fd))


class SocketNotifier(Notifier):
    """A Notifier that sends on an already connected datagram socket (the supervisor's)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__({})
        sock.setblocking(False)
        self._sock = sock
        self._parent = os.getppid()

    @property
    def enabled(self) -> bool:
        return True

    @property
    def watchdog_interval_s(self) -> float | None:
        return HEARTBEAT_S

    def notify(self, *states: str) -> bool:
        try:
            self._sock.send("\n".join(states).encode("utf-8"))
        except OSError:
            return False
        return True

    def orphaned(self) -> bool:
        """Whether the supervisor is gone (this process was re-parented): a worker without
        its supervisor drains and exits rather than serve unsupervised."""
        return os.getppid() != self._parent

    async def until_orphaned(self, stop: Callable[[], None]) -> None:
        """Call `stop` once the supervisor is gone (checked every heartbeat)."""
        while not self.orphaned():  # noqa: ASYNC110 - no event tells a process its parent died
            await asyncio.sleep(HEARTBEAT_S)
        log.error("the supervisor is gone: shutting down")
        stop()
