"""The systemd notify protocol (sd_notify(3)), written by hand: one datagram per state change.

Shared by both daemons (agent and verifier); standard library only.

`$NOTIFY_SOCKET` is a path or, with a leading '@', a name in the abstract namespace. Without it
(not started by systemd with Type=notify) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def socket_address(value: str) -> str | bytes:
    """The address to send to: '@name' means the abstract socket b'\\0name'."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")
    return value


class Notifier:
    """Sends READY=1, WATCHDOG=1, STOPPING=1, STATUS=... to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        target = env.get("NOTIFY_SOCKET", "")
        self._address = socket_address(target) if target else None
        self._watchdog_s = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half the manager's timeout), or None when not asked."""
        return None if self._watchdog_s is None else self._watchdog_s / 2

    def notify(self, *states: str) -> bool:
        """Send the states in one datagram; return False when not under systemd or on error.

        A failure to notify must never stop the agent, so socket errors are swallowed here.
        """
        if self._address is None:
            return False
        message = "\n".join(states).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop on a manager that does not read its socket.
                sock.setblocking(False)
                sock.connect(self._address)
                sock.sendall(message)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        return self.notify("RELOADING=1")


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000
