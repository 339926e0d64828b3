"""The systemd notify protocol against real unix datagram sockets (path and abstract)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from attest.sdnotify import Notifier, socket_address


def _receiver(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_path_socket_receives_each_state(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with _receiver(str(path)) as sock:
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled
        assert notifier.ready("attesting")
        assert sock.recv(4096) == b"READY=1\nSTATUS=attesting"
        assert notifier.watchdog() and sock.recv(4096) == b"WATCHDOG=1"
        assert notifier.reloading() and sock.recv(4096) == b"RELOADING=1"
        assert notifier.stopping() and sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"@gpu-attest-test-{os.getpid()}"
    assert socket_address(name) == b"\0" + name[1:].encode()
    with _receiver(socket_address(name)) as sock:
        assert Notifier({"NOTIFY_SOCKET": name}).notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_without_systemd_everything_is_a_no_op(tmp_path: Path) -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval_s is None
    assert not notifier.ready()
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not gone.ready()  # a vanished manager never stops the agent


def test_watchdog_interval_is_half_the_timeout() -> None:
    pid = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval_s == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}).watchdog_interval_s == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
