"""Test hosts in network namespaces, joined by veth pairs, with delay on the path between them.

A `Lab` makes namespaces named `gat<pid>-<n>-<role>` (unique per test run), links them with veth
pairs created directly inside the namespaces (nothing lands in the host's own namespace), gives
each link a /24 of 10.201.0.0/16, and adds the routes. `Lab.path` puts a router namespace
between a client and a server with a one-way delay each way:

- where the kernel has netem, `tc qdisc ... netem delay` on both ends of the client's link, and
  the client connects straight to the server's address, routed through the router;
- otherwise a delaying relay process (tests/delay_relay.py) runs in the router, and the client
  connects to the relay.

Either way a round trip over the path gains 2 x delay, and a relay on the path only ever adds
delay, which is what the landmark bound rests on (docs/design.md §2). Teardown stops every
process the lab started, kills whatever is left inside its namespaces and deletes them, even when
the test failed; `sweep_leftovers` removes the namespaces of runs whose process is gone.

Everything here needs root and iproute2; `unavailable_reason` says why a host cannot do it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import pytest

from tests.agent.helpers import LineReader

ROOT = Path(__file__).parents[1]
PREFIX = "gat"
_OURS = re.compile(rf"^{PREFIX}(\d+)-")
#: Links get 10.201.<k>.0/24, k = 1..250, in the order made.
SUBNET = "10.201"
DelayMode = Literal["netem", "relay"]


class NetnsError(RuntimeError):
    """An `ip` or `tc` command failed while building or tearing down a lab."""


def _ip(*argv: str, timeout: float = 30) -> str:
    done = subprocess.run(
        ["ip", *argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of the namespaces `ip netns` knows (the `(id: N)` suffix dropped)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _kill_inside(name: str) -> None:
    """SIGKILL each process still in namespace `name`, by its pid (only ever our own relays and
    servers: the namespace was made by a test run)."""
    try:
        pids = _ip("netns", "pids", name).split()
    except NetnsError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def delete_namespace(name: str) -> None:
    _kill_inside(name)
    _ip("netns", "delete", name)


def sweep_leftovers() -> list[str]:
    """Delete the namespaces of earlier test runs whose process is gone; returns their names."""
    swept = []
    for name in list_namespaces():
        match = _OURS.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            delete_namespace(name)
            swept.append(name)
    return swept


@functools.cache
def unavailable_reason() -> str | None:
    """Why this host cannot make test namespaces, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"network namespaces need root (euid {os.geteuid()})"
    if shutil.which("ip") is None:
        return "no `ip` command (install iproute2)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        delete_namespace(probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot make a network namespace: {exc}"
    sweep_leftovers()
    return None


def require_namespaces() -> None:
    """Skip the calling test with the reason where namespaces cannot be made; in CI (root,
    iproute2: .ci/run) fail instead, so that the tests across a real network path never
    silently stop running there."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the network namespace tests: {reason}")
    pytest.skip(reason)


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has the netem qdisc (tried on loopback in a scratch namespace)."""
    if shutil.which("tc") is None:
        return False
    probe = f"{PREFIX}{os.getpid()}-netem"
    _ip("netns", "add", probe)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
             "delay", "1ms"],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        return done.returncode == 0
    finally:
        delete_namespace(probe)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Namespace:
    name: str

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, timeout: float = 60) -> str:
        """Run `argv` inside this namespace from the repository root; its stdout.
        Raises NetnsError with its output when it fails."""
        done = subprocess.run(
            self.argv(*argv), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise NetnsError(
                f"{' '.join(argv)} in {self.name} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done.stdout


@dataclass(frozen=True)
class Link:
    """A veth pair: `a_dev`/`a_addr` in `a`, `b_dev`/`b_addr` in `b`."""

    a: Namespace
    b: Namespace
    a_dev: str
    b_dev: str
    a_addr: str
    b_addr: str


@dataclass
class Process:
    popen: subprocess.Popen[str]
    output: LineReader


@dataclass
class Lab:
    """Namespaces, links and processes of one test; a context manager that tears all down."""

    delay_mode: DelayMode | None = None  # None: netem where the kernel has it, else relay
    namespaces: list[Namespace] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    _links: int = 0

    def __enter__(self) -> Lab:
        if self.delay_mode is None:
            self.delay_mode = "netem" if netem_available() else "relay"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def namespace(self, role: str) -> Namespace:
        """A new namespace with loopback up."""
        ns = Namespace(f"{PREFIX}{os.getpid()}-{_next_id()}-{role}")
        _ip("netns", "add", ns.name)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def link(self, a: Namespace, b: Namespace) -> Link:
        """A veth pair between `a` (10.201.k.1) and `b` (10.201.k.2), both up."""
        self._links += 1
        k = self._links
        if k > 250:
            raise NetnsError("a lab has at most 250 links")
        tag = f"g{os.getpid()}x{k}"  # an interface name has at most 15 characters
        link = Link(a, b, f"{tag}a", f"{tag}b", f"{SUBNET}.{k}.1", f"{SUBNET}.{k}.2")
        _ip("link", "add", link.a_dev, "netns", a.name, "type", "veth",
            "peer", "name", link.b_dev, "netns", b.name)  # fmt: skip
        for ns, dev, addr in ((a, link.a_dev, link.a_addr), (b, link.b_dev, link.b_addr)):
            ns.run("ip", "addr", "add", f"{addr}/24", "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
        return link

    def start(self, ns: Namespace, argv: Sequence[str], ready: str, timeout: float = 30) -> Process:
        """Start `argv` in `ns` (from the repository root) and wait for a line with `ready`;
        the lab stops it at teardown."""
        popen = subprocess.Popen(
            ns.argv(*argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert popen.stdout is not None
        process = Process(popen, LineReader(popen.stdout))
        self.processes.append(process)
        deadline = time.monotonic() + timeout
        while True:
            try:
                process.output.wait_for(ready, 0.2)
            except AssertionError:
                if popen.poll() is not None:
                    with contextlib.suppress(AssertionError):  # its last lines, if still piped
                        process.output.wait_for("\0", 0.5)
                    seen = process.output.seen[-20:]
                    raise NetnsError(
                        f"{argv[0]} ... in {ns.name} exited {popen.returncode} before {ready!r}: "
                        f"{seen}"
                    ) from None
                if time.monotonic() > deadline:
                    seen = process.output.seen[-20:]
                    raise NetnsError(f"no {ready!r} from {ns.name} in {timeout}s: {seen}") from None
            else:
                return process

    def relay(
        self, ns: Namespace, listen: Endpoint, target: Endpoint, one_way_s: float
    ) -> Endpoint:
        """A delaying relay in `ns` from `listen` to `target`; returns `listen`."""
        argv = [sys.executable, "-m", "tests.delay_relay", "--listen", str(listen),
                "--connect", str(target), "--delay-ms", repr(one_way_s * 1000)]  # fmt: skip
        self.start(ns, argv, "relay listening")
        return listen

    def path(self, client: Namespace, server: Namespace, port: int, one_way_s: float) -> Endpoint:
        """Put a router between `client` and `server` with `one_way_s` of delay each way; the
        endpoint `client` connects to in order to reach `server`'s `port`."""
        router = self.namespace("router")
        near = self.link(client, router)
        far = self.link(router, server)
        router.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        client.run("ip", "route", "add", f"{far.b_addr}/32", "via", near.b_addr)
        server.run("ip", "route", "add", f"{near.a_addr}/32", "via", far.a_addr)
        target = Endpoint(far.b_addr, port)
        if self.delay_mode == "netem":
            if one_way_s > 0:
                delay = f"{one_way_s * 1e6:.0f}us"
                client.run("tc", "qdisc", "add", "dev", near.a_dev, "root", "netem", "delay", delay)
                router.run("tc", "qdisc", "add", "dev", near.b_dev, "root", "netem", "delay", delay)
            return target
        return self.relay(router, Endpoint(near.b_addr, port), target, one_way_s)

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces; raises NetnsError at the end if a
        namespace could not be deleted."""
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.terminate()
        for process in self.processes:
            try:
                process.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(timeout=5)
            if process.popen.stdout is not None:
                process.popen.stdout.close()
        self.processes.clear()
        failures = []
        for ns in reversed(self.namespaces):
            try:
                delete_namespace(ns.name)
            except NetnsError as exc:
                failures.append(str(exc))
        self.namespaces.clear()
        if failures:
            raise NetnsError("; ".join(failures))


_counter = iter(range(1, 1 << 30))


def _next_id() -> int:
    return next(_counter)
