"""`gpu-attest-verifier serve --workers N`: one supervisor, N worker processes (docs/design.md
§10).

The supervisor is the unit's main process and the only one that talks to systemd; it runs no
gRPC and opens no store. Each worker is the same program (`serve` with hidden worker options)
in a session of its own, so a terminal's Ctrl-C or a stray signal reaches the supervisor alone.
Workers share the ports (SO_REUSEPORT) and the store; they report to the supervisor over a
socketpair (verifier/workerproc.py).

- Start: worker 0 starts first and alone, so the CA, the server certificate, the receipt key
  and the store's migrations are created once; the others start when it serves. READY=1 goes to
  systemd when every worker has said READY=1. A worker that exits before it ever served ends
  `serve` with its exit status (exit 3 for a bad landmark.toml stays 3).
- Watchdog: WATCHDOG=1 goes to systemd only while every worker is alive and sent WATCHDOG=1
  within STALE_S; a worker sends it only while its store takes writes (verifier/storehealth.py).
- A worker that dies after it served (SIGKILL, a crash) is restarted at once with the same
  index while the others keep serving; more than MAX_RESTARTS deaths within RESTART_WINDOW_S
  end `serve` with exit 6, and systemd restarts the unit.
- A worker that exits 0 (it drained on a SIGTERM of its own) stops all the others too.
- SIGTERM/SIGINT: STOPPING=1, SIGTERM to every worker (each drains its streams and its commit
  batcher), SIGKILL to any still running after DRAIN_S; exit 0 when every worker exited 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import start_http_server

from attest.errors import ConfigError
from attest.hostport import require_loopback
from attest.sdnotify import Notifier
from verifier.config import VerifierConfig, listen_address
from verifier.exits import VerifierExit
from verifier.workermetrics import SupervisorMetrics
from verifier.workerproc import DUTY_WORKER, HEARTBEAT_S

log = logging.getLogger(__name__)

#: A worker that sent no WATCHDOG=1 for this long is not healthy (it sends one every second).
STALE_S = 5 * HEARTBEAT_S
#: Deaths of workers that end `serve`, within the window.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: Time the workers get to drain after SIGTERM; the unit's TimeoutStopSec is 30 s.
DRAIN_S = 25.0
TICK_S = 0.05
_CHILD_ENVIRONMENT_DROPPED = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS")

#: argv of worker `index` of `count` that reports on descriptor `fd`
WorkerArgv = Callable[[int, int, int], list[str]]


def worker_count(config: VerifierConfig, option: int | None) -> int:
    """`--workers N`, else the config's `workers`, where 0 is one per usable CPU core."""
    count = option if option is not None else config.workers
    return count or len(os.sched_getaffinity(0))


def check_ports_free(config: VerifierConfig, insecure_plaintext: bool) -> None:
    """Workers bind with SO_REUSEPORT, which would share a port with another verifier (same
    user) instead of failing; so the supervisor first binds each port plainly. Raise
    ConfigError naming the key when one is taken or is port 0 (not shareable)."""
    keys = ["listen"] if insecure_plaintext else ["listen", "enroll_listen"]
    for key in keys:
        value = getattr(config, key)
        address = listen_address(value)
        if address.port == 0:
            raise ConfigError(f"{key} = {value!r}: `serve --workers N` needs a fixed port")
        try:
            info = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0]
            with socket.create_server(info[4], family=info[0]):
                pass
        except OSError:
            raise ConfigError(
                f"{key} = {value!r}: cannot listen there (the port is in use, or the address "
                "is not one of this host's)"
            ) from None


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    ready: bool = False
    served: bool = False
    beat: float = 0.0
    metrics_port: int = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    """Runs `count` workers until signalled; `run` returns the exit status of `serve`."""

    count: int
    argv: WorkerArgv
    listen: str
    notifier: Notifier = field(default_factory=Notifier)
    clock: Callable[[], float] = time.monotonic
    workers: list[_Worker] = field(default_factory=list)
    deaths: collections.deque[float] = field(default_factory=collections.deque)
    metrics: SupervisorMetrics | None = None
    _announced: bool = False
    _fed: float = 0.0

    def ports(self) -> dict[int, int]:
        return {w.index: w.metrics_port for w in self.workers if w.metrics_port and w.alive()}

    def _spawn(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENVIRONMENT_DROPPED}
        try:
            # This very program with our own options, no shell: nothing untrusted in argv.
            worker.proc = subprocess.Popen(  # noqa: S603
                self.argv(worker.index, self.count, theirs.fileno()),
                env=env, pass_fds=(theirs.fileno(),), start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        if worker.sock is not None:
            worker.sock.close()
        worker.sock, worker.ready, worker.beat, worker.metrics_port = ours, False, 0.0, 0
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def _read(self, worker: _Worker) -> None:
        while worker.sock is not None:
            try:
                data = worker.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            for line in data.decode("utf-8", "replace").splitlines():
                self._message(worker, line)

    def _message(self, worker: _Worker, line: str) -> None:
        key, _, value = line.partition("=")
        if key == "READY":
            worker.ready = worker.served = True
            worker.beat = self.clock()
        elif key == "WATCHDOG":
            worker.beat = self.clock()
        elif key == "METRICS_PORT" and value.isdigit():
            worker.metrics_port = int(value)
        elif key == "STATUS" and self._announced:
            self.notifier.notify(f"STATUS=worker {worker.index}: {value}")

    def _reap(self, worker: _Worker) -> int | None:
        """Restart a worker that died after serving; an exit status for `serve` to end with."""
        assert worker.proc is not None
        status = worker.proc.poll()
        if status is None:
            return None
        how = f"signal {-status}" if status < 0 else f"status {status}"
        if status == 0:
            # It drained on a signal of its own: the whole unit is being stopped (systemd's
            # KillMode=control-group signals every process) or someone asked this one to stop;
            # either way the others follow rather than race a restart against the stop.
            log.warning("worker %d stopped on a signal: stopping all workers", worker.index)
            return VerifierExit.OK
        if not worker.served:
            log.error("worker %d exited with %s before it served", worker.index, how)
            return status if status > 0 else VerifierExit.WORKER
        now = self.clock()
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - RESTART_WINDOW_S:
            self.deaths.popleft()
        if len(self.deaths) > MAX_RESTARTS:
            log.error(
                "worker %d exited with %s: %d worker deaths within %.0f s, stopping",
                worker.index, how, len(self.deaths), RESTART_WINDOW_S,
            )  # fmt: skip
            return VerifierExit.WORKER
        log.error("worker %d exited with %s; restarting it", worker.index, how)
        if self.metrics is not None:
            self.metrics.worker_restarts.inc()
        self._spawn(worker)
        return None

    def _tick(self) -> int | None:
        for worker in self.workers:
            self._read(worker)
            if worker.proc is not None and (failed := self._reap(worker)) is not None:
                return failed
        self._start_rest()
        serving = [w for w in self.workers if w.ready and w.alive()]
        if self.metrics is not None:
            self.metrics.workers_serving.set(len(serving))
        if not self._announced and len(serving) == self.count:
            self._announced = True
            log.info("all %d workers serving", self.count)
            self.notifier.ready(f"{self.count} workers serving on {self.listen}")
        self._feed_watchdog()
        return None

    def _start_rest(self) -> None:
        """Worker 0 first: it creates the keys and migrates the store; then the others."""
        if self.workers[DUTY_WORKER].served:
            for worker in self.workers:
                if worker.proc is None:
                    self._spawn(worker)

    def _feed_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        now = self.clock()
        if interval is None or now - self._fed < interval:
            return
        if all(w.alive() and now - w.beat < STALE_S for w in self.workers):
            self.notifier.watchdog()
            self._fed = now

    async def run(self) -> int:
        self.workers = [_Worker(i) for i in range(self.count)]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self._spawn(self.workers[DUTY_WORKER])
        failed: int | None = None
        while not stop.is_set() and failed is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
            if not stop.is_set():
                failed = self._tick()
        log.info("shutting down: draining %d workers", self.count)
        self.notifier.stopping()
        drained = await self._drain()
        for worker in self.workers:
            if worker.sock is not None:
                worker.sock.close()
        return failed if failed is not None else drained

    async def _drain(self) -> int:
        running = [w.proc for w in self.workers if w.proc is not None and w.alive()]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = self.clock() + DRAIN_S
        # Polled: a child's exit sets no event (asyncio's child watchers need the loop's own
        # subprocess API, which cannot pass the socketpair's descriptor down).
        while any(p.poll() is None for p in running) and self.clock() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(TICK_S)
        statuses = []
        for proc in running:
            if proc.poll() is None:
                log.error("worker pid %d did not drain within %.0f s: killed", proc.pid, DRAIN_S)
                proc.kill()
            statuses.append(proc.wait())
        # Death by our SIGTERM: a worker still starting, before its handler was in place
        # (nothing was receipted by it, or its commit was durable before the receipt).
        bad = [s for s in statuses if s not in (0, -signal.SIGTERM)]
        if bad:
            log.error("workers exited with %s while draining", bad)
            return bad[0] if bad[0] > 0 else VerifierExit.WORKER
        log.info("stopped")
        return VerifierExit.OK


def run_supervisor(
    config: VerifierConfig,
    count: int,
    argv: WorkerArgv,
    *,
    insecure_plaintext: bool,
) -> int:
    """Check the ports, serve metrics, run the workers until signalled; the exit status."""
    if insecure_plaintext:  # before the ports: the same refusal as a single process's
        require_loopback(listen_address(config.listen), "--insecure-plaintext")
    check_ports_free(config, insecure_plaintext)
    supervisor = Supervisor(count, argv, config.listen)
    supervisor.metrics = SupervisorMetrics(supervisor.ports)
    server = None
    if config.metrics_listen:
        address = listen_address(config.metrics_listen)
        server, _thread = start_http_server(
            address.port, addr=address.host, registry=supervisor.metrics.registry
        )
    try:
        return asyncio.run(supervisor.run())
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def worker_argv(prefix: Sequence[str], insecure_plaintext: bool) -> WorkerArgv:
    """How the supervisor starts worker `index`: the same program and global options."""

    def argv(index: int, count: int, fd: int) -> list[str]:
        extra = ["--insecure-plaintext"] if insecure_plaintext else []
        return [
            *prefix, "serve", "--workers", str(count), "--worker-index", str(index),
            "--worker-notify-fd", str(fd), *extra,
        ]  # fmt: skip

    return argv
