"""A real `gpu-attest-verifier serve` whose SQLite store hits the file size limit (RLIMIT_FSIZE
set on the running process, what a full quota or disk does to writes): gRPC health must go
NOT_SERVING, one line must be logged, the store_up metric must drop and systemd's watchdog must
starve; and all of it must come back when the store takes writes again."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from attest.errors import StoreError, StoreUnavailableError
from tests.verifier.sim import REPO, VerifierProcess, enroll_sim_agents, free_port
from verifier.exits import VerifierExit
from verifier.metrics import Metrics
from verifier.storehealth import StoreHealth

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE_S = 60.0
WATCHDOG_USEC = 1_000_000  # WATCHDOG=1 every 0.5 s while healthy


class Collector:
    """Lines of a pipe, or datagrams of a socket, gathered by a thread as they come."""

    def __init__(self, read: Callable[[], bytes | None]) -> None:
        self.items: list[bytes] = []
        self._read = read
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._read()) is not None:
            self.items.append(item)

    def join(self) -> None:
        self._thread.join(10)

    def text(self) -> str:
        return b"".join(self.items).decode(errors="replace")


def _datagrams(sock: socket.socket) -> Callable[[], bytes | None]:
    def read() -> bytes | None:
        while True:
            try:
                return sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return None

    return read


async def _health(server: VerifierProcess) -> int:
    ca = (server.state_dir / "ca.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.enroll}", creds) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="attest.v1.Attestation"), timeout=10
        )
    return int(reply.status)


async def _wait_health(server: VerifierProcess, want: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while (status := await _health(server)) != want:
        assert time.monotonic() < deadline, f"health stayed {status}: {server.log_text()}"
        await asyncio.sleep(0.2)


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _start(server: VerifierProcess, metrics_port: int, notify: Path) -> Collector:
    path = server.workdir / "verifier.toml"
    path.write_text(
        f'listen = "127.0.0.1:{server.listen}"\nenroll_listen = "127.0.0.1:{server.enroll}"\n'
        f'state_dir = "{server.state_dir}"\ndatabase = "{server.database}"\n'
        f'metrics_listen = "127.0.0.1:{metrics_port}"\n'
        # One process: the file size limit is set on it (`--workers 2` is test_workers.py's).
        "workers = 1\n"
        "[stream]\nrate_per_s = 1000.0\nrate_burst = 1000\n"
    )
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    # The log goes to a pipe, not a file: the file size limit would swallow it too.
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "verifier.cli", "--config", str(path), "serve"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    stdout = server.proc.stdout
    assert stdout is not None
    return Collector(lambda: stdout.readline() or None)


def _limit_file_size(pid: int, limit: int) -> None:
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))


@pytest.mark.slow
async def test_a_failing_store_is_visible_and_starves_the_watchdog(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.2)
    datagrams = Collector(_datagrams(sock))
    server = VerifierProcess(tmp_path, str(tmp_path / "v.db"), tmp_path / "state")
    metrics_port = free_port()
    log = _start(server, metrics_port, notify)
    assert server.proc is not None
    try:
        await server.wait_ready()
        agent = (await enroll_sim_agents(server, "sqlite:///" + server.database, 1))[0]
        await agent.run([server.listen], 2)
        assert _metric(metrics_port, "gpu_attest_verifier_store_up") == 1.0

        _limit_file_size(server.proc.pid, 1)  # every write to a file now fails (EFBIG)
        await _wait_health(server, NOT_SERVING)
        assert _metric(metrics_port, "gpu_attest_verifier_store_up") == 0.0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent.session(server.listen, 3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await asyncio.sleep(6 * WATCHDOG_USEC / 2e6)  # six watchdog periods, none fed

        _limit_file_size(server.proc.pid, resource.RLIM_INFINITY)
        await _wait_health(server, SERVING)
        assert _metric(metrics_port, "gpu_attest_verifier_store_up") == 1.0
        await agent.run([server.listen], 3)
        deadline = time.monotonic() + DEADLINE_S
        while datagrams.items[-1:] != [b"WATCHDOG=1"]:  # fed again
            assert time.monotonic() < deadline, datagrams.items
            await asyncio.sleep(0.1)
        assert server.terminate() == VerifierExit.OK
    finally:
        if server.proc.poll() is None:
            server.kill()
        sock.close()
        log.join()
        if server.proc.stdout is not None:
            server.proc.stdout.close()
        datagrams.join()

    failing = datagrams.items.index(b"STATUS=store failing; health NOT_SERVING")
    recovered = datagrams.items.index(b"STATUS=serving", failing)
    assert b"WATCHDOG=1" in datagrams.items[:failing]
    assert b"WATCHDOG=1" not in datagrams.items[failing:recovered], datagrams.items
    text = log.text()
    assert text.count("store failing") == 1, text
    assert text.count("store recovered") == 1, text


async def test_one_items_refused_values_do_not_take_the_verifier_out_of_service() -> None:
    """The accept path isolates an envelope whose values the database refuses (a plain
    StoreError, its outcome alone) while the store takes everyone else's writes: that must not
    turn health NOT_SERVING, or one hostile agent could take the verifier out of service and
    starve its watchdog. Only a failing store (StoreUnavailableError) does."""
    published: list[bool] = []

    async def publish(up: bool) -> None:
        published.append(up)

    health = StoreHealth(Metrics(), publish)
    await health.failed(StoreError("the store could not record seq 7 (logged)"))
    assert (health.up, published) == (True, [])
    await health.failed(StoreUnavailableError("SQLite store unavailable: disk I/O error"))
    assert (health.up, published) == (False, [False])
