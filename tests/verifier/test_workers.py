"""`gpu-attest-verifier serve --workers 2`: real processes on loopback sharing one port and one
SQLite store (verifier/supervisor.py, docs/design.md §10)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from prometheus_client import CollectorRegistry, Counter

from attest import wire
from tests.verifier.helpers import Chain
from tests.verifier.rpc import Stream, check_receipt
from tests.verifier.sim import (
    REPO,
    SimAgent,
    VerifierProcess,
    enroll_sim_agents,
    free_port,
    mtls,
)
from tests.verifier.test_store_health import Collector, _datagrams
from verifier.config import StoreConfig, VerifierConfig
from verifier.exits import VerifierExit
from verifier.server import commit_interval_s
from verifier.store import open_store
from verifier.workermetrics import WorkersCollector
from verifier.workerproc import WorkerRole

AGENTS = 4
TOTAL = 24
DEADLINE_S = 60.0


def _issuers(db: Path) -> set[str]:
    """The replicas (host-pid) that issued agents' challenge nonces (the store probe's are
    bound to no agent)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT DISTINCT replica FROM nonces WHERE agent_no IS NOT NULL"
        ).fetchall()
    return {row[0] for row in rows}


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line and not line.startswith("#")
    }


async def _wait(condition: object, what: str, server: VerifierProcess) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, f"{what}: {server.log_text()}"
        await asyncio.sleep(0.1)


def _check_log(db: Path, agents: list[SimAgent]) -> None:
    """Every envelope an agent made is in the log exactly once, as it was sent."""
    store = open_store(f"sqlite:///{db}")
    try:
        assert store.log_size() == sum(len(a.chain.sent) for a in agents)
        for agent in agents:
            for seq, digest in agent.expected_hashes().items():
                stored = store.get_attestation(agent.enrolled.agent_id, seq)
                assert stored is not None and stored.envelope_hash == digest
    finally:
        store.close()


@pytest.mark.slow
async def test_two_workers_share_the_port_the_store_and_one_metrics_page(tmp_path: Path) -> None:
    db = tmp_path / "verifier.db"
    server = VerifierProcess(tmp_path, str(db), tmp_path / "state", workers=2, metrics=free_port())
    server.start()
    try:
        await server.wait_ready()
        await _wait(lambda: len(server.worker_pids()) == 2, "two workers", server)
        agents = await enroll_sim_agents(server, f"sqlite:///{db}", AGENTS)
        # A new connection every 3 envelopes: the kernel spreads connections over the workers.
        await asyncio.gather(*(a.run([server.listen], TOTAL, per_session=3) for a in agents))
        pids = server.worker_pids()
        assert {issuer.rsplit("-", 1)[1] for issuer in _issuers(db)} == {str(p) for p in pids}
        samples = _scrape(server.metrics)
        accepted = {
            worker: sum(
                value
                for name, value in samples.items()
                if name.startswith("gpu_attest_verifier_envelopes_accepted_total{")
                and f'worker="{worker}"' in name
            )
            for worker in ("0", "1")
        }
        assert all(accepted.values()), accepted  # both workers took streams
        assert sum(accepted.values()) == AGENTS * TOTAL
        assert samples["gpu_attest_verifier_workers_serving"] == 2.0
        assert server.terminate() == VerifierExit.OK
        assert not any(_alive(pid) for pid in pids)  # drained and gone with the supervisor
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    _check_log(db, agents)


def _ready(datagrams: list[bytes]) -> list[bytes]:
    return [item for item in datagrams if item.startswith(b"READY=1")]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
async def test_a_nonce_issued_by_one_worker_is_honoured_by_the_other(tmp_path: Path) -> None:
    db = tmp_path / "verifier.db"
    server = VerifierProcess(tmp_path, str(db), tmp_path / "state", workers=2)
    server.start()
    try:
        await server.wait_ready()
        await _wait(lambda: len(server.worker_pids()) == 2, "two workers", server)
        agent = (await enroll_sim_agents(server, f"sqlite:///{db}", 1))[0].enrolled
        chain = Chain(agent.agent_id, agent.signer)
        store = open_store(f"sqlite:///{db}")
        try:

            async def challenge_on_new_connection() -> tuple[bytes, str]:
                async with mtls(agent, server.listen) as channel:
                    nonce = (await Stream(channel).challenge()).nonce
                record = store.get_nonce(nonce)
                assert record is not None
                return nonce, record.replica

            nonce, issuer = await challenge_on_new_connection()
            raw = chain.next(nonce, datetime.now(UTC))
            for _attempt in range(100):  # the kernel picks the worker; ask until it is the other
                async with mtls(agent, server.listen) as channel:
                    stream = Stream(channel)
                    other = store.get_nonce((await stream.challenge()).nonce)
                    assert other is not None
                    if other.replica == issuer:
                        continue
                    await stream.send(raw)
                    message = await stream.recv()
                    assert message.WhichOneof("kind") == "receipt", message
                    check_receipt(agent, message.receipt, raw)
                    break
            else:
                pytest.fail("100 connections all landed on the worker that issued the nonce")
            record = store.get_nonce(nonce)
            assert record is not None and record.consumed_at is not None
            assert len(nonce) == wire.NONCE_LEN
        finally:
            store.close()
        assert server.terminate() == VerifierExit.OK
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


@pytest.mark.slow
async def test_a_sigkilled_worker_is_restarted_and_the_other_keeps_serving(
    tmp_path: Path,
) -> None:
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.2)
    datagrams = Collector(_datagrams(sock))
    db = tmp_path / "verifier.db"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000"}
    server = VerifierProcess(tmp_path, str(db), tmp_path / "state", workers=2, env=env)
    listen = f"127.0.0.1:{server.listen}".encode()
    server.start()
    try:
        await server.wait_ready()
        await _wait(lambda: _ready(datagrams.items), "READY=1", server)
        assert len(server.worker_pids()) == 2
        await _wait(lambda: b"WATCHDOG=1" in datagrams.items, "WATCHDOG=1", server)
        agents = await enroll_sim_agents(server, f"sqlite:///{db}", AGENTS)
        runs = [asyncio.create_task(a.run([server.listen], TOTAL, per_session=4)) for a in agents]
        while sum(len(a.receipted) for a in agents) < AGENTS * TOTAL // 3:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # poll: the agents' progress is the load to kill under
        victim = server.worker_pids()[-1]
        receipted_before = {a.enrolled.agent_id: dict(a.receipted) for a in agents}
        os.kill(victim, signal.SIGKILL)
        fed_at_kill = len(datagrams.items)
        await asyncio.gather(*runs)  # the other worker (and the restarted one) serve them all
        await _wait(
            lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
            "a new worker in place of the killed one", server,
        )  # fmt: skip
        assert server.proc is not None and server.proc.poll() is None
        await _wait(
            lambda: b"WATCHDOG=1" in datagrams.items[fed_at_kill:], "WATCHDOG=1 again", server
        )
        assert server.terminate() == VerifierExit.OK
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
        sock.close()
        datagrams.join()
    # The supervisor's alone, once both workers serve: workers tell only the supervisor.
    assert _ready(datagrams.items) == [b"READY=1\nSTATUS=2 workers serving on " + listen]
    assert b"STOPPING=1" in datagrams.items
    log = (tmp_path / f"verifier-{server.listen}.log").read_text()
    assert "exited with signal 9; restarting it" in log, log
    for agent in agents:
        expected = agent.expected_hashes()
        for seq, digest in receipted_before[agent.enrolled.agent_id].items():
            assert expected[seq] == digest
    _check_log(db, agents)


def _serve(tmp_path: Path, extra: str, *args: str, listen: int = 0) -> CompletedProcess[str]:
    """`serve` that is expected to stop by itself (a refusal at start)."""
    config = tmp_path / "verifier.toml"
    config.write_text(
        f'listen = "127.0.0.1:{listen or free_port()}"\n'
        f'enroll_listen = "127.0.0.1:{free_port()}"\n'
        f'state_dir = "{tmp_path / "state"}"\nmetrics_listen = ""\n{extra}'
    )
    argv = [sys.executable, "-m", "verifier.cli", "--config", str(config), "serve", *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def test_a_worker_that_cannot_start_ends_serve_with_its_exit_status(tmp_path: Path) -> None:
    done = _serve(tmp_path, f'landmark = "{tmp_path / "missing.toml"}"\n', "--workers", "2")
    assert done.returncode == VerifierExit.CONFIG, done.stderr
    assert "worker 0 exited with status 3 before it served" in done.stderr
    assert "worker 1 started" not in done.stderr  # the others wait for worker 0
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = _serve(tmp_path, "workers = 2\n", listen=port)
    assert done.returncode == VerifierExit.CONFIG, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"gpu-attest-verifier: configuration: listen = '127.0.0.1:{port}': cannot listen there "
        "(the port is in use, or the address is not one of this host's)"
    )
    assert "started" not in done.stderr


def test_the_metrics_page_labels_every_workers_samples_and_skips_a_silent_one() -> None:
    pages = {
        7001: '# TYPE x_up gauge\nx_up 1.0\n# TYPE x_seen counter\nx_seen_total{r="a"} 3.0\n',
        7002: "# TYPE x_up gauge\nx_up 0.0\n",
    }

    def fetch(port: int) -> str:
        if port not in pages:
            raise OSError("connection refused")
        return pages[port]

    registry = CollectorRegistry()
    failures = Counter("scrape_failures", "", registry=registry)
    collector = WorkersCollector(lambda: {0: 7001, 1: 7002, 2: 7003}, failures, fetch)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in collector.collect()
        for s in family.samples
    }
    assert samples == {
        ("x_up", (("worker", "0"),)): 1.0,
        ("x_up", (("worker", "1"),)): 0.0,
        ("x_seen_total", (("r", "a"), ("worker", "0"))): 3.0,
    }
    assert registry.get_sample_value("scrape_failures_total") == 1.0  # worker 2, left out


def test_workers_share_the_commit_interval() -> None:
    """The interval is the verifier's: each of N workers waits N times it, so a fleet's calm
    pace puts as many envelopes in a commit (and as few WAL pages per envelope) as one process."""
    config = VerifierConfig(store=StoreConfig(commit_interval_ms=100))
    assert commit_interval_s(config, None) == pytest.approx(0.1)
    for count in (1, 2, 16):
        role = WorkerRole(index=count - 1, count=count, notify_fd=-1)
        assert commit_interval_s(config, role) == pytest.approx(0.1 * count)
    still = VerifierConfig(store=StoreConfig(commit_interval_ms=0))
    assert commit_interval_s(still, WorkerRole(index=0, count=4, notify_fd=-1)) == 0
